"""What a long history costs the lookups that every session makes, measured side by side.

    python benchmarks/store_scale.py [--runs N] [--experiments N] [--points N] [--store URL]

Builds a large history through the store's own batched API (`save_runs` for a batch of runs'
reports, `StateManager.save_all` for each run's experiment states), every experiment GPU-shaped: two GPUs
with a power timeline of `--points` samples each and raw latencies. Then it times, on an
empty store and on the large one, in the same run:

- session start (`BenchmarkSession.start`: open the store, stale cleanup, repair, the run's row);
- the default baseline (`--llem-compare`: the newest run of this machine) and a run by name;
- `pytest-llem list` of the newest 50 runs (the query behind it).

Targets: session start and the baseline lookup add at most 50 ms over an empty store; the
list of the newest 50 runs takes at most 0.5 s. A baseline lookup over an empty store has
nothing to find (nor a report to read), so the lookups' left column is a store holding one
run of the same shape. Absolute times depend on the machine; read the differences. The
figures printed say what was built.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pytest_llem.fingerprints.machine import MachineInfo
from pytest_llem.formatting import aligned
from pytest_llem.results import DeviceEnergy, ExperimentResult, PowerSample
from pytest_llem.session import BenchmarkSession
from pytest_llem.settings import LlemSettings
from pytest_llem.store.database import close_stores, default_store_url, open_store
from pytest_llem.store.experiments import ExperimentPhase, ExperimentState
from pytest_llem.store.history import RunHistory
from pytest_llem.store.report import ReportEntry, SessionReport, save_runs
from pytest_llem.store.state import StateManager

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
#: Runs saved per transaction while building the history.
BATCH_RUNS = 20


def gpu_result(experiment_id: str, points: int) -> ExperimentResult:
    devices = [
        DeviceEnergy(
            device=f"gpu{index}",
            name="NVIDIA H100 80GB HBM3",
            energy_j=3000.0 + index,
            energy_source="nvml-counter",
            duration_s=10.0,
            avg_power_w=300.0,
            peak_power_w=410.0,
            power_samples=points,
            timeline=[
                PowerSample(t_s=i * 0.01, power_w=280.0 + (i % 50), temperature_c=60.0, sm_clock_mhz=1980.0)
                for i in range(points)
            ],
        )
        for index in range(2)
    ]
    return ExperimentResult(
        experiment_id=experiment_id,
        config_hash="c0ffee0123456789",
        config={"model": "meta-llama/Llama-3.1-8B", "batch_size": 8, "max_new_tokens": 128},
        duration_s=10.0,
        window_count=1,
        output_tokens=4096,
        energy_j=6001.0,
        gpu_energy_j=6001.0,
        energy_scope=["gpu"],
        energy_source="nvml-counter",
        energy_by_device=devices,
        batch_latencies_s=[0.31 + i * 1e-4 for i in range(64)],
        started_at=T0,
        finished_at=T0 + timedelta(seconds=10),
    )


def build_history(state_dir: Path, url: str, runs: int, experiments: int, points: int) -> float:
    """Fill the store; return the seconds it took."""
    store = open_store(url)
    states = StateManager(state_dir, store=store)
    machine = MachineInfo.current()
    template = gpu_result("template", points)
    batch: list[SessionReport] = []
    started = time.perf_counter()
    for run in range(runs):
        run_id = f"{(T0 + timedelta(hours=run)):%Y%m%dT%H%M%SZ}-{run:06d}"
        at = T0 + timedelta(hours=run)
        results = [template.model_copy(update={"experiment_id": f"{run_id}-{e}"}) for e in range(experiments)]
        states.save_all(
            [
                ExperimentState(
                    experiment_id=result.experiment_id,
                    phase=ExperimentPhase.DONE,
                    config_hash=f"{run % 97:016x}{e:04d}",
                    started_at=at,
                    last_updated=at,
                    owner_pid=1,
                    hostname="gpu-runner",
                    result=result,
                )
                for e, result in enumerate(results)
            ],
            run_id=run_id,
        )
        report = SessionReport(
            run_id=run_id,
            name=f"nightly-{run}" if run % 10 == 0 else None,
            machine=machine,
            started_at=at,
            finished_at=at + timedelta(minutes=30),
            outcome="passed",
            plugin_version="bench",
            experiments=[
                ReportEntry(nodeid=f"test_llm.py::test_gen[{e}]", experiment_id=r.experiment_id, result=r)
                for e, r in enumerate(results)
            ],
        )
        batch.append(report)
        if len(batch) == BATCH_RUNS or run == runs - 1:
            save_runs(store, batch)
            batch = []
        if run and run % 500 == 0:
            rate = run / (time.perf_counter() - started)
            print(f"  built {run} runs ({rate:.1f} runs/s)", flush=True)
    return time.perf_counter() - started


def median_ms(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def session_start(state_dir: Path, url: str) -> Callable[[], object]:
    settings = LlemSettings(enabled=True, state_dir=state_dir, store_url=url, energy="none", baseline_s=0)
    return lambda: BenchmarkSession(settings).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--experiments", type=int, default=50, help="per run")
    parser.add_argument("--points", type=int, default=1000, help="power samples per GPU per experiment")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--store", help="the large store's URL (default: SQLite in a temp dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="llem-store-scale-") as tmp:
        empty_dir, one_dir, large_dir = Path(tmp, "empty"), Path(tmp, "one"), Path(tmp, "large")
        empty_url, one_url = default_store_url(empty_dir), default_store_url(one_dir)
        large_url = args.store or default_store_url(large_dir)
        build_history(one_dir, one_url, 1, args.experiments, args.points)
        print(
            f"building {args.runs} runs x {args.experiments} experiments, 2 GPUs x {args.points} points ..."
        )
        built_s = build_history(large_dir, large_url, args.runs, args.experiments, args.points)
        large_file = large_dir / "llem.sqlite3"
        size = f", {large_file.stat().st_size / 2**20:.0f} MiB" if large_file.exists() else ""
        print(f"built in {built_s:.0f} s{size}: {args.runs} runs, {args.runs * args.experiments} experiments")

        machine_id = MachineInfo.current().id
        rows = []

        def row(label: str, small: float, large: float, target: str) -> None:
            rows.append((label, f"{small:.1f}", f"{large:.1f}", f"{large - small:+.1f}", target))

        row(
            "session start (ms)",
            median_ms(session_start(empty_dir, empty_url), args.repeats),
            median_ms(session_start(large_dir, large_url), args.repeats),
            "<= +50",
        )
        empty, one, large = (
            RunHistory(d, u) for d, u in ((empty_dir, empty_url), (one_dir, one_url), (large_dir, large_url))
        )
        row(
            "baseline: latest (ms)",
            median_ms(lambda: one.latest(machine_id), args.repeats),
            median_ms(lambda: large.latest(machine_id), args.repeats),
            "<= +50",
        )
        wanted = f"nightly-{args.runs // 2 // 10 * 10}"  # a named run from the middle of the history
        row(
            "baseline: by name (ms)",
            median_ms(lambda: one.find("nightly-0"), args.repeats),
            median_ms(lambda: large.find(wanted), args.repeats),
            "<= +50",
        )
        row(
            "list newest 50 (ms)",
            median_ms(lambda: empty.summaries(limit=50), args.repeats),
            median_ms(lambda: large.summaries(limit=50), args.repeats),
            "<= 500",
        )
        header = ("", "empty (lookups: 1 run)", f"{args.runs} runs", "added", "target")
        print("\n".join(aligned(header, rows, right_aligned={1, 2, 3})))
        close_stores()


if __name__ == "__main__":
    main()
