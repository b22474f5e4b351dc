"""A sleep-bound suite on four simulated GPUs, with `-n 4` against `-n 1`, side by side in one run.

    python benchmarks/gpu_leases.py [--cases 8] [--sleep-s 10]

Each case leases one GPU (the default) and sleeps in its measured window, as a GPU-bound
experiment waits on its card. With four xdist workers, four cases hold four different GPUs
at once, so the suite should take close to a quarter of the time; what is left is the fixed
cost of the session and of each experiment (each xdist worker's own interpreter and its
imports, the child group, state and report; the preloaded interpreter, which the workers
share, starts once), which is CPU-bound: on a machine with fewer free cores than workers it
does not overlap, and the speed-up falls short of 4x. "most at once" shows whether the
leases let four run together; "CPU s" is what the run's processes took (what two busy
cores must share), steadier than the wall time on a machine others use too. Cases of 10 s
by default: with shorter ones the fixed cost is more of the run, and the speed-up lower.
GPUs are simulated by tests/support/fake_nvml, first on the PYTHONPATH of every process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llem_runs import pytest_llem_command

ROOT = Path(__file__).resolve().parents[1]
FAKE_NVML_DIR = ROOT / "tests" / "support" / "fake_nvml"
GPUS = 4

SUITE = """
import time
import pytest

def sleep_on_the_gpu(ctx):
    with ctx.window():
        time.sleep({sleep_s})
    ctx.record(output_tokens=1)

@pytest.mark.parametrize("case", range({cases}))
def test_case(llem, case):
    llem.run(sleep_on_the_gpu)
"""


def write_scenario(path: Path) -> None:
    sys.path.insert(0, str(FAKE_NVML_DIR.parent))
    from fake_nvml import load_fake_nvml

    fake = load_fake_nvml()
    fake.write_scenario(str(path), [fake.FakeGpu(uuid=f"GPU-{i:04d}-bench") for i in range(GPUS)])


def most_at_once(report: dict) -> int:
    """The most measured windows open at the same moment (the lease table's parallelism)."""
    edges = []
    for entry in report["experiments"]:
        edges += [(entry["result"]["started_at"], 1), (entry["result"]["finished_at"], -1)]
    running = peak = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        running += step
        peak = max(peak, running)
    return peak


def suite_env(folder: Path) -> dict[str, str]:
    env = dict(
        os.environ,
        FAKE_NVML_SCENARIO=str(folder / "scenario.json"),
        PYTHONPATH=os.pathsep.join([str(FAKE_NVML_DIR), os.environ.get("PYTHONPATH", "")]),
    )
    env.pop("CUDA_VISIBLE_DEVICES", None)
    # Python's default: bytecode cached. Where the environment turns caching off, every xdist
    # worker compiles pytest-llem's modules again at its start (and pytest rewrites them),
    # which a pip-installed pytest-llem, compiled at install, never does.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def warm_up(folder: Path) -> None:
    """Collect the suite once in an xdist worker, untimed: the bytecode caches are then
    written before either timed run, so neither pays for compiling."""
    command = pytest_llem_command(
        folder / "state-warm-up", "--collect-only", "-n", "1", "test_bench_suite.py"
    )
    subprocess.run(command, cwd=folder, env=suite_env(folder), capture_output=True, check=True)


def run_suite(folder: Path, workers: int) -> tuple[float, float, list[str], int]:
    """Wall time of the suite with `workers` xdist workers, the CPU time its processes took
    (user and system, every process pytest and its children reaped), the GPUs each case held,
    and how many ran at once at most."""
    state_dir = folder / f"state-n{workers}"
    env = suite_env(folder)
    command = pytest_llem_command(
        state_dir,
        "--llem-energy=nvml",
        "--llem-baseline=0",
        "-n",
        str(workers),
        "test_bench_suite.py",
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if done.returncode != 0:
        raise SystemExit(f"the suite failed with -n {workers}:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    (report_file,) = state_dir.glob("runs/*/report.json")
    report = json.loads(report_file.read_text())
    held = [",".join(map(str, e["result"]["placement"]["gpu_indices"])) for e in report["experiments"]]
    return wall_s, cpu_s, held, most_at_once(report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--sleep-s", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_scenario(folder / "scenario.json")
        (folder / "test_bench_suite.py").write_text(SUITE.format(sleep_s=args.sleep_s, cases=args.cases))
        warm_up(folder)
        one_s, one_cpu_s, one_gpus, one_peak = run_suite(folder, 1)
        four_s, four_cpu_s, four_gpus, four_peak = run_suite(folder, 4)
    ideal_s = args.cases * args.sleep_s
    print(f"{args.cases} cases, each sleeping {args.sleep_s:g} s on one of {GPUS} simulated GPUs")
    header = ("workers", 8), ("wall s", 8), ("CPU s", 7), ("sleep s / wall s", 17), ("GPUs used", 10)
    print(" ".join(f"{name:>{width}}" for name, width in header), f"{'most at once':>13}")
    for name, wall_s, cpu_s, gpus, peak in (
        ("-n 1", one_s, one_cpu_s, one_gpus, one_peak),
        ("-n 4", four_s, four_cpu_s, four_gpus, four_peak),
    ):
        used = len(set(gpus))
        print(f"{name:>8} {wall_s:8.1f} {cpu_s:7.1f} {ideal_s / wall_s:17.2f} {used:>10} {peak:>13}")
    print(f"speed-up of -n 4 over -n 1: {one_s / four_s:.2f}x (at most {GPUS}x)")


if __name__ == "__main__":
    main()
