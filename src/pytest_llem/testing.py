"""Tiny causal language models for tests and smoke benchmarks, built locally in seconds.

    from pytest_llem.testing import build_tiny_model
    model_dir = build_tiny_model(tmp_path / "tiny-gpt2")          # or arch="llama"
    ...  @pytest.mark.llem(backend="pytorch", model=str(model_dir))

The model has random weights (a small GPT-2 or Llama configuration) and a byte-level BPE
tokenizer trained on a short built-in text; both are written with `save_pretrained`, so
loading goes through exactly the `from_pretrained` path a downloaded model takes. The same
seed gives the same files. Nothing is downloaded.

`build_tiny_model` runs the build in a fresh interpreter, so the calling process (pytest,
which must stay free of torch and CUDA) never imports torch. It needs the `torch` extra.

`needs_gpus(n)` is a skip marker for suites that need real GPUs; it asks NVML (which never
initialises CUDA) how many there are.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

Architecture = Literal["gpt2", "llama"]

# Text to train the tokenizer on: plain English about the subject at hand, enough for a few
# hundred merges. Generated text from random weights is gibberish either way.
TRAINING_TEXT = """\
A benchmark measures one thing at a time and says how it measured it.
Energy is power integrated over time; a joule is one watt for one second.
The model reads a prompt, then writes one token after another until it is told to stop.
Each new token needs a pass through every layer, so longer answers cost more energy.
Batching several prompts together keeps the accelerator busy and lowers the energy per token.
Large batches need more memory, and a batch that does not fit has to wait or fail.
Warm-up runs load kernels and fill caches before the measured window opens.
A short window is noisy: counters update in steps and power readings are averages.
The idle baseline is the power a device draws while it waits for work.
Temperature matters too, because a hot chip leaks more current than a cool one.
Greedy decoding always picks the most likely token; sampling draws from the distribution.
A seed makes sampling repeatable, so two runs with the same seed write the same text.
Prompts are cut to a maximum length, and every answer is made exactly as long as asked.
Tokens per second tells how fast; joules per token tells how efficiently.
The same model in half precision moves half the bytes and often uses less energy.
Reports keep every figure with the settings that produced it, so results can be compared.
When a change makes energy per token worse, the build should fail and say by how much.
Numbers without their uncertainty invite the wrong conclusions; flags say when to doubt them.
"""

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


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
        "pytest_llem.testing",
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


def _build_here(
    path: Path,
    arch: Architecture,
    seed: int,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    max_positions: int,
) -> None:
    """The build itself; imports torch, so only ever run in a process of its own."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TRAINING_TEXT.splitlines(), trainer=trainer)
    # Left padding: decoder-only models generate after the prompt, so pads go in front.
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, padding_side="left", model_max_length=max_positions, **SPECIAL_TOKENS
    )
    token_ids = {name: fast.convert_tokens_to_ids(token) for name, token in SPECIAL_TOKENS.items()}
    shared = {
        "vocab_size": len(fast),
        "bos_token_id": token_ids["bos_token"],
        "eos_token_id": token_ids["eos_token"],
        "pad_token_id": token_ids["pad_token"],
    }
    if arch == "gpt2":
        config = GPT2Config(
            n_embd=hidden_size, n_layer=num_layers, n_head=4, n_positions=max_positions, **shared
        )
    else:
        config = LlamaConfig(
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 2,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=max_positions,
            **shared,
        )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    # Random weights pick any token. Keep to those that decode to whole, visible text (no
    # special token but the end, no lone byte of a longer character), so that a served stream
    # carries one token per chunk and its count can be checked against the server's usage.
    model.generation_config.suppress_tokens = [
        i
        for i in range(len(fast))
        if i != token_ids["eos_token"]
        and (not (text := fast.decode([i], skip_special_tokens=True)) or "\ufffd" in text)
    ]
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_llem.testing", description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--arch", choices=["gpt2", "llama"], default="gpt2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--max-positions", type=int, default=512)
    args = parser.parse_args(argv)
    try:
        _build_here(
            args.path,
            args.arch,
            args.seed,
            args.vocab_size,
            args.hidden_size,
            args.num_layers,
            args.max_positions,
        )
    except ImportError as exc:
        parser.exit(2, f"the tiny model needs the 'torch' extra: pip install 'pytest-llem[torch]' ({exc})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
