"""Building a tiny causal language model: the part of `pytest_llem.testing.build_tiny_model`
that imports torch, transformers and tokenizers, so it only ever runs in a fresh interpreter
(`python -m pytest_llem.backends.tiny_model PATH ...`), never in pytest's own process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Literal

from pytest_llem.extras import install_hint

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
    parser = argparse.ArgumentParser(
        prog="python -m pytest_llem.backends.tiny_model", description=__doc__.split("\n")[0]
    )
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
        parser.exit(2, f"the tiny model needs the 'torch' extra ({exc}): {install_hint('torch')}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
