"""The load generator: streaming completions requests against the server, timed per chunk.

Arrivals follow a Poisson process at `request_rate` (exponential gaps drawn from a
`random.Random(seed)`, so a config always sends the same schedule), or all at once for
`inf`; `concurrency` caps the requests in flight (alone, it keeps that many in flight: a
closed loop). Each request streams `/v1/completions` (or `/v1/chat/completions`) through
httpx and records when it was sent, when each streamed chunk with text arrived, its text and
any per-chunk usage the server gave, the usage of the whole answer, and any error. Chunks
are not tokens (a server may put several tokens in one chunk); `tokens.account_tokens`
turns chunks into tokens once the load is over. The loop is bounded: `n_requests`
requests, each within `REQUEST_TIMEOUT_S` from sending to its last byte (a limit on the
whole request, not per read: a server that trickles bytes cannot hold it open); a server
that exits ends it at once.

`SteadyState` decides, as events happen, when the steady-state window opens and closes
(ML.ENERGY's method: from when the target concurrency or rate is reached until the drain
begins) and calls back so that the meter measures exactly that span.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

REQUEST_TIMEOUT_S = 600.0
SERVER_CHECK_INTERVAL_S = 0.2
PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


@dataclass
class StreamChunk:
    """A streamed chunk that carried text: when it arrived (seconds from the load's start),
    its text, and the cumulative completion tokens the server reported with it, if any
    (vLLM does with `continuous_usage_stats`)."""

    time_s: float
    text: str
    usage_tokens: int | None = None


@dataclass
class RequestRecord:
    """One request, its times in seconds from the load's start (`sent_s`, `done_s`).

    `chunk_tokens` (tokens per chunk, filled by `tokens.account_tokens` after the load)
    makes the token figures count tokens, not chunks; until then each chunk counts as one.
    """

    index: int
    sent_s: float = 0.0
    done_s: float | None = None
    chunks: list[StreamChunk] = field(default_factory=list)
    usage_tokens: int | None = None
    prompt_tokens: int | None = None
    error: str | None = None
    #: Why the server's usage could not be read (a string where a number belongs, say).
    usage_problem: str | None = None
    chunk_tokens: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.done_s is not None

    @property
    def tokens_per_chunk(self) -> list[int]:
        return self.chunk_tokens if len(self.chunk_tokens) == len(self.chunks) else [1] * len(self.chunks)

    @property
    def output_tokens(self) -> int:
        """The tokens this answer holds, as accounted (`tokens.account_tokens`)."""
        return sum(self.tokens_per_chunk)

    @property
    def token_times_s(self) -> list[float]:
        """One arrival time per token: a chunk of k tokens gives k tokens at its arrival."""
        return [c.time_s for c, k in zip(self.chunks, self.tokens_per_chunk, strict=True) for _ in range(k)]

    @property
    def ttft_s(self) -> float | None:
        return self.chunks[0].time_s - self.sent_s if self.chunks else None

    @property
    def e2e_s(self) -> float | None:
        return self.done_s - self.sent_s if self.done_s is not None else None

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (e2e - TTFT) / (tokens - 1)."""
        ttft, e2e, tokens = self.ttft_s, self.e2e_s, self.output_tokens
        if ttft is None or e2e is None or tokens < 2:
            return None
        return (e2e - ttft) / (tokens - 1)

    @property
    def inter_token_s(self) -> list[float]:
        """Per-token gaps: a chunk of k tokens that arrived `gap` seconds after the previous
        chunk gives k gaps of gap / k (its tokens were made over that gap, evenly as far as
        the client can tell). The first chunk's tokens belong to the time to first token and
        give no gap, so there are `output_tokens - tokens of the first chunk` gaps."""
        gaps: list[float] = []
        counts = self.tokens_per_chunk
        for index in range(1, len(self.chunks)):
            k = counts[index]
            gaps.extend([(self.chunks[index].time_s - self.chunks[index - 1].time_s) / k] * k)
        return gaps


def arrival_offsets(n: int, rate: float | None, seed: int) -> list[float]:
    """When each request is due, in seconds from the start: Poisson at `rate`, or all at 0."""
    if rate is None or math.isinf(rate):
        return [0.0] * n
    rng = random.Random(seed)
    offsets, now = [], 0.0
    for _ in range(n):
        offsets.append(now)
        now += rng.expovariate(rate)
    return offsets


class SteadyState:
    """Opens and closes the steady-state window as requests are sent and answered.

    Closed loop (`concurrency` without a finite rate; `inf` alone counts as concurrency
    `n_requests`): the window opens when `target` requests are in flight for the first time
    and closes at the first answer after the last request was sent, when the count falls.
    Open loop (a finite `request_rate`): arrivals follow the schedule from the start, and
    the server's flow is steady once it also answers; the window opens at the first answer
    and closes when the last request is sent. If that order never happens (every request
    was sent before the first answer), there is no steady state, and `note` says so.
    """

    def __init__(
        self,
        n_requests: int,
        rate: float | None,
        concurrency: int | None,
        on_open: Callable[[], None] = lambda: None,
        on_close: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.open_loop = rate is not None and not math.isinf(rate)
        self.target = min(concurrency or n_requests, n_requests)
        self.n_requests = n_requests
        self.on_open, self.on_close, self.clock = on_open, on_close, clock
        self.sent = self.answered = self.in_flight = 0
        self.opened_at: float | None = None
        self.closed_at: float | None = None
        self.note: str | None = None

    def _open(self) -> None:
        if self.opened_at is None and self.note is None:
            self.opened_at = self.clock()
            self.on_open()

    def _close(self) -> None:
        if self.opened_at is not None and self.closed_at is None:
            self.closed_at = self.clock()
            self.on_close()

    def request_sent(self) -> None:
        self.sent += 1
        self.in_flight += 1
        last = self.sent == self.n_requests
        if self.open_loop:
            if last:
                if self.opened_at is None:
                    self.note = (
                        f"no steady state: all {self.n_requests} requests were sent before the first "
                        "answer; send more requests (n_requests=) or at a lower request_rate="
                    )
                self._close()
        elif self.in_flight >= self.target:
            self._open()

    def request_done(self) -> None:
        self.answered += 1
        self.in_flight -= 1
        if self.open_loop:
            if self.sent < self.n_requests:
                self._open()
        elif self.sent == self.n_requests:
            self._close()

    def finish(self) -> None:
        """The load is over: a window still open closes now (the load ended in it)."""
        if self.opened_at is None and self.note is None:
            self.note = "no steady state: the target concurrency was never reached"
        self._close()


def request_body(
    endpoint: str,
    model: str,
    prompt: str,
    max_tokens: int,
    temperature: float,
    stream_options: dict[str, Any],
    extra: dict[str, Any],
) -> dict:
    """The request's JSON: a `prompt` for completions, one user message for chat."""
    text = {"messages": [{"role": "user", "content": prompt}]} if endpoint == "chat" else {"prompt": prompt}
    return {
        "model": model,
        **text,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
        "stream_options": stream_options,
        **extra,
    }


def _whole_number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _chunk_text(choice: Any) -> str:
    """A choice's text: `text` (completions) or `delta.content` (chat); "" when neither."""
    if not isinstance(choice, dict):
        return ""
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    return text if isinstance(text, str) else ""


def read_chunk(chunk: Any, now: float, record: RequestRecord) -> None:
    """One parsed stream chunk into `record`: its text (one `StreamChunk`) and its usage.

    Usage often comes in a chunk of its own with `choices: []`; with continuous usage it
    comes in every chunk, cumulative. A usage the client cannot read is noted, not fatal.
    """
    if not isinstance(chunk, dict):
        record.usage_problem = record.usage_problem or f"a stream chunk is not an object: {str(chunk)[:80]!r}"
        return
    usage = chunk.get("usage")
    completion = None
    if isinstance(usage, dict):
        completion = _whole_number(usage.get("completion_tokens"))
        if completion is None and "completion_tokens" in usage:
            record.usage_problem = (
                f"usage completion_tokens {str(usage.get('completion_tokens'))[:40]!r} is not a whole number"
            )
        prompt = _whole_number(usage.get("prompt_tokens"))
        if prompt is not None:
            record.prompt_tokens = prompt
    elif usage is not None:
        record.usage_problem = f"usage {str(usage)[:40]!r} is not an object"
    choices = chunk.get("choices")
    text = "".join(_chunk_text(c) for c in choices) if isinstance(choices, list) else ""
    if text:
        record.chunks.append(StreamChunk(now, text, completion))
    if completion is not None:
        record.usage_tokens = completion


async def stream_request(
    client: Any, url: str, body: dict, record: RequestRecord, start: float, clock: Callable[[], float]
) -> None:
    """Send one streaming request; fill `record` in (errors are data, never raised)."""
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")[:200]
                record.error = f"HTTP {response.status_code}: {text}"
                return
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                now = clock() - start
                try:
                    chunk = json.loads(data)
                except ValueError:
                    record.error = f"unreadable stream chunk: {data[:100]!r}"
                    return
                if isinstance(chunk, dict) and "error" in chunk:
                    record.error = f"server error: {str(chunk['error'])[:200]}"
                    return
                read_chunk(chunk, now, record)
        record.done_s = clock() - start
    except Exception as exc:  # a failed request is counted, not fatal
        record.error = f"{type(exc).__name__}: {exc}"[:200] or type(exc).__name__


async def bounded_request(
    client: Any,
    url: str,
    body: dict,
    record: RequestRecord,
    start: float,
    clock: Callable[[], float],
    limit_s: float,
) -> None:
    """`stream_request` within `limit_s` from sending to the last byte; past it, an error."""
    try:
        await asyncio.wait_for(stream_request(client, url, body, record, start, clock), limit_s)
    except asyncio.TimeoutError:
        record.done_s = None
        record.error = f"no complete answer within {limit_s:g} s (the limit on a whole request)"


@dataclass
class LoadPlan:
    base_url: str
    model: str
    prompts: list[str]
    max_tokens: int
    temperature: float
    rate: float | None
    concurrency: int | None
    seed: int
    extra_body: dict[str, Any] = field(default_factory=dict)
    request_timeout_s: float = REQUEST_TIMEOUT_S
    endpoint: str = "completions"
    #: OpenAI's `include_usage`; vLLM's `continuous_usage_stats` where the server takes it.
    stream_options: dict[str, Any] = field(default_factory=lambda: {"include_usage": True})


async def _watch_server(check_alive: Callable[[], None]) -> None:
    while True:
        check_alive()  # raises when the server has exited
        await asyncio.sleep(SERVER_CHECK_INTERVAL_S)


async def run_load_async(
    plan: LoadPlan,
    steady: SteadyState | None = None,
    check_alive: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[RequestRecord], float]:
    """Send every prompt of `plan`; the records and the load's start on `clock`."""
    import httpx

    offsets = arrival_offsets(len(plan.prompts), plan.rate, plan.seed)
    slots = asyncio.Semaphore(plan.concurrency) if plan.concurrency else None
    records = [RequestRecord(index=i) for i in range(len(plan.prompts))]
    url = plan.base_url + PATHS[plan.endpoint]
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    # Per read; the whole request's limit is `bounded_request`'s.
    timeout = httpx.Timeout(plan.request_timeout_s, connect=30.0)
    start = clock()

    async def one(index: int) -> None:
        delay = start + offsets[index] - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        if slots is not None:
            await slots.acquire()
        try:
            record = records[index]
            record.sent_s = clock() - start
            if steady is not None:
                steady.request_sent()
            body = request_body(
                plan.endpoint,
                plan.model,
                plan.prompts[index],
                plan.max_tokens,
                plan.temperature,
                plan.stream_options,
                plan.extra_body,
            )
            await bounded_request(client, url, body, record, start, clock, plan.request_timeout_s)
            if steady is not None:
                steady.request_done()
        finally:
            if slots is not None:
                slots.release()

    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        watcher = asyncio.ensure_future(_watch_server(check_alive))
        requests = asyncio.gather(*(one(i) for i in range(len(records))))
        try:
            done, _ = await asyncio.wait({watcher, requests}, return_when=asyncio.FIRST_COMPLETED)
            if watcher in done:
                requests.cancel()
                watcher.result()  # raises the server's failure
            await requests
            check_alive()  # requests that failed fast may have beaten the watcher to a dead server
        finally:
            watcher.cancel()
            requests.cancel()
            await asyncio.gather(watcher, requests, return_exceptions=True)
    if steady is not None:
        steady.finish()
    return records, start


def run_load(
    plan: LoadPlan,
    steady: SteadyState | None = None,
    check_alive: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[RequestRecord], float]:
    return asyncio.run(run_load_async(plan, steady, check_alive, clock))
