"""Tiny causal language models for tests and smoke benchmarks, built locally in seconds.

    from pytest_llem.testing import build_tiny_model
    model_dir = build_tiny_model(tmp_path / "tiny-gpt2")          # or arch="llama"
    ...  @pytest.mark.llem(backend="pytorch", model=str(model_dir))

The model has random weights (a small GPT-2 or Llama configuration) and a byte-level BPE
tokenizer trained on a short built-in text; both are written with `save_pretrained`, so
loading goes through exactly the `from_pretrained` path a downloaded model takes. The same
seed gives the same files. Nothing is downloaded.

`build_tiny_model` runs the build (`backends.tiny_model`) in a fresh interpreter, so the
calling process (pytest, which must stay free of torch and CUDA) never imports torch. It
needs the `torch` extra.

`needs_gpus(n)` is a skip marker for suites that need real GPUs; it asks NVML (which never
initialises CUDA) how many there are.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

Architecture = Literal["gpt2", "llama"]


def visible_gpu_count() -> tuple[int, str]:
    """How many GPUs NVML shows in `CUDA_VISIBLE_DEVICES`, and why none if none."""
    from pytest_llem.energy.nvml import NvmlSession
    from pytest_llem.errors import MeterUnavailable

    try:
        session = NvmlSession.open()
    except MeterUnavailable as exc:
        return 0, str(exc)
    try:
        return len(session.visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"))), "no GPU is visible"
    except MeterUnavailable as exc:
        return 0, str(exc)
    finally:
        session.close()


def needs_gpus(count: int = 1) -> pytest.MarkDecorator:
    """`pytestmark = needs_gpus(2)`: skip, saying why, unless `count` NVIDIA GPUs are visible."""
    found, why = visible_gpu_count()
    return pytest.mark.skipif(found < count, reason=f"needs {count} NVIDIA GPU(s), found {found}: {why}")


def build_tiny_model(
    path: Path | str,
    arch: Architecture = "gpt2",
    seed: int = 0,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    max_positions: int = 512,
) -> Path:
    """Build the model into `path` (created) in a fresh interpreter, and return `path`."""
    path = Path(path)
    command = [
        sys.executable,
        "-m",
        "pytest_llem.backends.tiny_model",
        str(path),
        f"--arch={arch}",
        f"--seed={seed}",
        f"--vocab-size={vocab_size}",
        f"--hidden-size={hidden_size}",
        f"--num-layers={num_layers}",
        f"--max-positions={max_positions}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"building the tiny model failed:\n{completed.stderr.strip()}")
    return path
