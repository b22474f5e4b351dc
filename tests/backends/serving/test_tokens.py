"""Tokens, not chunks: how a streamed answer's tokens are counted, and when usage is not believed."""

from __future__ import annotations

import pytest
from serving_loads import (
    chunked,
    summarise_records,
)

from pytest_llem.backends.serving.loadgen import (
    RequestRecord,
    read_chunk,
)
from pytest_llem.backends.serving.tokens import spread


def test_a_chunk_of_k_tokens_counts_k_tokens_at_its_arrival_and_k_per_token_gaps():
    # Two tokens a chunk, usage in a final chunk of its own: 8 tokens in 4 chunks each.
    two = [" t0 t1", " t2 t3", " t4 t5", " t6 t7"]
    records = [chunked(0, 0.0, [1.0, 2.0, 3.0, 4.0], two, 8), chunked(1, 0.0, [1.5, 2.5, 3.5, 4.5], two, 8)]
    summary = summarise_records(records, steady_span=(1.8, 3.6))
    assert summary.output_tokens == 16 and summary.token_mismatches == summary.impossible_usage == 0
    assert summary.token_source == "chunks" and summary.warnings == []
    assert [r.chunk_tokens for r in records] == [[2, 2, 2, 2]] * 2
    # 4 chunks in [1.8, 3.6], 2 tokens each: 50 J / 8 tokens, not 50 J / 4 chunks.
    assert summary.steady.output_tokens == 8 and summary.energy_per_output_token_j == pytest.approx(6.25)
    # Per-token gaps: each later chunk's 1 s gap is 2 tokens of 0.5 s.
    assert summary.itl.count == 12 and summary.itl.max_s == pytest.approx(0.5)
    assert summary.tpot.p50_s == pytest.approx((4.01 - 1.0) / 7)


def test_per_chunk_usage_and_the_tokenizer_count_each_chunk_and_usage_sets_the_total():
    exact = RequestRecord(0, 0.0, 3.0)
    for time_s, cumulative in ((1.0, 1), (2.0, 4), (3.0, 5)):  # vLLM's continuous usage
        read_chunk(
            {"choices": [{"text": "x" * cumulative}], "usage": {"completion_tokens": cumulative}},
            time_s,
            exact,
        )
    read_chunk({"choices": [], "usage": {"completion_tokens": 5}}, 3.0, exact)
    counted = chunked(1, 0.0, [1.0, 2.0], ["a b c", "d"], 4)
    words = chunked(2, 0.0, [1.0, 2.0], ["a b c", "d"], 9)  # the tokenizer says 4: off by more than 2
    summary = summarise_records([exact, counted, words], count_text=lambda text: len(text.split()))
    assert exact.chunk_tokens == [1, 3, 1] and counted.chunk_tokens == [3, 1]
    assert words.chunk_tokens == [7, 2] and summary.output_tokens == 5 + 4 + 9
    assert summary.token_source == "tokenizer (2), usage_per_chunk (1)"
    assert summary.token_mismatches == 1
    (mismatch,) = summary.warnings
    assert mismatch.code == "token_mismatch" and mismatch.message.startswith(
        "1 of 3 requests: usage disagrees with what was streamed; usage counted (request 2: usage says 9"
    )


def test_usage_the_stream_cannot_hold_or_cannot_read_is_flagged_and_not_believed():
    liar = chunked(0, 0.0, [1.0, 2.0], [" t0", " t1"], 1_000_000)
    too_few = chunked(1, 0.0, [1.0, 2.0, 3.0], [" t0", " t1", " t2"], 2)
    text = chunked(2, 0.0, [1.0, 2.0], [" t0", " t1"], "2")  # a string where a number belongs
    honest = chunked(3, 0.0, [1.0, 2.0], [" t0", " t1"], 2)
    summary = summarise_records([liar, too_few, text, honest])
    assert summary.output_tokens == 2 + 3 + 2 + 2  # the stream's own count where usage is doubtful
    assert (summary.impossible_usage, summary.token_mismatches) == (2, 1)
    flags = {w.code: w.message for w in summary.warnings}
    assert flags["impossible_usage"].startswith("2 of 4 requests: usage the streamed text cannot hold")
    assert (
        "request 0: usage claims 1000000 completion tokens, 2 chunks of text were streamed"
        in flags["impossible_usage"]
    )
    assert "request 2: usage completion_tokens '2' is not a whole number" in flags["token_mismatch"]


def test_a_total_is_spread_over_chunks_in_proportion_each_chunk_keeping_a_token():
    assert spread(8, [2, 2, 2, 2]) == [2, 2, 2, 2]  # estimates that add up come back unchanged
    assert spread(9, [3, 1]) == [7, 2]  # 6.75 and 2.25: the larger remainder gets the extra token
    assert spread(4, [100, 1, 1]) == [2, 1, 1]  # no chunk drops to zero tokens
    assert sum(spread(17, [5, 3, 1, 1])) == 17
