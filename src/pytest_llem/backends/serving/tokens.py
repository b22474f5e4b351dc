"""From streamed chunks to tokens: how many tokens each chunk held, checked against usage.

A chunk is not a token: servers put several tokens in one chunk under load or where
detokenisation waits for a whole character. After the load, each request's chunks get a
token count (`RequestRecord.chunk_tokens`), from the best source its answer allows:

- `usage_per_chunk`: every chunk carried the server's cumulative completion tokens (vLLM
  with `continuous_usage_stats`): exact.
- `tokenizer`: the model's tokenizer counted each chunk's text: an estimate (text tokenised
  again need not give back the tokens generated).
- `chunks`: one token per chunk, the least a chunk with text holds.

The server's final usage, where it is possible, sets the request's total and the per-chunk
counts are spread to match it (each chunk keeps at least one token). It is checked first:

- `impossible_usage`: more tokens than the streamed text can hold (its UTF-8 bytes plus one
  per chunk plus `IMPOSSIBLE_SLACK_TOKENS`), or fewer than the chunks that carried text. The
  claim is not believed: the stream's own count stands, and the result is flagged, so the
  gate leaves it out.
- `token_mismatch`: usage disagrees with the stream's exact count, with the tokenizer's
  estimate by more than `TOKENIZER_TOLERANCE` (at least `TOKENIZER_TOLERANCE_TOKENS`), or
  could not be read at all. Usage sets the figures; the result is flagged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pytest_llem.backends.serving.loadgen import RequestRecord

USAGE_PER_CHUNK = "usage_per_chunk"
TOKENIZER = "tokenizer"
CHUNKS = "chunks"
#: Tokens a claim may exceed the streamed text's bytes (plus one per chunk) by: special
#: tokens that print nothing.
IMPOSSIBLE_SLACK_TOKENS = 16
#: How far usage may differ from the tokenizer's estimate before it counts as a disagreement.
TOKENIZER_TOLERANCE = 0.1
TOKENIZER_TOLERANCE_TOKENS = 2

#: Counts the tokens of a piece of text (the model's tokenizer).
TextCounter = Callable[[str], int]


@dataclass
class TokenCheck:
    """How one request's tokens were counted, and what its usage said."""

    source: str
    verdict: str | None = None  # None, "mismatch" or "impossible"
    detail: str = ""


def spread(total: int, weights: Sequence[int]) -> list[int]:
    """`total` tokens over chunks of estimated sizes `weights` (each >= 1; `total` at least
    their number): in proportion to the estimates, each chunk at least one token, rounded
    by largest remainder. Estimates that already add up to `total` come back unchanged."""
    whole = sum(weights)
    raw = [total * w / whole for w in weights]
    shares = [max(1, int(r)) for r in raw]
    while sum(shares) < total:
        shares[max(range(len(raw)), key=lambda i: raw[i] - shares[i])] += 1
    while sum(shares) > total:  # chunks raised to one token gave the others less
        shares[max((i for i in range(len(raw)) if shares[i] > 1), key=lambda i: shares[i] - raw[i])] -= 1
    return shares


def _per_chunk_usage(record: RequestRecord) -> list[int] | None:
    """Tokens per chunk from cumulative per-chunk usage; None unless every chunk has it, rising."""
    counts, before = [], 0
    for chunk in record.chunks:
        if chunk.usage_tokens is None or chunk.usage_tokens <= before:
            return None
        counts.append(chunk.usage_tokens - before)
        before = chunk.usage_tokens
    return counts


def account_tokens(record: RequestRecord, count_text: TextCounter | None) -> TokenCheck:
    """Fill `record.chunk_tokens`; how they were counted and what the usage check found."""
    chunks = record.chunks
    if not chunks:
        record.chunk_tokens = []
        return TokenCheck(CHUNKS)
    exact = _per_chunk_usage(record)
    if exact is not None:
        check, estimate = TokenCheck(USAGE_PER_CHUNK), exact
    elif count_text is not None:
        check, estimate = TokenCheck(TOKENIZER), [max(1, count_text(c.text)) for c in chunks]
    else:
        check, estimate = TokenCheck(CHUNKS), [1] * len(chunks)
    record.chunk_tokens = estimate
    streamed = sum(estimate)
    if record.usage_problem is not None:
        check.verdict, check.detail = "mismatch", record.usage_problem
        return check
    usage = record.usage_tokens
    if usage is None:
        return check
    most = sum(len(c.text.encode()) for c in chunks) + len(chunks) + IMPOSSIBLE_SLACK_TOKENS
    if usage > most or usage < len(chunks):
        check.verdict = "impossible"
        check.detail = (
            f"usage claims {usage} completion tokens, {len(chunks)} chunks of text were streamed "
            f"({most - IMPOSSIBLE_SLACK_TOKENS - len(chunks)} bytes)"
        )
        return check
    if check.source == USAGE_PER_CHUNK:
        differs = usage != streamed
    elif check.source == TOKENIZER:
        differs = abs(usage - streamed) > max(TOKENIZER_TOLERANCE_TOKENS, TOKENIZER_TOLERANCE * usage)
    else:
        differs = False  # one token per chunk is a floor, and usage is above it
    if differs:
        check.verdict = "mismatch"
        check.detail = f"usage says {usage} completion tokens, the stream's {check.source} count {streamed}"
    record.chunk_tokens = spread(usage, estimate)
    return check
