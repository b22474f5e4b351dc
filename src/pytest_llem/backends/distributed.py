"""Data-parallel generation over several ranks (accelerate), measured once for all of them.

The worker (the coordinator, which never loads the model) starts one rank process per
`num_processes` as its own children, so they stay in the experiment's process group and the
spine's teardown reaches every rank. Each rank sets up accelerate's `PartialState` (one
device each: `cuda:LOCAL_RANK`, or the CPU with gloo), takes its share of the prompts, loads
and warms up, then says it is ready. When all are ready the coordinator opens the measured
window and says go (with the round's `min_window_s`); each rank generates its share, again
and again until that long after go, and writes its figures; the window closes when the
last rank is done. Energy is read once, by the coordinator's meter, for every GPU the
experiment can see: one meter per rank would count the whole machine several times.

Rank files in the shared work folder: `config.json` (in), `ready-R`, `go`, `done-R.json`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pytest_llem.backends.generation import BatchOutcome, TorchGeneration, record_outcomes
from pytest_llem.backends.prompts import batched, load_prompts
from pytest_llem.base.atomic import atomic_write_text
from pytest_llem.config import ExperimentConfig
from pytest_llem.context import ExperimentContext, passes_until
from pytest_llem.errors import ConfigError, ExperimentFailed
from pytest_llem.processes import set_parent_death_signal
from pytest_llem.progress import LOADING_MODEL

POLL_S = 0.02
_STDERR_TAIL_CHARS = 2000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_ranks(config: ExperimentConfig, work_dir: Path) -> list[subprocess.Popen[bytes]]:
    (work_dir / "config.json").write_text(config.model_dump_json())
    port = _free_port()
    ranks = []
    for rank in range(config.num_processes):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(config.num_processes),
            LOCAL_WORLD_SIZE=str(config.num_processes),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        stderr = open(work_dir / f"stderr-{rank}.txt", "wb")  # noqa: SIM115 - closed when the rank ends
        ranks.append(
            subprocess.Popen(
                [sys.executable, "-m", "pytest_llem.backends.distributed", str(work_dir)],
                env=env,
                stdin=subprocess.DEVNULL,
                stderr=stderr,
            )
        )
        stderr.close()  # the child holds its own copy
    return ranks


def _wait_for(ranks: list[subprocess.Popen[bytes]], work_dir: Path, names: list[str]) -> None:
    """Wait until every file in `names` exists; a rank that exits first fails the experiment."""
    while not all((work_dir / name).exists() for name in names):
        for rank, process in enumerate(ranks):
            if process.poll() is not None and not (work_dir / names[rank]).exists():
                tail = (work_dir / f"stderr-{rank}.txt").read_text(errors="replace")[-_STDERR_TAIL_CHARS:]
                raise ExperimentFailed(
                    f"rank {rank} of {len(ranks)} exited with {process.returncode}:\n{tail}"
                )
        time.sleep(POLL_S)


def coordinate_ranks(ctx: ExperimentContext) -> None:
    config = ctx.config
    if config.rounds > 1:
        raise ConfigError("rounds: several rounds are not supported with num_processes > 1; use rounds=1")
    with tempfile.TemporaryDirectory(prefix="pytest-llem-ranks-") as tmp:
        work_dir = Path(tmp)
        ranks = _start_ranks(config, work_dir)
        ctx.phase(LOADING_MODEL, f"{len(ranks)} ranks, with warm-up")
        try:
            _wait_for(ranks, work_dir, [f"ready-{r}" for r in range(len(ranks))])
            with ctx.window():
                # Each rank repeats its batches until this long after go: the window lasts as long.
                atomic_write_text(work_dir / "go", json.dumps({"min_window_s": ctx.min_window_s}))
                _wait_for(ranks, work_dir, [f"done-{r}.json" for r in range(len(ranks))])
            reports = [json.loads((work_dir / f"done-{r}.json").read_text()) for r in range(len(ranks))]
            for process in ranks:
                process.wait()
        finally:
            for process in ranks:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    outcomes = [[BatchOutcome(**o) for o in report["outcomes"]] for report in reports]
    record_outcomes(
        ctx,
        [o for rank in outcomes for o in rank],
        one_pass=[
            o for rank, report in zip(outcomes, reports, strict=True) for o in rank[: report["per_pass"]]
        ],
    )
    ctx.record_resources(
        max(r["peak_memory_bytes"] for r in reports),
        reports[0]["peak_memory_kind"] + " (largest rank)",
        flops=sum(r["flops_estimate"] for r in reports),
    )
    ctx.record(
        ranks=len(ranks),
        passes=sum(r["passes"] for r in reports),
        passes_per_rank=[r["passes"] for r in reports],
        min_window_s=ctx.min_window_s,
        accelerate_world_size=reports[0]["world_size"],
        device=reports[0]["device"],
        precision=config.precision,
        decoding=reports[0]["decoding"],
    )
    if reports[0]["cpu_threads"] is not None:
        ctx.record(**cpu_rank_threads([r["cpu_threads"] for r in reports]))


def cpu_rank_threads(threads: list[int]) -> dict[str, Any]:
    """What a result says about CPU ranks' threads: accelerate gives each a share of the cores."""
    shown = "/".join(str(t) for t in threads)
    return {
        "cpu_threads_per_rank": threads,
        "cpu_threads_note": (
            f"CPU ranks ran torch with {shown} thread(s) each: accelerate divides the physical cores "
            "among the ranks when OMP_NUM_THREADS is unset, while one process uses them all"
        ),
    }


def rank_main(work_dir: Path) -> None:
    """One rank: load, warm up, wait for go, generate its share, report."""
    set_parent_death_signal(signal.SIGKILL)  # a rank never outlives its coordinator
    from accelerate import PartialState

    config = ExperimentConfig.model_validate_json((work_dir / "config.json").read_text())
    rank = int(os.environ["RANK"])
    state = PartialState(cpu=config.device == "cpu")
    engine = TorchGeneration(config, device=state.device)
    with state.split_between_processes(load_prompts(config)) as mine:
        encodings = [engine.encode(batch) for batch in batched(list(mine), config.batch_size)]
    engine.seed()
    for index in range(config.warmup_batches):
        engine.generate(encodings[index % len(encodings)])
    engine.seed()
    engine.reset_peak_memory()
    (work_dir / f"ready-{rank}").touch()
    while not (work_dir / "go").exists():
        time.sleep(POLL_S)
    started_s = time.perf_counter()
    min_window_s = json.loads((work_dir / "go").read_text())["min_window_s"]
    outcomes = []
    passes = 0
    for _ in passes_until(min_window_s, lambda: time.perf_counter() - started_s):
        outcomes.extend(engine.generate(encoding) for encoding in encodings)
        passes += 1
    peak_bytes, kind = engine.peak_memory()
    processed = sum(o.input_tokens + o.output_tokens for o in outcomes)
    report = {
        "outcomes": [asdict(o) for o in outcomes],
        "per_pass": len(encodings),
        "passes": passes,
        "peak_memory_bytes": peak_bytes,
        "peak_memory_kind": kind,
        "flops_estimate": 2.0 * engine.non_embedding_parameters() * processed,
        "device": str(engine.device),
        "world_size": state.num_processes,
        "decoding": engine.decoding_settings(),
        "cpu_threads": engine.torch.get_num_threads() if engine.device.type == "cpu" else None,
    }
    atomic_write_text(work_dir / f"done-{rank}.json", json.dumps(report))
    if engine.torch.distributed.is_initialized():
        engine.torch.distributed.destroy_process_group()


if __name__ == "__main__":
    rank_main(Path(sys.argv[1]))
