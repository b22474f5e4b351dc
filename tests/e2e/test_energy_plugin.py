"""Energy through the whole plugin: `pytest --llem` in a real process, GPUs simulated.

The simulated `pynvml` comes first on PYTHONPATH, so the pytest process (idle baseline) and
the isolated child (measurement) both load it instead of the real library, through exactly
the code paths a real GPU takes.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path

import pytest
from fake_nvml import FAKE_NVML_DIR, load_fake_nvml
from helpers import SUPPORT_DIR, reports

from pytest_llem.gating.stats import SIGNIFICANCE_LEVEL

IDLE_W, BUSY_W = 60.0, 300.0
#: The simulated counter advances every 100 ms, as a real one: a window's energy is right to one step.
COUNTER_STEP_S = 0.1

SUITE = """
import time
import pynvml
import pytest

def generate(ctx):
    pynvml.log_power(BUSY_W)          # the model starts working: the simulated GPUs draw more
    with ctx.window():
        time.sleep(0.6)
    ctx.record(output_tokens=60)

@pytest.mark.llem(gpus=[1])
def test_on_second_gpu(llem):
    llem.run(generate)

def test_without_a_meter(llem):
    result = llem.run(generate, energy="none")
    assert result.energy_j is None
""".replace("BUSY_W", repr(BUSY_W))


@pytest.fixture
def simulated_gpus(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Two simulated GPUs idling at IDLE_W (or drawing `start_w`) until a workload logs more power."""

    def configure(driver_loaded: bool = True, start_w: float = IDLE_W, ideal: bool = False, **overrides):
        fake = load_fake_nvml()
        scenario = tmp_path / "scenario.json"
        gpus = [
            fake.FakeGpu(
                uuid=f"GPU-{i:04d}-sim",
                power_profile=[[0.0, start_w]],
                power_log=str(tmp_path / "power.log"),
                **overrides,
            )
            for i in range(2)
        ]
        fake.write_scenario(str(scenario), gpus, driver_loaded=driver_loaded, ideal=ideal)
        monkeypatch.setenv("FAKE_NVML_SCENARIO", str(scenario))
        monkeypatch.setenv(
            "PYTHONPATH",
            os.pathsep.join([str(FAKE_NVML_DIR), str(SUPPORT_DIR), os.environ.get("PYTHONPATH", "")]),
        )
        pytester.makepyfile(test_energy_suite=SUITE)

    return configure


def run(pytester: pytest.Pytester, state_dir: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--llem",
        f"--llem-state-dir={state_dir}",
        "--llem-sample-interval=0.02",
        # The flags checked are the simulated GPUs', whatever else runs on this machine.
        "--llem-host-busy-share=1",
        *args,
    )


def test_nvml_energy_baseline_and_flags_reach_the_report(pytester, simulated_gpus, tmp_path):
    simulated_gpus()
    state_dir = tmp_path / "state"
    result = run(pytester, state_dir, "--llem-energy=nvml", "--llem-baseline=1")
    result.assert_outcomes(passed=2)
    (report,) = reports(state_dir)
    measured = report["experiments"][0]["result"]
    duration_s = measured["duration_s"]

    # CUDA_VISIBLE_DEVICES=1 was resolved to the second GPU by its UUID.
    (device,) = measured["energy_by_device"]
    assert (device["device"], device["uuid"], device["energy_source"]) == (
        "gpu1",
        "GPU-0001-sim",
        "nvml-counter",
    )
    assert measured["energy_scope"] == ["gpu"] and measured["energy_source"] == "nvml-counter"
    # Right to one step of the counter (the window's edges fall anywhere between its updates).
    one_step_j = BUSY_W * COUNTER_STEP_S
    assert (
        measured["gpu_energy_j"] == measured["energy_j"] == pytest.approx(BUSY_W * duration_s, abs=one_step_j)
    )
    assert measured["cpu_energy_j"] is None
    # A 1 s baseline, right to one step of idle power over 1 s.
    assert measured["baseline_power_w"] == pytest.approx(IDLE_W, abs=IDLE_W * COUNTER_STEP_S / 1.0 + 0.5)
    adjusted_j = measured["energy_j"] - measured["baseline_power_w"] * duration_s
    assert measured["energy_adjusted_j"] == pytest.approx(adjusted_j)
    assert measured["energy_adjusted_j"] == pytest.approx((BUSY_W - IDLE_W) * duration_s, abs=2 * one_step_j)
    assert measured["energy_per_token_j"] == pytest.approx(measured["energy_j"] / 60)
    # Sampled power is NVML's 1 s average: the work began just before the window, so it rises
    # from about idle towards BUSY_W and stays below it (the counter has the energy).
    powers = [point["power_w"] for point in device["timeline"]]
    assert device["power_samples"] >= 10 and powers == sorted(powers)
    assert powers[0] < IDLE_W + (BUSY_W - IDLE_W) * 0.3 and powers[-1] < BUSY_W
    # A 0.6 s window is too short to trust: flagged, with the code in the report and the summary.
    assert [w["code"] for w in measured["warnings"]] == ["short_window"]
    result.stdout.fnmatch_lines(
        [
            "test_energy_suite.py::test_on_second_gpu*passed !",
            "energy_j covers: gpu (nvml-counter) in 1 experiment(s)",
            "no energy meter was selected (energy='none'); time and tokens only [[]1 experiment(s)[]]",
            # The case without a meter too: its 0.6 s is under the CPU's minimum window.
            "! = measurement-quality flags: short_window (2); see `warnings` in the report",
        ]
    )


SLOW_IMPORT = """
import time
import pynvml

time.sleep(3.0)                  # a heavy import (torch, model files): the GPUs are busy meanwhile
pynvml.log_power(IDLE_W)         # done: from now on they are at rest
""".replace("IDLE_W", repr(IDLE_W))


def test_the_idle_baseline_waits_for_the_preloaded_interpreters_imports(pytester, simulated_gpus, tmp_path):
    # The GPUs draw BUSY_W from the start, while the preloaded interpreter imports `slow_import`
    # (started at the end of collection), and IDLE_W once that import is done.
    simulated_gpus(start_w=BUSY_W)
    pytester.makepyfile(slow_import=SLOW_IMPORT)
    state_dir = tmp_path / "state"
    result = run(
        pytester, state_dir, "--llem-energy=nvml", "--llem-baseline=1", "--llem-preload=slow_import",
        "-k", "second",
    )  # fmt: skip
    result.assert_outcomes(passed=1, deselected=1)
    (report,) = reports(state_dir)
    measured = report["experiments"][0]["result"]
    assert measured["start_method"] == "preloaded"
    (device,) = measured["energy_by_device"]
    # Measured at rest, not while the import kept the GPU busy (BUSY_W: adjusted energy 0 J).
    # (Right to one counter step over the 1 s baseline, and over the window.)
    assert device["baseline_power_w"] == pytest.approx(IDLE_W, abs=IDLE_W * COUNTER_STEP_S / 1.0 + 0.5)
    assert measured["energy_adjusted_j"] == pytest.approx(
        (BUSY_W - IDLE_W) * device["duration_s"], abs=2 * BUSY_W * COUNTER_STEP_S
    )
    # The result says when, and after what.
    assert device["baseline_conditions"] == (
        "before the experiment's child started, 1 s after the preloaded interpreter had finished its "
        "imports and model reads"
    )
    taken = datetime.fromisoformat(device["baseline_measured_at"])
    assert taken <= datetime.fromisoformat(measured["started_at"])


def test_without_a_gpu_the_nvml_meter_fails_that_test_in_one_line(pytester, simulated_gpus, tmp_path):
    simulated_gpus(driver_loaded=False)
    result = run(pytester, tmp_path / "state", "--llem-energy=nvml", "--llem-baseline=0")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*pytest-llem: NVML could not start: Driver Not Loaded (no NVIDIA driver or GPU here?)"]
    )
    assert "Traceback" not in result.stdout.str()


def test_auto_without_readable_devices_says_why_energy_is_missing(pytester, simulated_gpus, tmp_path):
    simulated_gpus(driver_loaded=False)
    state_dir = tmp_path / "state"
    result = run(pytester, state_dir)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["energy not measured: gpu: not measured (NVML could not start*"])
    (report,) = reports(state_dir)
    measured = report["experiments"][0]["result"]
    assert measured["energy_j"] is None and measured["energy_by_device"] == []
    assert any(note.startswith("gpu: not measured") for note in measured["energy_notes"])


def test_a_meter_can_be_chosen_in_ini_and_bad_names_are_one_line_errors(pytester, simulated_gpus, tmp_path):
    simulated_gpus()
    pytester.makeini("[pytest]\nllem_energy = nvlm\n")
    result = run(pytester, tmp_path / "state")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*pytest-llem: ini llem_energy: unknown energy meter; choose one of auto, nvml, rapl, *, got 'nvlm'"]
    )
    pytester.makepyfile(test_energy_suite=SUITE.replace("gpus=[1]", "gpus=[1], energy='nvlm'"))
    result = run(pytester, tmp_path / "state", "--llem-energy=none")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*test_on_second_gpu: @pytest.mark.llem: energy: unknown energy meter; choose one of *(got 'nvlm')"]
    )


def test_a_missing_library_names_the_extra_to_install(pytester, simulated_gpus, tmp_path):
    simulated_gpus()
    pytester.makepyfile(zeus="raise ImportError('zeus is not installed here')\n")
    result = run(pytester, tmp_path / "state", "--llem-energy=zeus", "-k", "second")
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        ["*pytest-llem: energy='zeus' needs the 'zeus' extra (*): reinstall pytest-llem with it*"]
    )


def test_report_json_has_no_machine_paths(pytester, simulated_gpus, tmp_path):
    simulated_gpus()
    state_dir = tmp_path / "state"
    run(pytester, state_dir, "--llem-energy=nvml", "--llem-baseline=0")
    text = json.dumps(reports(state_dir))
    assert str(tmp_path) not in text and os.path.expanduser("~") not in text


GATED_SUITE = """
import os, time
import pynvml
import pytest

def generate(ctx):
    for _ in ctx.rounds():
        pynvml.log_power(float(os.environ["SIM_BUSY_W"]))   # what "the change" changes
        with ctx.window():
            started = time.perf_counter()
            time.sleep(0.25)
            elapsed_s = time.perf_counter() - started
        # 200 tokens per second of window, however long the sleep really took on a loaded
        # machine: energy per token is then power / 200 (1.5 J at 300 W), not a timing draw.
        ctx.record(output_tokens=max(1, round(200 * elapsed_s)))
        pynvml.log_power(IDLE_W)

@pytest.mark.llem(gpus=[0], budget={"energy_per_token_j": 3.0})
def test_generate(llem):
    llem.run(generate)
""".replace("IDLE_W", repr(IDLE_W))


def test_save_a_baseline_then_fail_on_a_real_regression_and_pass_on_noise(
    pytester, simulated_gpus, tmp_path, monkeypatch
):
    # What is under test is the gate, on 0.25 s rounds: with a counter that steps every 100 ms
    # each round would read 2 or 3 steps (+-40%), which hides any 20% change. The ideal counter
    # stands in for rounds long enough to measure (seconds each on a real GPU).
    simulated_gpus(ideal=True)
    pytester.makepyfile(test_energy_suite=GATED_SUITE)
    state_dir = tmp_path / "state"
    common = ("--llem-energy=nvml", "--llem-baseline=0", "--llem-rounds=5", "--llem-gate-flagged")
    gate = ("--llem-compare", "--llem-compare-fail=energy_per_token_j:5%")

    monkeypatch.setenv("SIM_BUSY_W", "300")
    saved = run(pytester, state_dir, *common, "--llem-save=main")
    saved.assert_outcomes(passed=1)
    assert saved.ret == 0

    monkeypatch.setenv("SIM_BUSY_W", "360")  # 20% more power for the same tokens and time
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    regressed = run(pytester, state_dir, *common, *gate, f"--llem-markdown={tmp_path / 'r.md'}")
    regressed.assert_outcomes(passed=1)  # every test passed; the comparison fails the session
    assert regressed.ret == 1
    regressed.stdout.re_match_lines(
        [r"compared with main:", r"pytest-llem: REGRESSION test_energy_suite.py::test_generate .*"]
    )
    line = next(x for x in regressed.outlines if x.startswith("pytest-llem: REGRESSION"))
    # What the code controls: the metric, the direction, the size (20% more power for the same
    # tokens per second), the limit, and a p-value below the significance level. The exact p
    # depends on how the rounds happen to rank, so it is not asserted.
    found = re.fullmatch(
        r"pytest-llem: REGRESSION test_energy_suite\.py::test_generate energy_per_token_j "
        r"(\d\.\d+) -> (\d\.\d+) J \(\+(\d+\.\d)%, limit 5%, p=([\d.e-]+)\)",
        line,
    )
    assert found, line
    before, after, percent, p_value = (float(x) for x in found.groups())
    assert before == pytest.approx(1.5, rel=0.05) and after == pytest.approx(1.8, rel=0.05)
    assert 15 < percent < 25 and p_value <= SIGNIFICANCE_LEVEL
    assert "Traceback" not in regressed.stdout.str()
    assert "pytest-llem: REGRESSION" in summary.read_text() and "| test |" in (tmp_path / "r.md").read_text()

    monkeypatch.setenv("SIM_BUSY_W", "300")  # back to the baseline: only timing noise remains
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    noise = run(
        pytester, state_dir, *common, "--llem-compare=main", "--llem-compare-fail=energy_per_token_j:5%"
    )
    assert noise.ret == 0
    assert "REGRESSION" not in noise.stdout.str()
    report = reports(state_dir)[-1]  # run ids start with their UTC time: the last is this run
    assert len(report["experiments"][0]["result"]["rounds"]) == 5


def test_flagged_results_are_not_gated_by_default_and_budgets_fail_cleanly(
    pytester, simulated_gpus, tmp_path, monkeypatch
):
    simulated_gpus(ideal=True)  # the gate under test, on 0.25 s rounds (see the test above)
    pytester.makepyfile(test_energy_suite=GATED_SUITE)
    state_dir = tmp_path / "state"
    common = ("--llem-energy=nvml", "--llem-baseline=0", "--llem-rounds=3")
    monkeypatch.setenv("SIM_BUSY_W", "300")
    run(pytester, state_dir, *common, "--llem-save=main")
    monkeypatch.setenv("SIM_BUSY_W", "400")
    # Windows of 0.25 s carry the short_window flag: shown, not gated.
    flagged = run(
        pytester, state_dir, *common, "--llem-compare=main", "--llem-compare-fail=energy_per_token_j:5%"
    )
    assert flagged.ret == 0
    flagged.stdout.fnmatch_lines(
        ["*energy_per_token_j*flagged (beyond the limit, but a measurement-quality flag*"]
    )
    monkeypatch.setenv("SIM_BUSY_W", "700")  # 700 W / 200 tokens/s = 3.5 J/token: over the 3.0 budget
    over = run(pytester, state_dir, *common, "--llem-gate-flagged")
    assert over.ret == 1
    over.stdout.fnmatch_lines(
        [
            "pytest-llem: OVER BUDGET test_energy_suite.py::test_generate energy_per_token_j 3.5* J "
            "(budget 3.00 J)"
        ]
    )


def test_comparing_with_an_unknown_run_is_a_usage_error(pytester, simulated_gpus, tmp_path):
    simulated_gpus()
    result = run(pytester, tmp_path / "state", "--llem-compare=nope", "--llem-energy=none")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pytest-llem: --llem-compare: no saved run named 'nope'*"])
