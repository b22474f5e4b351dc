"""What the preloaded interpreter checks before it forks, and its forked worker's wait."""

from __future__ import annotations

import os
import subprocess
import threading
import types
from pathlib import Path

import pytest

from pytest_llem.isolation import forkserver


def test_a_running_thread_makes_forking_unsafe():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="busy-helper")
    thread.start()
    try:
        hazard = forkserver.fork_hazard()
    finally:
        stop.set()
        thread.join()
    assert hazard is not None and "Python thread(s) running" in hazard and "busy-helper" in hazard


def test_cuda_initialised_makes_forking_unsafe(monkeypatch: pytest.MonkeyPatch):
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_initialized=lambda: True))
    monkeypatch.setitem(__import__("sys").modules, "torch", fake_torch)
    assert forkserver.fork_hazard() == "CUDA is initialised in the preloaded interpreter"
    fake_torch.cuda.is_initialized = lambda: False
    assert "CUDA" not in (forkserver.fork_hazard() or "")


def test_an_import_that_fails_is_named_in_one_line():
    assert forkserver.import_modules(["json", "no_such_module_y", "os"]) == (
        "importing no_such_module_y failed (ModuleNotFoundError: No module named 'no_such_module_y')"
    )
    assert forkserver.import_modules(["json"]) is None


def test_a_forked_worker_waits_with_a_timeout_and_gives_popens_exit_status():
    pid = os.fork()
    if pid == 0:
        import time

        time.sleep(0.3)
        os._exit(7)
    worker = forkserver.ForkedWorker(pid)
    with pytest.raises(subprocess.TimeoutExpired):
        worker.wait(timeout=0.01)
    assert worker.wait() == 7 and worker.returncode == 7


def test_model_files_are_read_whole_and_anything_but_a_regular_file_is_skipped(tmp_path: Path):
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshot"
    blobs.mkdir()
    (snapshot / "sub").mkdir(parents=True)
    (blobs / "weights").write_bytes(b"x" * (9 << 20))  # more than one read
    (snapshot / "model.safetensors").symlink_to(blobs / "weights")  # a hub cache's layout
    (snapshot / "sub" / "tokenizer.json").write_text("{}")
    os.mkfifo(snapshot / "pipe")  # would block a plain open, and never end
    (snapshot / "dangling").symlink_to(tmp_path / "gone")
    read = forkserver.read_into_page_cache(str(snapshot))
    assert (read["path"], read["files"], read["bytes"]) == (str(snapshot), 2, (9 << 20) + 2)
    assert read["read_s"] >= 0
