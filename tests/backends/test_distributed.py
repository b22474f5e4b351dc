"""`num_processes > 1` (`backends.distributed`): one rank as the real process the coordinator
starts, driven through its files (ready, go, done); the coordinator's refusals and a rank
that dies before it is ready, through a benchmark session. (Ranks sharing the work and
measured once: test_pytorch.py.)"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from bench_runs import run
from helpers import wait_for_file

from pytest_llem.backends.distributed import cpu_rank_threads
from pytest_llem.base.atomic import atomic_write_text
from pytest_llem.config import build_config
from pytest_llem.errors import ExperimentFailed

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("accelerate") is None,
    reason="the torch extra (torch, accelerate) is not installed",
)


def test_cpu_ranks_threads_are_listed_with_why_they_differ_from_one_process():
    said = cpu_rank_threads([4, 3])
    assert said["cpu_threads_per_rank"] == [4, 3]
    assert said["cpu_threads_note"].startswith("CPU ranks ran torch with 4/3 thread(s) each: ")
    assert "OMP_NUM_THREADS" in said["cpu_threads_note"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@needs_torch
def test_a_rank_loads_says_ready_waits_for_go_and_reports_its_share(tmp_path: Path, tiny_model: Path):
    config = build_config(
        {
            "backend": "pytorch",
            "model": str(tiny_model),
            "device": "cpu",
            "batch_size": 2,
            "n_prompts": 4,
            "max_new_tokens": 3,
        }
    )
    (tmp_path / "config.json").write_text(config.model_dump_json())
    env = dict(
        os.environ,
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
        LOCAL_WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
    )
    stderr = (tmp_path / "stderr.txt").open("wb")
    rank = subprocess.Popen(
        [sys.executable, "-m", "pytest_llem.backends.distributed", str(tmp_path)], env=env, stderr=stderr
    )
    try:
        wait_for_file(tmp_path / "ready-0", timeout_s=240)
        assert rank.poll() is None and not (tmp_path / "done-0.json").exists()  # it waits for go
        atomic_write_text(tmp_path / "go", json.dumps({"min_window_s": 0.0}))  # as the coordinator does
        assert rank.wait(timeout=120) == 0, (tmp_path / "stderr.txt").read_text()[-2000:]
    finally:
        if rank.poll() is None:
            rank.kill()
            rank.wait()
        stderr.close()
    done = json.loads((tmp_path / "done-0.json").read_text())
    # Alone, the rank's share is every prompt: two batches of two, one pass (no minimum window).
    assert (done["per_pass"], done["passes"], done["world_size"]) == (2, 1, 1)
    assert done["device"].split(":")[0] == "cpu"
    assert [o["output_tokens"] for o in done["outcomes"]] == [2 * 3, 2 * 3]
    assert done["decoding"]["greedy"] and done["cpu_threads"] >= 1
    assert done["flops_estimate"] > 0 and done["peak_memory_kind"] == "peak_rss"


@needs_torch
def test_several_rounds_with_several_ranks_are_refused_in_one_line(bench, tiny_model: Path):
    with pytest.raises(ExperimentFailed) as failed:
        run(bench, backend="pytorch", model=str(tiny_model), device="cpu", num_processes=2, rounds=2)
    assert (
        str(failed.value) == "rounds: several rounds are not supported with num_processes > 1; use rounds=1"
    )


@needs_torch
def test_a_rank_that_dies_before_it_is_ready_fails_the_experiment_with_its_stderr(bench, tmp_path: Path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ExperimentFailed) as failed:
        run(bench, backend="pytorch", model=str(missing), device="cpu", num_processes=2)
    message = str(failed.value)
    assert message.split(":", 1)[0] in ("rank 0 of 2 exited with 1", "rank 1 of 2 exited with 1")
    assert f"model: no such directory {str(missing)!r}" in message  # the tail of the rank's stderr
