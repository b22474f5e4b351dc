"""What isolation costs per experiment, measured side by side in one run.

    python benchmarks/isolation_overhead.py [--repeats N]

Prints, for a trivial workload and for one that computes for ~0.5 s:
- the wall time of `BenchmarkSession.run_experiment` (spawn supervisor and worker, import,
  run, tear down, persist state and report) against calling the workload in-process;
- the measured window reported by the child against the in-process window, which shows
  whether isolation changes the figure being measured (it should not).
Absolute times depend on the machine; read the ratios and the overhead in seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from overhead_workloads import compute, trivial  # noqa: E402

from pytest_llem.context import ExperimentContext, combine_windows  # noqa: E402
from pytest_llem.energy.meter import NoEnergyMeter  # noqa: E402
from pytest_llem.session import BenchmarkSession  # noqa: E402
from pytest_llem.settings import LlemSettings  # noqa: E402


def in_process(workload) -> tuple[float, float]:
    ctx = ExperimentContext(config=None, meter=NoEnergyMeter())  # type: ignore[arg-type]
    started = time.perf_counter()
    workload(ctx)
    return time.perf_counter() - started, combine_windows(ctx.windows).duration_s


def isolated(bench: BenchmarkSession, workload) -> tuple[float, float]:
    started = time.perf_counter()
    result = bench.run_experiment("benchmarks::overhead", workload, [{}])
    return time.perf_counter() - started, result.duration_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench = BenchmarkSession(LlemSettings(enabled=True, state_dir=Path(tmp)))
        bench.start()
        print(
            f"{'workload':10} {'in-process wall':>16} {'isolated wall':>14} {'overhead':>9} {'ratio':>7}"
            f" {'window in/iso':>16}"
        )
        for workload in (trivial, compute):
            local = [in_process(workload) for _ in range(args.repeats)]
            remote = [isolated(bench, workload) for _ in range(args.repeats)]
            local_wall = statistics.median(w for w, _ in local)
            remote_wall = statistics.median(w for w, _ in remote)
            local_window = statistics.median(d for _, d in local)
            remote_window = statistics.median(d for _, d in remote)
            print(
                f"{workload.__name__:10} {local_wall:15.3f}s {remote_wall:13.3f}s"
                f" {remote_wall - local_wall:8.3f}s"
                f" {remote_wall / local_wall:7.1f} {local_window:7.3f}/{remote_window:.3f}s"
            )
        print(f"(medians of {args.repeats}; python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
