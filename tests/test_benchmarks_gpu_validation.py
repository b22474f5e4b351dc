"""`benchmarks/gpu_validation.py` where no GPU can run it: what it prints and how it exits.

NVML is simulated (tests/support/fake_nvml, first on the script's PYTHONPATH), so the paths
are the same on every machine: no driver at all, and a GPU that torch cannot use.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fake_nvml import FAKE_NVML_DIR, load_fake_nvml

from pytest_llem.testing import visible_gpu_count

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_validation.py"
HEADER = ("date:", "commit:", "GPU:", "driver:", "torch:", "software:")
CUDA_PARTS = "abdef"


def run_script(tmp_path: Path, gpus: list, driver_loaded: bool, *args: str) -> subprocess.CompletedProcess:
    scenario = tmp_path / "scenario.json"
    load_fake_nvml().write_scenario(str(scenario), gpus, driver_loaded=driver_loaded)
    env = dict(
        os.environ,
        FAKE_NVML_SCENARIO=str(scenario),
        PYTHONPATH=os.pathsep.join([str(FAKE_NVML_DIR), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )


def test_without_an_nvidia_driver_it_prints_the_header_and_one_line_and_exits_2(tmp_path: Path):
    done = run_script(tmp_path, [], driver_loaded=False)
    lines = done.stdout.splitlines()
    assert done.returncode == 2, done.stdout + done.stderr
    assert [line.split()[0] for line in lines[:-1]] == list(HEADER)
    assert lines[-1].startswith("no NVIDIA GPU: nothing to validate (NVML could not start: Driver Not Loaded")
    assert done.stderr == ""


@pytest.mark.skipif(visible_gpu_count()[0] > 0, reason="a real GPU here: torch could use CUDA")
def test_with_a_gpu_torch_cannot_use_the_cuda_parts_are_skipped_and_the_sampler_measured(tmp_path: Path):
    fake = load_fake_nvml()
    done = run_script(tmp_path, [fake.FakeGpu(uuid="GPU-0000-sim")], True, "--quick")
    lines = done.stdout.splitlines()
    assert "GPU:          Simulated GPU (GPU 0 of 1)" in lines[2], done.stdout
    assert lines[3].startswith("driver:       000.00-simulated"), done.stdout
    outcomes = {line[1]: line[4:] for line in lines if re.match(r"\([a-f]\) (PASS|FAIL|SKIPPED)", line)}
    assert sorted(outcomes) == list("abcdef"), done.stdout
    for part in CUDA_PARTS:
        assert outcomes[part].startswith("SKIPPED: torch"), done.stdout
    # The sampler's cost needs NVML only: it ran, read the counter and power in one call a pass,
    # and its outcome alone decides the exit status.
    calls = next(line for line in lines if "nvml calls per pass" in line)
    assert re.search(r"nvmlDeviceGetFieldValues (0\.9\d|1\.0\d)", calls), calls
    sampler_passed = outcomes["c"] == "PASS"
    assert (
        sampler_passed or outcomes["c"].startswith("FAIL: sampler") or outcomes["c"].startswith("FAIL: edges")
    )
    assert done.returncode == (0 if sampler_passed else 1), done.stdout + done.stderr
    assert lines[-1].startswith(f"{int(sampler_passed)} passed, {int(not sampler_passed)} failed, 5 skipped")
