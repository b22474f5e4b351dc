"""The plugin from the outside: real pytest runs in a subprocess through `pytester`."""

from __future__ import annotations

import html
import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import SIMULATED_RUN, reports, start_llem_pytest

from pytest_llem.store.database import close_stores
from pytest_llem.store.state import StateManager

SUITE = """
import os, sys
import pytest

def generate(ctx):
    import heavy_fake_torch  # heavy imports belong inside the workload: only the child sees them
    with ctx.window():
        n = 4 * ctx.config.batch_size
    ctx.record(output_tokens=n, input_tokens=2, seen_model=ctx.config.model, parent_has_it=False)

@pytest.mark.llem(model="tiny", max_new_tokens=32)
@pytest.mark.parametrize("batch_size", [1, 4])
def test_tiny(llem, batch_size):
    result = llem.run(generate, batch_size=batch_size)
    assert result.output_tokens == 4 * batch_size
    assert result.extra["seen_model"] == "tiny"
    assert "heavy_fake_torch" not in sys.modules

def test_plain():
    assert True
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_suite=SUITE, heavy_fake_torch="LOADED = True\n")
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # The suite's windows last microseconds and measure nothing: the plugin's plumbing is under
    # test here, not the figures, so neither their length nor this machine's load flags them.
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *SIMULATED_RUN, *args)


def test_without_llem_benchmarks_skip_with_a_reason_and_the_rest_runs(suite: pytest.Pytester):
    result = run(suite, "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*LLM energy benchmark: run with --llem*"])
    assert "pytest-llem: report written" not in result.stdout.str()


def test_with_llem_runs_each_case_and_reports_it(suite: pytest.Pytester, tmp_path: Path):
    state_dir = tmp_path / "state"
    result = run(suite, "--llem", f"--llem-state-dir={state_dir}", "--strict-markers")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*= pytest-llem =*",
            "test*n*duration_s*tokens/s*status",
            "test_suite.py::test_tiny[[]1[]]*passed",
            "test_suite.py::test_tiny[[]4[]]*passed",
            f"pytest-llem: report written to {state_dir}/runs/*/report.json",
        ]
    )
    (report,) = reports(state_dir)
    assert report["outcome"] == "passed" and report["exit_code"] == 0
    assert [e["nodeid"] for e in report["experiments"]] == [
        "test_suite.py::test_tiny[1]",
        "test_suite.py::test_tiny[4]",
    ]
    for entry, batch_size in zip(report["experiments"], (1, 4), strict=True):
        assert entry["config"]["batch_size"] == batch_size and entry["config"]["max_new_tokens"] == 32
        assert entry["phase"] == "done" and entry["result"]["output_tokens"] == 4 * batch_size
        assert entry["config_hash"] == entry["result"]["config_hash"]


def test_a_bad_marker_field_stops_collection_with_one_line(pytester: pytest.Pytester, tmp_path: Path):
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.llem(batch_sise=4)
        def test_typo(llem):
            pass
        """
    )
    result = run(pytester, "--llem", f"--llem-state-dir={tmp_path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: pytest-llem: test_a_bad_marker_field_stops_collection_with_one_line.py::test_typo: "
            "@pytest.mark.llem: unknown field 'batch_sise' (allowed: model, backend, batch_size, *)"
        ]
    )
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


MARKED_SUITE_WITH_A_PROBE = {
    "conftest": """
        import sys

        def pytest_terminal_summary(terminalreporter):
            terminalreporter.write_line(f"pydantic loaded: {'pydantic' in sys.modules}")
        """,
    "test_marked": """
        import pytest

        @pytest.mark.llem(model="tiny", rounds=0)  # broken: found only when benchmarks run
        @pytest.mark.parametrize("batch_size", [1, 2])
        def test_generate(llem, batch_size):
            pass
        """,
}


def test_without_llem_marked_cases_are_skipped_without_loading_pydantic(pytester: pytest.Pytester, tmp_path):
    pytester.makeconftest(MARKED_SUITE_WITH_A_PROBE["conftest"])
    pytester.makepyfile(test_marked=MARKED_SUITE_WITH_A_PROBE["test_marked"])
    result = run(pytester)
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["pydantic loaded: False"])
    # With --llem the same markers are validated at collection, and the broken one is found.
    result = run(pytester, "--llem", f"--llem-state-dir={tmp_path}", "--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: pytest-llem: test_marked.py::test_generate[[]1[]]: "
            "@pytest.mark.llem: rounds: must be at least 1 (got 0)"
        ]
    )


def test_a_bad_field_in_run_fails_only_that_test(pytester: pytest.Pytester, tmp_path: Path):
    pytester.makepyfile(
        """
        def work(ctx):
            ctx.record(output_tokens=1)

        def test_bad(llem):
            llem.run(work, batch_size=0)

        def test_good(llem):
            assert llem.run(work).output_tokens == 1
        """
    )
    result = run(pytester, "--llem", f"--llem-state-dir={tmp_path}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*pytest-llem: batch_size: Input should be greater than or equal to 1 (got 0)*"]
    )
    assert "Traceback" not in result.stdout.str()


def test_call_fields_override_marker_fields(pytester: pytest.Pytester, tmp_path: Path):
    pytester.makepyfile(
        """
        import pytest
        pytestmark = pytest.mark.llem(model="module-level", batch_size=2)

        def work(ctx):
            ctx.record(output_tokens=1, model=ctx.config.model, bs=ctx.config.batch_size)

        @pytest.mark.llem(model="function-level")
        def test_layers(llem):
            result = llem.run(work, batch_size=7)
            assert (result.extra["model"], result.extra["bs"]) == ("function-level", 7)
        """
    )
    run(pytester, "--llem", f"--llem-state-dir={tmp_path}").assert_outcomes(passed=1)


def test_a_lambda_workload_fails_with_a_clear_message(pytester: pytest.Pytester, tmp_path: Path):
    pytester.makepyfile("def test_lambda(llem):\n    llem.run(lambda ctx: None)\n")
    result = run(pytester, "--llem", f"--llem-state-dir={tmp_path}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*pytest-llem: workload is a lambda; the isolated child imports workloads by name*"]
    )


def test_a_crash_fails_its_test_and_the_session_goes_on(pytester: pytest.Pytester, tmp_path: Path):
    pytester.makepyfile(
        """
        import os
        def crash(ctx):
            os._exit(3)
        def work(ctx):
            ctx.record(output_tokens=2)
        def test_crash(llem):
            llem.run(crash)
        def test_next(llem):
            llem.run(work)
        """
    )
    result = run(pytester, "--llem", f"--llem-state-dir={tmp_path}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*pytest-llem: child exited with code 3 before reporting a result*"])


@pytest.mark.parametrize(
    ("cli", "env", "ini", "expected"),
    [
        ("cli", "env", "ini", "cli"),
        (None, "env", "ini", "env"),
        (None, None, "ini", "ini"),
    ],
)
def test_state_dir_precedence_is_cli_then_env_then_ini(
    suite: pytest.Pytester, tmp_path: Path, monkeypatch, cli, env, ini, expected
):
    suite.makeini(f"[pytest]\nllem = true\nllem_state_dir = {tmp_path / 'ini'}\n")
    if env:
        monkeypatch.setenv("PYTEST_LLEM_STATE_DIR", str(tmp_path / "env"))
    args = [f"--llem-state-dir={tmp_path / 'cli'}"] if cli else []
    run(suite, *args).assert_outcomes(passed=3)  # ini `llem = true` enables it without --llem
    assert [p.name for p in tmp_path.iterdir() if (p / "runs").is_dir()] == [expected]


def test_default_state_dir_is_the_platform_user_state_dir(
    suite: pytest.Pytester, tmp_path: Path, monkeypatch
):
    monkeypatch.delenv("PYTEST_LLEM_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    result = run(suite, "--llem")
    result.assert_outcomes(passed=3)
    assert len(reports(tmp_path / "xdg" / "pytest-llem")) == 1


def test_timeout_from_ini_and_a_bad_one_is_a_usage_error(pytester: pytest.Pytester, tmp_path: Path):
    pytester.makepyfile(
        """
        import time
        def slow(ctx):
            time.sleep(30)
        def test_slow(llem):
            llem.run(slow)
        """
    )
    pytester.makeini("[pytest]\nllem_timeout = 1\n")
    result = run(pytester, "--llem", f"--llem-state-dir={tmp_path}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*pytest-llem: timed out after 1 s; its process group was killed*"])
    bad = run(pytester, "--llem", "--llem-timeout=soon", f"--llem-state-dir={tmp_path}")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["ERROR: pytest-llem: --llem-timeout: expected a number of seconds, got 'soon'"])


def test_marker_timeout_overrides_the_option(pytester: pytest.Pytester, tmp_path: Path):
    pytester.makepyfile(
        """
        import pytest, time
        def slow(ctx):
            time.sleep(2)
            ctx.record(output_tokens=1)
        @pytest.mark.llem(timeout=20)
        def test_slow(llem):
            llem.run(slow)
        """
    )
    run(pytester, "--llem", "--llem-timeout=0.5", f"--llem-state-dir={tmp_path}").assert_outcomes(passed=1)


def test_llem_json_copies_the_report_and_resume_reuses_results(suite: pytest.Pytester, tmp_path: Path):
    state_dir = tmp_path / "state"
    run(suite, "--llem", f"--llem-state-dir={state_dir}").assert_outcomes(passed=3)
    copy = tmp_path / "out" / "llem.json"
    result = run(suite, "--llem", "--llem-resume", f"--llem-state-dir={state_dir}", f"--llem-json={copy}")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        ["test_suite.py::test_tiny[[]1[]]*resumed", "test_suite.py::test_tiny[[]4[]]*resumed"]
    )
    first, second = reports(state_dir)
    assert json.loads(copy.read_text()) == second
    assert all(e["resumed"] and e["result"]["resumed"] for e in second["experiments"])
    assert [e["experiment_id"] for e in second["experiments"]] == [
        e["experiment_id"] for e in first["experiments"]
    ]


def test_metrics_reach_junit_xml_as_properties(suite: pytest.Pytester, tmp_path: Path):
    xml = tmp_path / "junit.xml"
    run(suite, "--llem", f"--llem-state-dir={tmp_path / 'state'}", f"--junitxml={xml}").assert_outcomes(
        passed=3
    )
    text = xml.read_text()
    assert 'name="llem_tokens_per_s"' in text and 'name="llem_duration_s"' in text
    # The figure the tables print and the gate compares (the median of the samples), not
    # the pooled one.
    import xml.etree.ElementTree as ElementTree

    from pytest_llem.gating.metrics import METRICS
    from pytest_llem.gating.stats import gated_figure
    from pytest_llem.results import ExperimentResult

    shown = [
        float(prop.get("value"))
        for case in ElementTree.parse(xml).getroot().iter("testcase")
        for prop in case.iter("property")
        if prop.get("name") == "llem_tokens_per_s"
    ]
    results = [
        ExperimentResult.model_validate(e["result"]) for e in reports(tmp_path / "state")[0]["experiments"]
    ]
    expected = sorted(gated_figure(r, METRICS["tokens_per_s"]) for r in results)
    assert len(shown) == 2 and sorted(shown) == pytest.approx(expected)


def test_stale_states_from_a_dead_session_are_marked_failed_at_start(suite: pytest.Pytester, tmp_path: Path):
    from pytest_llem.store.experiments import ExperimentPhase
    from pytest_llem.store.state import StateManager

    state_dir = tmp_path / "state"
    states = StateManager(state_dir)
    orphan = states.create("orphan", "0" * 16)
    orphan.phase, orphan.owner_pid, orphan.owner_start_time = ExperimentPhase.MEASURING, os.getpid(), 1.0
    states.save(orphan)
    result = run(suite, "--llem", f"--llem-state-dir={state_dir}")
    result.stdout.fnmatch_lines(
        ["pytest-llem: marked 1 stale experiment(s) from an earlier session as failed"]
    )
    assert reports(state_dir)[0]["stale_experiments"] == ["orphan"]
    assert states.load("orphan").failed


def test_the_demo_suite_runs_under_llem(tmp_path: Path):
    """`make demo` runs this suite; keep it green from the outside too."""
    examples = Path(__file__).parents[2] / "examples" / "cpu_ngram"
    proc = start_llem_pytest(tmp_path, tmp_path, str(examples))
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert "6 passed" in output
    (report,) = reports(tmp_path)
    assert [e["result"]["output_tokens"] for e in report["experiments"]] == [
        100 * bs * n for bs in (1, 8, 32) for n in (64, 256)
    ]


def test_the_workload_comes_from_the_test_file_even_when_its_name_is_shadowed(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch
):
    """Under --import-mode=importlib a same-named module earlier on sys.path must not win."""
    shadow = pytester.mkdir("shadow")
    shadow.joinpath("suite").mkdir()
    shadow.joinpath("suite", "__init__.py").write_text("")
    shadow.joinpath("suite", "bench.py").write_text(
        "def work(ctx):\n    ctx.record(output_tokens=1, where='shadow')\n"
    )
    # pytest names the test module suite.bench; the shadow comes first, before the code under test.
    paths = [str(shadow), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    pytester.mkdir("suite").joinpath("bench.py").write_text(
        "def work(ctx):\n    ctx.record(output_tokens=1, where='suite')\n"
        "def test_where(llem):\n    assert llem.run(work).extra['where'] == 'suite'\n"
    )
    result = run(
        pytester,
        "--llem",
        f"--llem-state-dir={tmp_path}",
        "--import-mode=importlib",
        "-o",
        "python_files=bench.py",
        "suite/bench.py",
    )
    result.assert_outcomes(passed=1)


def test_a_workload_exception_fails_its_test_with_the_users_traceback_once(
    pytester: pytest.Pytester, tmp_path: Path
):
    pytester.makepyfile(
        test_raises="""
        def broken(ctx):
            raise KeyError("missing prompt file")

        def test_broken(llem):
            llem.run(broken)
        """
    )
    result = run(pytester, "--llem", f"--llem-state-dir={tmp_path}")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*pytest-llem: workload raised KeyError: 'missing prompt file'",
            "Traceback (most recent call last):",
            '  File "*test_raises.py", line 2, in broken',
        ]
    )
    # The failure section only: with CI set, pytest repeats the whole message in its short summary.
    failure_section = output.split("= FAILURES =")[1].split("= pytest-llem =")[0]
    assert failure_section.count("Traceback (most recent call last)") == 1
    assert "During handling" not in failure_section and "pytest_llem" not in failure_section


def test_xdist_workers_report_into_one_run(suite: pytest.Pytester, tmp_path: Path):
    pytest.importorskip("xdist")
    state_dir = tmp_path / "state"
    # --dist=each runs every test on both workers, so both surely run experiments.
    result = run(suite, "--llem", f"--llem-state-dir={state_dir}", "-n", "2", "--dist=each")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(
        [
            "test_suite.py::test_tiny[[]*[]]*passed",
            "pytest-llem: experiments ran on 2 xdist workers at once; they shared this machine*",
            f"pytest-llem: report written to {state_dir}/runs/*/report.json",
        ]
    )
    (run_dir,) = (state_dir / "runs").iterdir()
    assert sorted(p.name for p in run_dir.iterdir()) == ["report-gw0.json", "report-gw1.json", "report.json"]
    merged = json.loads((run_dir / "report.json").read_text())
    assert merged["outcome"] == "passed"
    assert sorted((e["worker_id"], e["nodeid"]) for e in merged["experiments"]) == [
        (worker, f"test_suite.py::test_tiny[{bs}]") for worker in ("gw0", "gw1") for bs in (1, 4)
    ]
    assert all(e["result"]["output_tokens"] > 0 for e in merged["experiments"])


def test_an_unusable_state_dir_is_one_usage_error_line(suite: pytest.Pytester, tmp_path: Path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    result = run(suite, "--llem", f"--llem-state-dir={blocker / 'state'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-llem: cannot use state dir {blocker / 'state'}: *; "
            "choose another with --llem-state-dir*"
        ]
    )
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_an_unwritable_json_copy_is_reported_and_the_report_is_kept(suite: pytest.Pytester, tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    state_dir = tmp_path / "state"
    result = run(suite, "--llem", f"--llem-state-dir={state_dir}", f"--llem-json={blocker / 'copy.json'}")
    result.assert_outcomes(passed=3)
    assert result.ret == 0
    result.stdout.fnmatch_lines([f"pytest-llem: could not write --llem-json {blocker / 'copy.json'}: *"])
    assert len(reports(state_dir)[0]["experiments"]) == 2


def test_a_token_in_a_workload_exception_reaches_no_terminal_line_junit_or_file(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    secrets = {"OPENAI_KEY": 'sk-"quoted\\secret', "SSH_PRIVATE_KEY": "ssh1", "DATABASE_DSN": "pg://u:pw@h"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    pytester.makepyfile(
        test_leak="""
        import os

        def leaky(ctx):
            names = ("OPENAI_KEY", "SSH_PRIVATE_KEY", "DATABASE_DSN")
            raise RuntimeError(" ".join(os.environ[n] for n in names))

        def test_leaky(llem):
            llem.run(leaky)
        """
    )
    state_dir = tmp_path / "state"
    junit = tmp_path / "junit.xml"
    result = run(
        pytester,
        "--llem",
        f"--llem-state-dir={state_dir}",
        "--llem-redact-env=DATABASE_DSN",
        f"--junitxml={junit}",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*pytest-llem: workload raised RuntimeError: *** *** ***"])
    outputs = [result.stdout.str(), junit.read_text()] + [p.read_text() for p in state_dir.rglob("*.json")]
    for value in secrets.values():
        for form in (value, json.dumps(value)[1:-1], html.escape(value)):
            assert all(form not in text for text in outputs), form


@pytest.mark.parametrize("capture", ["--capture=fd", "-s"])
def test_what_a_workload_prints_is_redacted_on_the_terminal_and_in_every_file(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capture: str
):
    secrets = {"HF_TOKEN": "hf_printed9secret", "DATABASE_DSN": "pg://user:pw9x@db"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    pytester.makepyfile(
        test_chatty="""
        import os, sys

        def chatty(ctx):
            token, dsn = os.environ["HF_TOKEN"], os.environ["DATABASE_DSN"]
            print("loading with", token, "from", dsn, flush=True)
            print("warning: token", token, file=sys.stderr, flush=True)
            os.write(1, f"raw fd write {token}\\n".encode())
            raise RuntimeError(f"login failed for {token} at {dsn}")

        def test_chatty(llem):
            llem.run(chatty)
        """
    )
    state_dir, junit, page = tmp_path / "state", tmp_path / "junit.xml", tmp_path / "report.html"
    result = run(
        pytester,
        capture,
        "--llem",
        f"--llem-state-dir={state_dir}",
        "--llem-redact-env=DATABASE_DSN",
        f"--junitxml={junit}",
        "-o",
        "junit_logging=all",
        f"--llem-html={page}",
    )
    result.assert_outcomes(failed=1)
    terminal = result.stdout.str() + result.stderr.str()
    outputs = {"terminal": terminal, "junit": junit.read_text(), "html": page.read_text()}
    outputs |= {str(p): p.read_text(errors="replace") for p in state_dir.rglob("*") if p.is_file()}
    for value in secrets.values():
        for form in (value, json.dumps(value)[1:-1], html.escape(value)):
            leaks = [where for where, text in outputs.items() if form in text]
            assert not leaks, f"{form!r} in {leaks}"
    # The workload's lines still reach the user, with the secrets blanked out.
    assert "loading with *** from ***" in terminal and "raw fd write ***" in terminal
    assert "warning: token ***" in terminal


def test_foreign_files_in_the_state_dir_are_named_once_and_never_stop_a_session(
    suite: pytest.Pytester, tmp_path: Path
):
    state_dir = tmp_path / "state"
    assert run(suite, "--llem", f"--llem-state-dir={state_dir}").ret == 0  # a baseline run
    # The state dir as an earlier release (JSON files, no store) left it, with foreign files:
    # they are met when it is imported, on first use.
    for store_file in state_dir.glob("llem.sqlite3*"):
        store_file.unlink()
    close_stores()
    experiments = state_dir / "experiments"
    experiments.mkdir()
    (experiments / "escape.json").symlink_to(tmp_path / "outside.json")
    (tmp_path / "outside.json").write_text("{}")
    os.mkfifo(experiments / "pipe.json")
    newest = state_dir / "runs" / "99991231T000000Z-ffffff" / "report.json"
    newest.parent.mkdir()
    newest.write_text('{"run_id": ')
    result = run(suite, "--llem", f"--llem-state-dir={state_dir}", "--llem-compare")
    result.assert_outcomes(passed=3)
    output = result.stdout.str()
    assert "INTERNALERROR" not in output
    for line in [
        "pytest-llem: skipped experiments/escape.json in the state dir: unreadable: a symbolic link*",
        "pytest-llem: skipped experiments/pipe.json in the state dir: unreadable: not a regular file*",
        "pytest-llem: skipped runs/99991231T000000Z-ffffff/report.json in the state dir: not a*",
        "pytest-llem: the newest saved run(s) cannot be read, so the comparison uses run *",
    ]:
        result.stdout.fnmatch_lines([line])
    assert output.count("escape.json") == 1


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MiB tmpfs (needs root and a kernel that lets this process mount)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; tests/store/test_atomic.py covers the logic")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_disk_that_fills_mid_session_keeps_the_result_and_ends_in_one_line(
    tmp_path: Path, small_disk: Path
):
    (tmp_path / "test_fill.py").write_text(
        "from workloads import count_tokens, fill_disk\n"
        "def test_first(llem):\n    llem.run(count_tokens)\n"
        "def test_fills_the_disk(llem):\n"
        f"    llem.run(fill_disk, params={{'path': {str(small_disk / 'filler')!r}}})\n"
        "def test_never_reached(llem):\n    llem.run(count_tokens)\n"
    )
    state_dir = small_disk / "state"
    json_copy = tmp_path / "copy.json"  # on another disk
    proc = start_llem_pytest(tmp_path, state_dir, "test_fill.py", f"--llem-json={json_copy}")
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output
    assert "Traceback" not in output and "INTERNALERROR" not in output
    full_lines = [line for line in output.splitlines() if "is full (No space left on device)" in line]
    assert len(full_lines) == 1, output
    states = {s.experiment_id.split("-")[0]: s for s in StateManager(state_dir).all_states()}
    assert states["test_fills_the_disk"].phase.value == "done"
    assert not states["test_fills_the_disk"].failed
    assert "test_never_reached" not in states
    copy = json.loads(json_copy.read_text())
    assert copy["outcome"] == "failed"
    assert [e["result"]["output_tokens"] for e in copy["experiments"]] == [8, 8]


def test_a_disk_already_full_at_the_start_ends_in_one_line_with_exit_1(tmp_path: Path, small_disk: Path):
    """As a disk that fills mid-session (docs/reference/exit-codes.md): exit 1, not 4 (no usage error)."""
    with (small_disk / "filler").open("wb") as filler:
        with pytest.raises(OSError):  # until no space is left
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
    (tmp_path / "test_full.py").write_text(
        "from workloads import count_tokens\ndef test_first(llem):\n    llem.run(count_tokens)\n"
    )
    proc = start_llem_pytest(tmp_path, small_disk / "state", "test_full.py")
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output
    assert "Traceback" not in output and "INTERNALERROR" not in output
    (full_line,) = [line for line in output.splitlines() if "is full" in line]
    assert full_line.startswith(f"pytest-llem: the disk of the state dir {small_disk / 'state'} is full")
    assert "check the URL" not in output  # the disk is what to fix


LEARNING_SUITE = """
import sys
import pytest

def generate(ctx):
    seen_before = "installed_inside" in sys.modules
    import installed_inside  # inside the workload, as pytest's own process should stay light
    with ctx.window():
        pass
    ctx.record(output_tokens=installed_inside.TOKENS, seen_before=seen_before)

@pytest.mark.parametrize("case", [1, 2])
def test_case(llem, case):
    result = llem.run(generate)
    assert result.output_tokens == 3
"""


def test_under_auto_the_second_case_starts_with_what_the_first_imported_inside_its_workload(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    site = tmp_path / "site-packages"  # where an installer would have put it
    site.mkdir()
    (site / "installed_inside.py").write_text("TOKENS = 3\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    pytester.makepyfile(test_learning=LEARNING_SUITE)
    copy = tmp_path / "copy.json"
    result = run(pytester, "--llem", f"--llem-state-dir={tmp_path / 'state'}", f"--llem-json={copy}")
    result.assert_outcomes(passed=2)
    first, second = (e["result"] for e in json.loads(copy.read_text())["experiments"])
    assert first["start_method"] == second["start_method"] == "preloaded"
    assert "installed_inside" not in first["preloaded_modules"]
    assert "installed_inside" in second["preloaded_modules"]
    assert (first["extra"]["seen_before"], second["extra"]["seen_before"]) == (False, True)
    assert not any("test_learning" in m for m in second["preloaded_modules"])
