"""The plugin's hooks (`plugin.py`), each seen from a real pytest run in a subprocess: every
setting is an option and an ini key in the help, the marker's layers (module, class,
function, call: the closest wins), keyword fields only, a test that fails after measuring is
failed in the report, collect-only writes no run, and the fixture skips when asked for
without --llem. (The rest of the plugin's runs: tests/e2e/test_plugin.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import reports

from pytest_llem.settings import SETTINGS


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def test_every_setting_is_an_option_naming_its_ini_key_and_an_ini_key_naming_its_option(
    pytester: pytest.Pytester,
):
    result = run(pytester, "--help")
    assert result.ret == 0
    text = re.sub(r"\s+", " ", result.stdout.str())  # help text wraps anywhere
    for setting in SETTINGS:
        assert setting.option in text, setting.option
        assert f"ini: {setting.ini_name}" in text, setting.name
        assert f"{setting.ini_name} (" in text and f"(like {setting.option})" in text, setting.ini_name
    assert "--llem " in text and "ini: llem" in text


LAYERED = """
import pytest

pytestmark = pytest.mark.llem(batch_size=2, max_new_tokens=8, energy="none")

def report_config(ctx):
    ctx.record(output_tokens=1, batch_size=ctx.config.batch_size, max_new=ctx.config.max_new_tokens,
               seed=ctx.config.seed)

@pytest.mark.llem(batch_size=3)
class TestLayers:
    @pytest.mark.llem(seed=7)
    def test_closest_wins(self, llem):
        result = llem.run(report_config, max_new_tokens=9)
        print("CONFIG", result.extra["batch_size"], result.extra["max_new"], result.extra["seed"])

def test_fails_after_measuring(llem):
    llem.run(report_config)
    assert False, "the result was not good enough"
"""


def test_marker_layers_merge_closest_last_and_a_test_failing_after_measuring_is_failed(
    pytester: pytest.Pytester, tmp_path: Path
):
    pytester.makepyfile(test_layers=LAYERED)
    state_dir = tmp_path / "state"
    result = run(pytester, "--llem", f"--llem-state-dir={state_dir}", "-s", "--llem-preload=none")
    result.assert_outcomes(passed=1, failed=1)
    # Module, class, function marker, then the call: each field from the closest that sets it.
    result.stdout.fnmatch_lines(["CONFIG 3 9 7"])
    (report,) = reports(state_dir)
    status = {e["nodeid"]: (e["test_failed"], e["result"] is not None) for e in report["experiments"]}
    assert status == {
        "test_layers.py::TestLayers::test_closest_wins": (False, True),
        "test_layers.py::test_fails_after_measuring": (True, True),  # measured, and still failed
    }
    assert report["outcome"] == "failed" and result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_positional_marker_argument_is_a_one_line_usage_error(pytester: pytest.Pytester, tmp_path: Path):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.llem("tiny-gpt2")
        def test_positional(llem):
            pass
        """
    )
    result = run(pytester, "--llem", f"--llem-state-dir={tmp_path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: pytest-llem: test_a_positional_marker_argument_is_a_one_line_usage_error.py::"
            "test_positional: @pytest.mark.llem: "
            "@pytest.mark.llem takes keyword fields only, got ('tiny-gpt2',)"
        ]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_collecting_only_writes_no_run(pytester: pytest.Pytester, tmp_path: Path):
    pytester.makepyfile(test_layers=LAYERED)
    state_dir = tmp_path / "state"
    result = run(pytester, "--llem", f"--llem-state-dir={state_dir}", "--collect-only", "-q")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["test_layers.py::TestLayers::test_closest_wins", "*2 tests collected*"])
    assert reports(state_dir) == []  # nothing measured: nothing that could become a baseline
    assert "pytest-llem" not in result.stdout.str()


def test_the_fixture_asked_for_at_run_time_without_llem_skips_with_the_reason(pytester: pytest.Pytester):
    # Not a fixture argument: collection cannot see it, the fixture itself must skip.
    pytester.makepyfile(
        """
        def test_dynamic(request):
            request.getfixturevalue("llem")
            raise AssertionError("the fixture did not skip")
        """
    )
    result = run(pytester, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*LLM energy benchmark: run with --llem*"])


FREEZE_PROBE = """
import atexit, gc, os

# Registered before the plugin's own handler, so it runs after it, as the interpreter's
# last collection would.
atexit.register(lambda: open(os.environ["FREEZE_PROBE"], "w").write(str(gc.get_freeze_count())))
"""


@pytest.mark.parametrize("enabled", [True, False], ids=["llem", "without"])
def test_a_llem_session_leaves_its_objects_out_of_the_last_collection_at_exit(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, enabled: bool
):
    probe = tmp_path / "frozen.txt"
    monkeypatch.setenv("FREEZE_PROBE", str(probe))
    pytester.makeconftest(FREEZE_PROBE)
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    args = ["--llem", f"--llem-state-dir={tmp_path / 'state'}"] if enabled else []
    assert run(pytester, *args).ret == 0
    frozen = int(probe.read_text())
    assert frozen > 10_000 if enabled else frozen == 0
