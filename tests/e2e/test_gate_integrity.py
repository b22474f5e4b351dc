"""A gate that compares nothing must fail: the two ways it used to pass, run end to end.

Throughput is set by the test (`SIM_TOKENS_PER_S`): the workload reports tokens in
proportion to its window's length, so a 4x slowdown is 4x whatever the machine's load.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SIMULATED_RUN, reports, run_llem_pytest

SUITE = """
import os, time
import pytest

def steady(ctx):
    rate = float(os.environ["SIM_TOKENS_PER_S"])
    with ctx.window():
        started = time.perf_counter()
        time.sleep(0.2)
        elapsed = time.perf_counter() - started
    ctx.record(output_tokens=max(1, round(rate * elapsed)))

@pytest.mark.parametrize("batch_size", [1, 2])
def test_case(llem, batch_size):
    llem.run(steady, batch_size=batch_size, energy="none")
"""

GATE = ("--llem-compare", "--llem-compare-fail=tokens_per_s:30%")


def pytest_in(cwd: Path, tokens_per_s: int, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`pytest --llem ARGS` started in `cwd`, as a user would type it there."""
    return run_llem_pytest(
        cwd,
        None,
        "--llem-baseline=0",
        *SIMULATED_RUN,
        *args,
        merge_stderr=False,
        SIM_TOKENS_PER_S=str(tokens_per_s),
        **env,
    )


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    folder = tmp_path / "mysuite"
    folder.mkdir()
    (folder / "test_x.py").write_text(SUITE)
    return folder


def regression_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("pytest-llem: REGRESSION")]


def test_collect_only_writes_no_run_and_a_gate_without_a_baseline_fails(suite: Path, tmp_path: Path):
    state = f"--llem-state-dir={tmp_path / 'state'}"
    collected = pytest_in(suite, 400, state, "--co")
    assert collected.returncode == 0, collected.stdout
    assert reports(tmp_path / "state") == []

    markdown, html = tmp_path / "summary.md", tmp_path / "report.html"
    gated = pytest_in(suite, 100, state, *GATE, f"--llem-markdown={markdown}", f"--llem-html={html}")
    assert gated.returncode == 1, gated.stdout
    line = "pytest-llem: GATE FAILED: limits were set but there is no baseline to compare with"
    assert line in gated.stdout
    assert "Traceback" not in gated.stdout + gated.stderr
    # The reports people read in CI say why the run failed, as the terminal does.
    assert line in markdown.read_text()
    assert f"<pre class='failures' id='gate-failed'>{line}" in html.read_text()


def test_a_collect_only_session_never_becomes_the_baseline(suite: Path, tmp_path: Path):
    state = f"--llem-state-dir={tmp_path / 'state'}"
    baseline = pytest_in(suite, 400, state, "--llem-save=main")
    assert baseline.returncode == 0, baseline.stdout
    assert pytest_in(suite, 400, state, "--co").returncode == 0
    assert [r["name"] for r in reports(tmp_path / "state")] == ["main"]

    slower = pytest_in(suite, 100, state, *GATE)  # 4x slower
    assert slower.returncode == 1, slower.stdout
    assert "compared with main:" in slower.stdout
    assert "new (no baseline)" not in slower.stdout
    assert len(regression_lines(slower.stdout)) == 2


def test_a_usage_error_writes_no_run(suite: Path, tmp_path: Path):
    (suite / "test_typo.py").write_text(
        "import pytest\n\n@pytest.mark.llem(batchsize=4)\ndef test_typo(llem):\n    pass\n"
    )
    result = pytest_in(suite, 400, f"--llem-state-dir={tmp_path / 'state'}")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert reports(tmp_path / "state") == []


def test_a_moved_rootdir_still_matches_the_baselines_cases(suite: Path, tmp_path: Path):
    baseline = pytest_in(suite, 400, "--llem-state-dir=../state")
    assert baseline.returncode == 0, baseline.stdout
    assert "test_x.py::test_case[1]" in baseline.stdout

    # The space form makes pytest count ../state among its path arguments when it picks the
    # rootdir: node ids become mysuite/test_x.py::... in this run.
    moved = pytest_in(suite, 100, "--llem-state-dir", "../state", *GATE)
    assert "mysuite/test_x.py::test_case[1]" in moved.stdout
    assert moved.returncode == 1, moved.stdout
    assert "new (no baseline)" not in moved.stdout
    assert "missing from this run" not in moved.stdout
    assert len(regression_lines(moved.stdout)) == 2
    keys = [e["case_key"] for e in reports(tmp_path / "state")[-1]["experiments"]]
    assert keys == ["test_x.py::test_case[1]", "test_x.py::test_case[2]"]


def test_a_gate_whose_cases_match_none_of_the_baselines_fails(suite: Path, tmp_path: Path):
    state = f"--llem-state-dir={tmp_path / 'state'}"
    assert pytest_in(suite, 400, state, "test_x.py::test_case[1]").returncode == 0
    other = pytest_in(suite, 400, state, "test_x.py::test_case[2]", *GATE)
    assert other.returncode == 1, other.stdout
    assert "new (no baseline): test_x.py::test_case[2]" in other.stdout
    assert "missing from this run: test_x.py::test_case[1]" in other.stdout
    assert "pytest-llem: GATE FAILED: none of this run's 1 measured case(s) is in baseline" in other.stdout


def test_a_baseline_case_missing_from_a_gated_run_is_reported(suite: Path, tmp_path: Path):
    state = f"--llem-state-dir={tmp_path / 'state'}"
    assert pytest_in(suite, 400, state).returncode == 0
    fewer = pytest_in(suite, 400, state, "test_x.py::test_case[1]", *GATE)
    assert fewer.returncode == 0, fewer.stdout
    assert (
        "pytest-llem: 1 baseline case(s) were not measured in this run and were not gated: "
        "test_x.py::test_case[2]" in fewer.stdout
    )


WORK_SUITE = SUITE.replace(
    '@pytest.mark.parametrize("batch_size", [1, 2])',
    '@pytest.mark.llem(prompts="prompts.txt", max_new_tokens=int(os.environ.get("SIM_MAX_NEW", "32")))\n'
    '@pytest.mark.parametrize("batch_size", [1, 2])',
)


def test_cases_that_did_different_work_are_incomparable_and_gate_nothing(suite: Path, tmp_path: Path):
    (suite / "test_x.py").write_text(WORK_SUITE)
    (suite / "prompts.txt").write_text("first prompt\nsecond prompt\n")
    state = f"--llem-state-dir={tmp_path / 'state'}"
    assert pytest_in(suite, 400, state, "--llem-save=main").returncode == 0

    (suite / "prompts.txt").write_text("first prompt\nanother prompt\n")
    other_prompts = pytest_in(
        suite, 400, state, "--llem-compare=main", "--llem-compare-fail=tokens_per_s:30%"
    )
    assert other_prompts.returncode == 1, other_prompts.stdout
    assert "incomparable (prompt set changed" in other_prompts.stdout
    assert "pytest-llem: GATE FAILED: every case in common with baseline main did different work" in (
        other_prompts.stdout
    )

    (suite / "prompts.txt").write_text("first prompt\nsecond prompt\n")
    longer = pytest_in(
        suite, 100, state, "--llem-compare=main", "--llem-compare-fail=tokens_per_s:30%", SIM_MAX_NEW="64"
    )
    # 4x slower, but it generated twice the tokens per prompt: not a regression, not ok either.
    assert longer.returncode == 1, longer.stdout
    assert "REGRESSION" not in longer.stdout
    assert "incomparable (max_new_tokens 32 -> 64)" in longer.stdout


def test_a_baseline_from_gpus_with_another_power_limit_refuses_to_gate(suite: Path, tmp_path: Path):
    from fake_nvml import FAKE_NVML_DIR, load_fake_nvml

    fake = load_fake_nvml()
    scenario = tmp_path / "scenario.json"
    simulated = {"PYTHONPATH": os.pathsep.join([str(FAKE_NVML_DIR), os.environ.get("PYTHONPATH", "")])}
    simulated["FAKE_NVML_SCENARIO"] = str(scenario)
    state = f"--llem-state-dir={tmp_path / 'state'}"

    def run_on(power_limit_w: float, *args: str) -> subprocess.CompletedProcess[str]:
        fake.write_scenario(str(scenario), [fake.FakeGpu(uuid="GPU-0", power_limit_w=power_limit_w)])
        return pytest_in(suite, 400, state, *args, **simulated)

    assert run_on(700.0, "--llem-save=main").returncode == 0
    gate = ("--llem-compare=main", "--llem-compare-fail=tokens_per_s:30%")
    refused = run_on(500.0, *gate)
    assert refused.returncode == 1, refused.stdout
    assert "differs from the baseline: hardware: GPU power limits (W) 700 -> 500" in refused.stdout
    assert (
        "pytest-llem: GATE FAILED: the baseline ran on different hardware (GPU power limits (W) 700 -> 500)"
        in refused.stdout
    )
    across = run_on(500.0, *gate, "--llem-compare-across-machines")
    assert across.returncode == 0, across.stdout
    assert "GATE FAILED" not in across.stdout and "incomparable" not in across.stdout


def test_an_energy_gate_where_no_meter_measured_fails_in_the_session_and_in_compare(
    suite: Path, tmp_path: Path
):
    # The suite's meter is `none`: no energy on either side, as on a machine nothing can read.
    state = tmp_path / "state"
    assert pytest_in(suite, 400, f"--llem-state-dir={state}", "--llem-save=main").returncode == 0
    energy_gate = ("--llem-compare=main", "--llem-compare-fail=energy_per_token_j:5%")
    gated = pytest_in(suite, 400, f"--llem-state-dir={state}", "--llem-save=now", *energy_gate)
    expected = (
        "pytest-llem: GATE FAILED: energy_per_token_j was not measured in this run or the baseline "
        "(no energy meter was selected (energy='none'); time and tokens only), so its limits gated nothing: "
        "test_x.py::test_case[1] (5%), test_x.py::test_case[2] (5%)"
    )
    assert gated.returncode == 1, gated.stdout
    (line,) = [line for line in gated.stdout.splitlines() if "GATE FAILED" in line]
    assert line.startswith(expected), line

    compared = subprocess.run(
        [sys.executable, "-m", "pytest_llem.cli", "--state-dir", str(state),
         "compare", "main", "now", "--fail", "energy_per_token_j:5%"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert compared.returncode == 1, compared.stdout + compared.stderr
    (line,) = [line for line in compared.stdout.splitlines() if "GATE FAILED" in line]
    assert line.startswith(expected), line


def test_a_limit_without_a_unit_is_one_usage_error_line_naming_where_it_came_from(
    suite: Path, tmp_path: Path
):
    state = f"--llem-state-dir={tmp_path / 'state'}"
    bare = pytest_in(suite, 400, state, "--llem-compare", "--llem-compare-fail=tokens_per_s:10")
    assert bare.returncode == pytest.ExitCode.USAGE_ERROR
    assert bare.stderr.strip() == (
        "ERROR: pytest-llem: --llem-compare-fail tokens_per_s:10: a limit needs a unit: write "
        "tokens_per_s:10% (relative) or tokens_per_s:10tokens/s (absolute, in the metric's unit)"
    )
    (suite / "pytest.ini").write_text("[pytest]\nllem_compare_fail = energy_per_token_j:0.5\n")
    from_ini = pytest_in(suite, 400, state)
    assert from_ini.returncode == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: pytest-llem: ini llem_compare_fail energy_per_token_j:0.5: a limit needs a unit" in (
        from_ini.stderr
    )
    (suite / "pytest.ini").unlink()
    (suite / "test_x.py").write_text(
        SUITE.replace("def test_case", '@pytest.mark.llem(compare_fail={"tokens_per_s": 10})\ndef test_case')
    )
    marker = pytest_in(suite, 400, state)
    assert marker.returncode == pytest.ExitCode.USAGE_ERROR
    assert (
        "ERROR: pytest-llem: test_x.py::test_case[1]: @pytest.mark.llem: "
        "compare_fail {'tokens_per_s': '10'}: a limit needs a unit: write {'tokens_per_s': '10%'} "
        "(relative) or {'tokens_per_s': '10tokens/s'}"
    ) in marker.stderr
    assert "Traceback" not in bare.stderr + from_ini.stderr + marker.stderr


def test_a_failed_gate_has_the_last_line_and_each_output_written_has_its_own(suite: Path, tmp_path: Path):
    state = f"--llem-state-dir={tmp_path / 'state'}"
    baseline = pytest_in(suite, 400, state, "--llem-save=main")
    assert baseline.returncode == 0, baseline.stdout
    assert "pytest-llem: run saved as main (compare with it: --llem-compare=main)" in baseline.stdout
    assert "gate failed" not in baseline.stdout

    slower = pytest_in(
        suite, 100, state, "--llem-compare=main", "--llem-compare-fail=tokens_per_s:100tokens/s",
        "--llem-html=out/report.html", "-q",
    )  # fmt: skip
    assert slower.returncode == 1, slower.stdout
    lines = slower.stdout.strip().splitlines()
    assert lines[-1] == "pytest-llem: gate failed: 2 regressions (each named above)", slower.stdout
    assert re.fullmatch(r"2 passed in .*", lines[-2]), slower.stdout
    assert "pytest-llem: HTML report written to out/report.html" in lines
    assert (suite / "out" / "report.html").is_file()
    # Each regression line shows the limit with its unit.
    regressions = regression_lines(slower.stdout)
    assert len(regressions) == 2 and all(line.endswith(", limit 100 tokens/s)") for line in regressions)
