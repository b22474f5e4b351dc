"""Where a built-in backend's prompts come from: seeded synthetic text, a list, or a file.

Synthetic prompts are drawn from a fixed word list with the experiment's seed, so the same
config always measures the same prompts. Files: `.txt` (one prompt per line) or `.jsonl`
(one object per line with a `prompt` or `text` field). Prompts are repeated in order when
fewer than `n_prompts` are given. A serving load's `input_len` makes synthetic prompts of
that many tokens (`sized_prompts`), counted by the model's tokenizer where the worker has
one, else by words. No torch here: only plain Python.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from pytest_llem.config import ExperimentConfig
from pytest_llem.errors import ConfigError

DEFAULT_BATCHES = 4
_WORDS = (
    "energy model token batch power window measure prompt answer layer memory cache device "
    "joule second watt sample seed greedy length report figure result compare build change "
    "warm idle heat clock kernel queue request stream first latency throughput precision"
).split()
_SYNTHETIC_WORDS = (12, 40)
_FILLERS = ("a", "I", "o", "x")


def prompt_count(config: ExperimentConfig) -> int:
    return config.n_prompts or config.batch_size * DEFAULT_BATCHES


def synthetic_prompts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(*_SYNTHETIC_WORDS))).capitalize() + "."
        for _ in range(count)
    ]


def sized_prompts(
    count: int, seed: int, length: int, count_tokens: Callable[[str], int] | None
) -> tuple[list[str], str]:
    """`count` seeded synthetic prompts of `length` tokens each, and how they were counted:
    "tokenizer" (by `count_tokens`, special tokens aside: a prompt that cannot land on exactly
    `length` gets the nearest count below it) or "words" (one word a
    token, without a tokenizer: the server's usage says how many tokens they are)."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        words = [rng.choice(_WORDS) for _ in range(length)]
        if count_tokens is not None:
            words = _fit(words, length, count_tokens, rng)
        prompts.append(" ".join(words))
    return prompts, "words" if count_tokens is None else "tokenizer"


def _fit(words: list[str], length: int, count_tokens: Callable[[str], int], rng: random.Random) -> list[str]:
    """Words cut or added until their text counts `length` tokens (or the most below it)."""
    # The longest run of the words that fits, by halving (a word may be several tokens).
    low, high = 0, len(words)
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens(" ".join(words[:middle])) <= length:
            low = middle
        else:
            high = middle - 1
    words = words[:low]
    # Each word counts at least one token: add them one at a time, keeping the last that fits.
    for _ in range(length):
        if count_tokens(" ".join(words)) >= length:
            break
        candidate = [*words, rng.choice(_WORDS)]
        if count_tokens(" ".join(candidate)) > length:
            break
        words = candidate
    # Short of it by less than a word: the shortest words there are, one token each in most
    # vocabularies, while one still fits.
    while count_tokens(" ".join(words)) < length:
        fits = [
            candidate
            for filler in _FILLERS
            if count_tokens(" ".join(candidate := [*words, filler])) <= length
        ]
        if not fits:
            break
        words = fits[0]
    return words or [_FILLERS[0]]  # a prompt is never empty


def read_prompt_file(path: Path) -> list[str]:
    if not path.is_file():
        raise ConfigError(f"prompts: no such file {str(path)!r}; give a .txt or .jsonl file, or a list")
    if path.suffix == ".txt":
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        prompts = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                prompts.append(str(record["prompt"] if "prompt" in record else record["text"]))
            except (ValueError, KeyError, TypeError):
                raise ConfigError(
                    f"prompts: {path.name} line {number} is not a JSON object with a 'prompt' or 'text' field"
                ) from None
        return prompts
    raise ConfigError(f"prompts: {path.name} is neither .txt nor .jsonl")


def load_prompts(config: ExperimentConfig) -> list[str]:
    count = prompt_count(config)
    if config.prompts is None:
        return synthetic_prompts(count, config.seed)
    given = (
        list(config.prompts) if isinstance(config.prompts, list) else read_prompt_file(Path(config.prompts))
    )
    if not given:
        raise ConfigError("prompts: no prompts given (an empty list or file)")
    return [given[i % len(given)] for i in range(count)]


def batched(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
