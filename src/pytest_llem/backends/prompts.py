"""Where a built-in backend's prompts come from: seeded synthetic text, a list, or a file.

Synthetic prompts are drawn from a fixed word list with the experiment's seed, so the same
config always measures the same prompts. Files: `.txt` (one prompt per line) or `.jsonl`
(one object per line with a `prompt` or `text` field). Prompts are repeated in order when
fewer than `n_prompts` are given. No torch here: only plain Python.
"""

from __future__ import annotations

import json
import random
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


def prompt_count(config: ExperimentConfig) -> int:
    return config.n_prompts or config.batch_size * DEFAULT_BATCHES


def synthetic_prompts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(*_SYNTHETIC_WORDS))).capitalize() + "."
        for _ in range(count)
    ]


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
