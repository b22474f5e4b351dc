"""What the server says about itself during the load: its Prometheus `/metrics`, scraped.

vLLM serves Prometheus text at `/metrics`; of it pytest-llem reads the KV cache's share in use
(`vllm:kv_cache_usage_perc`, `vllm:gpu_cache_usage_perc` before vLLM 0.10), the requests
running and waiting, and the preemption counter (`vllm:num_preemptions_total`). Series of
several engines (data parallel) or label sets are added up, except the KV cache, whose
fullest engine is the one that throttles. Other metrics are ignored, and so are values that
are not finite numbers (NaN, +Inf) or are negative.

`probe` asks once, before the load, whether the server has such metrics: a server without
them (HTTP 404, connection refused, not Prometheus text, none of these names) is not an
error, and the load runs without a scraper at all. `Scraper` scrapes in a thread of its own,
every `SCRAPE_INTERVAL_S` at most and each within `SCRAPE_TIMEOUT_S`, so it never holds up
the load's event loop; each sample is timed on `time.perf_counter`, the meter's clock, at the
middle of its request. `summarise_scrapes` turns a load's samples into a `ServerMetrics` on
the power timeline. No message quotes a request's headers or a response's body.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_llem.energy.devices import thin_timeline
from pytest_llem.energy.quality import KV_CACHE_FULL
from pytest_llem.extras import import_extra
from pytest_llem.results import ServerMetrics, ServerMetricsSample

if TYPE_CHECKING:
    import httpx

METRICS_PATH = "/metrics"
#: Scrapes at 2 Hz at most: a few points per second of load (AIPerf's default is 3 Hz), and
#: a small share of a busy server's API time.
SCRAPE_INTERVAL_S = 0.5
#: A scrape that takes longer is dropped: the next one is due.
SCRAPE_TIMEOUT_S = 1.0
PURPOSE = "reading a server's /metrics"
NO_METRICS = "server exposes no metrics"

#: The names read, for each figure; where a figure has several, the first one present counts.
KV_CACHE_NAMES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
RUNNING_NAMES = ("vllm:num_requests_running",)
WAITING_NAMES = ("vllm:num_requests_waiting",)
PREEMPTION_NAMES = ("vllm:num_preemptions_total",)
_FIGURES = {
    "kv_cache_usage": KV_CACHE_NAMES,
    "requests_running": RUNNING_NAMES,
    "requests_waiting": WAITING_NAMES,
    "preemptions": PREEMPTION_NAMES,
}
#: Every metric name read, in `_FIGURES`' order.
_ALL_NAMES = tuple(name for names in _FIGURES.values() for name in names)


class NotPrometheus(ValueError):
    """The text is not Prometheus's exposition format."""


@dataclass(frozen=True)
class Reading:
    """One scrape's figures (None where the server gave none) and the metric names they came from."""

    kv_cache_usage: float | None = None
    requests_running: float | None = None
    requests_waiting: float | None = None
    preemptions: float | None = None
    names: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.names


def parse_metrics(text: str) -> Reading:
    """The figures pytest-llem reads from Prometheus text; `NotPrometheus` when it is not that."""
    parser = import_extra("prometheus_client.parser", "serving", PURPOSE)
    values: dict[str, list[float]] = {}
    wanted = set(_ALL_NAMES)
    try:
        for family in parser.text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in wanted:
                    values.setdefault(sample.name, []).append(float(sample.value))
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise NotPrometheus(f"not Prometheus text ({type(exc).__name__})") from None
    figures: dict[str, float | None] = {}
    names: list[str] = []
    for figure, candidates in _FIGURES.items():
        figures[figure] = None
        for name in candidates:
            usable = [v for v in values.get(name, []) if math.isfinite(v) and v >= 0]
            if usable:
                figures[figure] = max(usable) if figure == "kv_cache_usage" else sum(usable)
                names.append(name)
                break
    return Reading(**figures, names=tuple(names))


def counter_increase(values: list[float]) -> float | None:
    """How much a counter rose over `values` (read in order), as Prometheus's `increase`: a
    value below the one before is a reset (the server restarted it), counted from zero."""
    if not values:
        return None
    total = 0.0
    for before, after in zip(values, values[1:], strict=False):
        total += after - before if after >= before else after
    return total


class _NotOk(Exception):
    """The server answered, with a status other than 200."""

    def __init__(self, status: int) -> None:
        super().__init__(f"{METRICS_PATH} answered HTTP {status}")


def _describe_failure(exc: Exception, timeout_s: float) -> str:
    """A failed scrape in a few words: its kind, never a header or a body."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused"
    if isinstance(exc, NotPrometheus):
        return f"{METRICS_PATH} is {exc}"
    if isinstance(exc, _NotOk):
        return str(exc)
    return type(exc).__name__


def scrape_once(client: httpx.Client, url: str) -> Reading:
    """GET `url` and parse it; raises on HTTP errors, a non-200 status or text that is not Prometheus's."""
    response = client.get(url)
    if response.status_code != 200:
        raise _NotOk(response.status_code)
    return parse_metrics(response.text)


def probe(base_url: str, headers: Mapping[str, str] | None = None) -> str | None:
    """None when the server's `/metrics` has figures pytest-llem reads, else the one line that
    says why not ("server exposes no metrics: ..."). Tried a few times, since a busy server may
    miss one timeout; an answer that is not metrics is final."""
    import httpx

    url = base_url + METRICS_PATH
    with httpx.Client(timeout=SCRAPE_TIMEOUT_S, trust_env=False, headers=dict(headers or {})) as client:
        why = ""
        for _ in range(3):
            try:
                reading = scrape_once(client, url)
            except httpx.TimeoutException as exc:
                why = _describe_failure(exc, SCRAPE_TIMEOUT_S)
                continue
            except (httpx.HTTPError, NotPrometheus, _NotOk) as exc:
                return f"{NO_METRICS}: {_describe_failure(exc, SCRAPE_TIMEOUT_S)}"
            if reading.empty:
                return f"{NO_METRICS}: {METRICS_PATH} has none of {', '.join(_ALL_NAMES)}"
            return None
        return f"{NO_METRICS}: {METRICS_PATH}: {why}, three times"


@dataclass
class Scrape:
    """A sample: when (`time.perf_counter`, the middle of its request) and what was read."""

    moment: float
    reading: Reading


@dataclass
class Scraper:
    """Scrapes `base_url`'s `/metrics` in a thread of its own from `start()` until `stop()`."""

    base_url: str
    interval_s: float = SCRAPE_INTERVAL_S
    timeout_s: float = SCRAPE_TIMEOUT_S
    headers: Mapping[str, str] = field(default_factory=dict)
    clock: Callable[[], float] = time.perf_counter
    scrapes: list[Scrape] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        import httpx

        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Made here, before the measured window: a client takes a while to set up (its TLS
        # context, even for plain HTTP), which the first scrape would otherwise wait for.
        self._client = httpx.Client(timeout=self.timeout_s, trust_env=False, headers=dict(self.headers))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pytest-llem-server-metrics", daemon=True)
        self._thread.start()

    def halt(self) -> None:
        """Ask the thread to stop, without waiting for a scrape in flight (the measured window
        closes at once: it must not wait up to `timeout_s` for the server)."""
        self._stop.set()

    def stop(self) -> None:
        """Halt, wait for the thread to end, and close the client."""
        self.halt()
        if self._thread is not None:
            self._thread.join()
        self._client.close()

    def _loop(self) -> None:
        url = self.base_url + METRICS_PATH
        while not self._stop.is_set():
            sent = self.clock()
            try:
                reading = scrape_once(self._client, url)
            except Exception as exc:  # a missed scrape is a gap in the series, never a failed load
                self.failures.append(_describe_failure(exc, self.timeout_s))
            else:
                self.scrapes.append(Scrape((sent + self.clock()) / 2, reading))
            self._stop.wait(max(0.0, self.interval_s - (self.clock() - sent)))


def summarise_scrapes(
    scrapes: list[Scrape],
    failures: list[str],
    on_timeline: Callable[[float], float],
    steady: tuple[float, float] | None,
    interval_s: float = SCRAPE_INTERVAL_S,
    until_s: float | None = None,
) -> ServerMetrics:
    """One load's samples as a `ServerMetrics`: the series on the power timeline (`on_timeline`
    maps a `time.perf_counter` moment onto it), and the shares saturation is judged on, over
    `steady` (its opening and closing moments) when the load had a steady state. Samples past
    `until_s` on the timeline (the measured window's end) are left out: not the load's."""
    scrapes = [s for s in scrapes if until_s is None or on_timeline(s.moment) <= until_s]
    in_span = [s.reading for s in scrapes if steady is None or steady[0] <= s.moment <= steady[1]]
    waiting = [r.requests_waiting for r in in_span if r.requests_waiting is not None]
    kv = [r.kv_cache_usage for r in in_span if r.kv_cache_usage is not None]
    all_kv = [s.reading.kv_cache_usage for s in scrapes if s.reading.kv_cache_usage is not None]
    counts = [s.reading.preemptions for s in scrapes if s.reading.preemptions is not None]
    names = sorted({name for s in scrapes for name in s.reading.names})
    note = None
    if not scrapes:
        why = failures[0] if failures else "none was sent"
        note = f"server metrics not read: no scrape answered during the load ({why})"
    return ServerMetrics(
        exposed=bool(scrapes),
        note=note,
        names=names,
        scrapes=len(scrapes),
        failed_scrapes=len(failures),
        interval_s=interval_s,
        timeline=thin_timeline(
            [
                ServerMetricsSample(
                    t_s=on_timeline(s.moment),
                    kv_cache_usage=s.reading.kv_cache_usage,
                    requests_running=s.reading.requests_running,
                    requests_waiting=s.reading.requests_waiting,
                    preemptions=s.reading.preemptions,
                )
                for s in scrapes
            ]
        ),
        judged_over="whole" if steady is None else "steady",
        judged_samples=len(in_span),
        waiting_share=sum(1 for w in waiting if w > 0) / len(waiting) if waiting else None,
        kv_cache_full_share=sum(1 for k in kv if k >= KV_CACHE_FULL) / len(kv) if kv else None,
        peak_kv_cache_usage=max(all_kv) if all_kv else None,
        preemptions=counter_increase(counts),
    )


def absent(note: str) -> ServerMetrics:
    """The `ServerMetrics` of a server that exposes none: the one line that says why."""
    return ServerMetrics(exposed=False, note=note)
