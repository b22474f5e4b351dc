"""Cold and preloaded start methods side by side in one run: fixed cost, the demo, repeats.

    python benchmarks/start_methods.py [--repeats N] [--sessions N] [--part no-op|demo|repeats ...]

Prints three tables (absolute times depend on the machine; read the ratios):
1. a no-op experiment's wall time (`BenchmarkSession.run_experiment`, persistence included)
   under `--llem-preload=none` (cold: two fresh interpreters) and `auto` (forked from the
   preloaded interpreter, whose one-time start is shown apart), against a bare
   `python -c pass`; target: preloaded at most 3x the bare start;
2. the tiny-model demo suite (`pytest --llem examples/tiny_cpu`) under each method: wall time,
   the measured windows' total and its share of the wall time (target: at least 60%
   preloaded), and the token counts, which must be identical;
3. one tiny-model case with `repeats=4`, in several sessions per method, alternating: the
   median wall time under each method (target: at least 3x lower preloaded; the preloaded
   interpreter's own start counts, as a one-case suite pays it) and tokens per second per
   process, which must agree within noise: the two-sided rank test the gate uses
   (`gating.stats`) over every process of each method.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from llem_runs import pytest_llem_command
from overhead_workloads import trivial  # noqa: E402

from pytest_llem.gating.metrics import METRICS  # noqa: E402
from pytest_llem.gating.stats import SIGNIFICANCE_LEVEL, p_worse, sample_values  # noqa: E402
from pytest_llem.session import BenchmarkSession  # noqa: E402
from pytest_llem.settings import LlemSettings  # noqa: E402
from pytest_llem.testing import build_tiny_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
METHODS = ("none", "auto")


def _session(state_dir: Path, preload: str, backends: set[str | None] | None = None) -> BenchmarkSession:
    bench = BenchmarkSession(LlemSettings(enabled=True, state_dir=state_dir, energy="none", preload=preload))
    bench.collected_backends = backends or set()
    bench.start()
    return bench


def _timed(call, *args, **kwargs) -> tuple[float, Any]:
    started = time.perf_counter()
    value = call(*args, **kwargs)
    return time.perf_counter() - started, value


def bare_start_s(repeats: int) -> float:
    return statistics.median(
        _timed(subprocess.run, [sys.executable, "-c", "pass"], check=True)[0] for _ in range(repeats)
    )


def no_op(repeats: int) -> None:
    bare = bare_start_s(repeats)
    print("1. no-op experiment (median wall per experiment)")
    print(f"   {'start':10} {'first':>8} {'median':>8} {'x bare':>7}")
    print(f"   {'bare':10} {'':>8} {bare:7.3f}s {1.0:7.1f}   (python -c pass)")
    for preload in METHODS:
        with tempfile.TemporaryDirectory() as tmp:
            bench = _session(Path(tmp), preload)
            try:
                first, result = _timed(bench.run_experiment, "bench::noop", trivial, [{}])
                walls = [
                    _timed(bench.run_experiment, "bench::noop", trivial, [{}])[0] for _ in range(repeats)
                ]
            finally:
                bench.close_preloaded()
        median = statistics.median(walls)
        method = result.start_method
        print(f"   {method:10} {first:7.3f}s {median:7.3f}s {median / bare:7.1f}")


def demo_suite() -> None:
    print("2. tiny-model demo suite (pytest --llem examples/tiny_cpu)")
    print(f"   {'start':10} {'wall':>8} {'measured':>9} {'share':>6} {'tokens':>7} {'methods'}")
    for preload in METHODS:
        with tempfile.TemporaryDirectory() as tmp:
            report_path = Path(tmp) / "report.json"
            command = pytest_llem_command(
                f"{tmp}/state",
                f"--llem-json={report_path}",
                f"--llem-preload={preload}",
                "examples/tiny_cpu",
            )
            wall, proc = _timed(subprocess.run, command, cwd=REPO, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"   {preload}: the suite failed:\n{proc.stdout[-2000:]}")
                continue
            results = [
                e["result"] for e in json.loads(report_path.read_text())["experiments"] if e.get("result")
            ]
        measured = sum(r["duration_s"] for r in results)
        tokens = sum(r["output_tokens"] or 0 for r in results)
        methods = ",".join(sorted({str(r.get("start_method")) for r in results}))
        print(f"   {preload:10} {wall:7.1f}s {measured:8.1f}s {measured / wall:6.0%} {tokens:7d} {methods}")


def two_sided_p(first: list[float], second: list[float]) -> float:
    """The rank test of `gating.stats` in both directions: could the two be the same?"""
    return min(1.0, 2 * min(p_worse(first, second, True), p_worse(first, second, False)))


def repeats_case(model_dir: Path, sessions: int) -> None:
    print(
        f"3. one tiny-model case, repeats=4 (backend=pytorch, CPU): {sessions} session(s) per start "
        "method, alternating"
    )
    print(
        f"   {'start':10} {'wall: median':>12} {'range':>13} {'tokens':>7} {'tokens/s: median':>17}"
        f" {'range':>13} {'method'}"
    )
    fields = {
        "backend": "pytorch",
        "device": "cpu",
        "model": str(model_dir),
        "n_prompts": 32,
        "batch_size": 8,
        "max_new_tokens": 16,
        "max_input_tokens": 32,
        "warmup_batches": 1,
        "repeats": 4,
    }
    walls: dict[str, list[float]] = {m: [] for m in METHODS}
    rates: dict[str, list[float]] = {m: [] for m in METHODS}
    tokens: dict[str, set[int]] = {m: set() for m in METHODS}
    started: dict[str, set[str]] = {m: set() for m in METHODS}
    # Alternating, so that a drift of the machine's speed weighs on both methods alike.
    for index in range(sessions):
        for preload in METHODS if index % 2 == 0 else METHODS[::-1]:
            with tempfile.TemporaryDirectory() as tmp:
                bench = _session(Path(tmp), preload, {"pytorch"})
                try:
                    wall, result = _timed(bench.run_experiment, "bench::repeats", None, [fields])
                finally:
                    bench.close_preloaded()
            walls[preload].append(wall)
            # One sample per process, as the gate sees them.
            rates[preload] += sample_values(result.rounds, METRICS["tokens_per_s"])
            tokens[preload].add(result.output_tokens or 0)
            started[preload].add(str(result.start_method))
    for preload in METHODS:
        wall_range = f"{min(walls[preload]):.1f}-{max(walls[preload]):.1f}s"
        rate_range = f"{min(rates[preload]):.0f}-{max(rates[preload]):.0f}"
        print(
            f"   {preload:10} {statistics.median(walls[preload]):11.1f}s {wall_range:>13}"
            f" {','.join(map(str, sorted(tokens[preload]))):>7} {statistics.median(rates[preload]):17.1f}"
            f" {rate_range:>13} {','.join(sorted(started[preload]))}"
        )
    ratio = statistics.median(walls["none"]) / statistics.median(walls["auto"])
    print(f"   cold / preloaded wall (medians): {ratio:.1f}x")
    p = two_sided_p(rates["none"], rates["auto"])
    verdict = "no difference shown" if p > SIGNIFICANCE_LEVEL else "DIFFERENT"
    print(
        f"   tokens/s over {len(rates['none'])} + {len(rates['auto'])} processes, cold vs preloaded,"
        f" two-sided rank test: p = {p:.2f} ({verdict})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="no-op experiments per start method")
    parser.add_argument(
        "--sessions", type=int, default=3, help="sessions per start method for the repeats=4 case"
    )
    parser.add_argument(
        "--part",
        choices=("no-op", "demo", "repeats"),
        action="append",
        help="run only this part (repeatable); default: all three",
    )
    args = parser.parse_args()
    parts = args.part or ["no-op", "demo", "repeats"]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    if "no-op" in parts:
        no_op(args.repeats)
    if "demo" in parts:
        demo_suite()
    if "repeats" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = build_tiny_model(
                Path(tmp) / "tiny-gpt2", arch="gpt2", seed=0, hidden_size=256, num_layers=4
            )
            repeats_case(Path(model_dir), args.sessions)


if __name__ == "__main__":
    main()
