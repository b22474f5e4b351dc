"""A tiny word-level n-gram language model in pure Python: real token generation on any CPU.

It stands in for an LLM until a model backend is installed: it has a vocabulary, a
tokenizer, batched prompts and greedy or sampled decoding, so the benchmark around it has
the shape of an LLM benchmark (load outside the window, generate inside, count tokens).
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict

CORPUS = """
Energy measurements of language models depend on the batch size, the precision and the
length of the generated text. A larger batch keeps the accelerator busy and lowers the
energy per token, until memory or latency limits are reached. Short measurement windows are
noisy, because power counters update only every few milliseconds, so a benchmark should
measure long enough and repeat its rounds. The model is loaded before the window opens, so
loading does not count as inference. Each prompt is tokenised, the model predicts the next
token, the token is appended, and the loop continues until enough new tokens exist.
"""

_WORD = re.compile(r"[a-z]+|[.,]")


def tokenise(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class NGramLM:
    def __init__(self, order: int = 3) -> None:
        self.order = order
        self.table: dict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
        self.vocab: list[str] = []

    @classmethod
    def trained(cls, text: str = CORPUS, order: int = 3) -> NGramLM:
        model = cls(order)
        tokens = tokenise(text)
        model.vocab = sorted(set(tokens))
        for n in range(1, order):
            for i in range(len(tokens) - n):
                model.table[tuple(tokens[i : i + n])][tokens[i + n]] += 1
        return model

    def next_token(self, context: list[str], rng: random.Random | None) -> str:
        for n in range(self.order - 1, 0, -1):
            counts = self.table.get(tuple(context[-n:]))
            if counts:
                if rng is None:
                    return counts.most_common(1)[0][0]
                words, weights = zip(*counts.items(), strict=True)
                return rng.choices(words, weights)[0]
        return self.vocab[0] if rng is None else rng.choice(self.vocab)

    def generate(self, prompts: list[str], max_new_tokens: int, seed: int | None = None) -> list[list[str]]:
        """Extend each prompt by exactly `max_new_tokens` tokens (greedy when seed is None)."""
        rng = None if seed is None else random.Random(seed)
        outputs = []
        for prompt in prompts:
            context = tokenise(prompt)
            new: list[str] = []
            for _ in range(max_new_tokens):
                token = self.next_token(context, rng)
                context.append(token)
                new.append(token)
            outputs.append(new)
        return outputs


def synthetic_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = tokenise(CORPUS)
    return [" ".join(rng.sample(words, 6)) for _ in range(n)]
