"""A server's Prometheus /metrics: parsing, counters, the scraper against real local servers."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from pytest_llem.backends.serving import metrics
from pytest_llem.backends.serving.metrics import (
    NotPrometheus,
    Reading,
    Scrape,
    Scraper,
    counter_increase,
    parse_metrics,
    probe,
    summarise_scrapes,
)

VLLM_TEXT = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 1234.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
vllm:num_requests_waiting{engine="1",model_name="m"} 0.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.1
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.75
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="m"} 4.0
vllm:num_preemptions_created{engine="0",model_name="m"} 1.7e9
vllm:num_preemptions_total{engine="1",model_name="m"} 1.0
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",model_name="m",le="+Inf"} 9.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="m"} 9.0
"""


def test_vllm_text_gives_engines_added_up_and_the_fullest_kv_cache_under_its_current_name():
    reading = parse_metrics(VLLM_TEXT)
    assert reading == Reading(
        kv_cache_usage=0.75,  # the fuller engine's, and the current name over the deprecated one
        requests_running=5.0,
        requests_waiting=1.0,
        preemptions=5.0,
        names=(
            "vllm:kv_cache_usage_perc",
            "vllm:num_requests_running",
            "vllm:num_requests_waiting",
            "vllm:num_preemptions_total",
        ),
    )


def test_the_kv_caches_name_before_vllm_0_10_is_read_and_unknown_metrics_are_ignored():
    text = "vllm:gpu_cache_usage_perc 0.5\nsomething_else_entirely 42\nvllm:num_requests_swapped 3\n"
    assert parse_metrics(text) == Reading(kv_cache_usage=0.5, names=("vllm:gpu_cache_usage_perc",))
    assert parse_metrics("process_cpu_seconds_total 3.5\n").empty
    assert parse_metrics("").empty


def test_values_that_are_not_finite_numbers_or_are_negative_are_not_figures():
    text = (
        "vllm:num_requests_running NaN\n"
        "vllm:num_requests_waiting +Inf\n"
        "vllm:kv_cache_usage_perc -Inf\n"
        'vllm:num_preemptions_total{engine="0"} -1\n'
        'vllm:num_preemptions_total{engine="1"} 2\n'
    )
    # A NaN engine does not hide the other's figure; a figure with no usable value is None.
    assert parse_metrics(text) == Reading(preemptions=2.0, names=("vllm:num_preemptions_total",))


@pytest.mark.parametrize(
    "text",
    [
        "<html><body><h1>Dashboard</h1></body></html>",
        '{"detail": "Not Found"}',
        "vllm:num_requests_running three",
        'vllm:num_requests_running{engine="0" 1.0',
    ],
)
def test_text_that_is_not_prometheus_is_refused(text):
    with pytest.raises(NotPrometheus, match=r"^not Prometheus text \(\w+\)$"):
        parse_metrics(text)


def test_a_counter_rises_by_its_steps_and_a_reset_counts_from_zero():
    assert counter_increase([]) is None
    assert counter_increase([7.0]) == 0.0
    assert counter_increase([3.0, 3.0, 5.0, 9.0]) == 6.0
    # The server restarted its counter at 9: it counted 2 since, on top of the 6 before.
    assert counter_increase([3.0, 9.0, 2.0, 2.0]) == 8.0


def test_a_loads_scrapes_land_on_the_timeline_and_saturation_is_judged_over_the_steady_state():
    def at(moment: float, waiting: float, kv: float, preemptions: float) -> Scrape:
        return Scrape(moment, Reading(kv, 2.0, waiting, preemptions, names=("vllm:kv_cache_usage_perc",)))

    scrapes = [
        at(100.0, 0, 0.1, 5),
        at(100.5, 3, 0.97, 5),
        at(101.0, 2, 0.99, 6),
        at(101.5, 0, 0.5, 4),  # a reset: counted from zero
        at(102.0, 0, 0.2, 4),
    ]
    # The window opened at 99.9 after 10 s of earlier windows.
    summary = summarise_scrapes(scrapes, ["no answer within 1 s"], lambda m: 10.0 + m - 99.9, (100.4, 101.6))
    assert [round(s.t_s, 6) for s in summary.timeline] == [10.1, 10.6, 11.1, 11.6, 12.1]
    assert (summary.scrapes, summary.failed_scrapes, summary.judged_over, summary.judged_samples) == (
        5,
        1,
        "steady",
        3,
    )
    assert summary.waiting_share == pytest.approx(2 / 3)
    assert summary.kv_cache_full_share == pytest.approx(2 / 3)
    assert summary.peak_kv_cache_usage == 0.99
    assert summary.preemptions == 5.0
    assert summary.exposed and summary.note is None
    whole = summarise_scrapes(scrapes, [], lambda m: m, None)
    assert (whole.judged_over, whole.judged_samples, whole.waiting_share) == ("whole", 5, 0.4)
    # A scrape that ended after the window closed is not the load's.
    cut = summarise_scrapes(scrapes, [], lambda m: 10.0 + m - 99.9, None, until_s=11.7)
    assert [round(s.t_s, 6) for s in cut.timeline] == [10.1, 10.6, 11.1, 11.6] and cut.scrapes == 4


def test_no_scrape_answered_says_why_once():
    summary = summarise_scrapes([], ["no answer within 1 s"] * 7, lambda m: m, None)
    assert not summary.exposed and summary.failed_scrapes == 7
    assert (
        summary.note == "server metrics not read: no scrape answered during the load (no answer within 1 s)"
    )


# --- against real local servers ----------------------------------------------------------


class MetricsServer:
    """A real HTTP server on 127.0.0.1: /metrics answers `text` after `delay_s`, or `status`."""

    def __init__(self) -> None:
        self.text = VLLM_TEXT
        self.status = 200
        self.delay_s = 0.0
        self.requests: list[tuple[float, dict[str, str]]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner.requests.append((time.perf_counter(), dict(self.headers)))
                time.sleep(owner.delay_s)
                body = owner.text.encode() if self.path == "/metrics" else b"no"
                self.send_response(owner.status if self.path == "/metrics" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:  # the scraper gave up waiting
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    running = MetricsServer()
    yield running
    running.close()


def test_probe_says_none_for_a_server_with_metrics_and_why_for_one_without(server):
    assert probe(server.url) is None
    server.status = 404
    assert probe(server.url) == "server exposes no metrics: /metrics answered HTTP 404"
    server.status, server.text = 200, "<html>hello</html>"
    assert probe(server.url) == "server exposes no metrics: /metrics is not Prometheus text (ValueError)"
    server.text = "process_cpu_seconds_total 1.0\n"
    assert probe(server.url) == (
        "server exposes no metrics: /metrics has none of vllm:kv_cache_usage_perc, "
        "vllm:gpu_cache_usage_perc, vllm:num_requests_running, vllm:num_requests_waiting, "
        "vllm:num_preemptions_total"
    )
    url = server.url
    server.close()
    assert probe(url) == "server exposes no metrics: connection refused"


def test_probe_gives_a_slow_server_three_tries(server, monkeypatch):
    monkeypatch.setattr(metrics, "SCRAPE_TIMEOUT_S", 0.2)
    server.delay_s = 0.5
    assert probe(server.url) == "server exposes no metrics: /metrics: no answer within 0.2 s, three times"
    assert len(server.requests) == 3


def test_the_scraper_keeps_its_pace_times_each_sample_on_the_meters_clock_and_sends_the_headers(server):
    scraper = Scraper(server.url, interval_s=0.1, headers={"Authorization": "Bearer sk-scrape9secret"})
    before = time.perf_counter()
    scraper.start()
    deadline = time.monotonic() + 30  # a loaded machine may start the thread late
    while len(scraper.scrapes) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    scraper.stop()
    after = time.perf_counter()
    assert len(scraper.scrapes) >= 5 and scraper.failures == []
    assert len(server.requests) == len(scraper.scrapes)  # stopped: no scrape after stop()
    moments = [s.moment for s in scraper.scrapes]
    assert before < moments[0] and moments == sorted(moments) and moments[-1] < after
    # At most one scrape per interval, never a burst (unpaced, five would arrive within some
    # 50 ms). Judged over the whole run as the server received them: on a busy machine one
    # request may arrive late and the next on time, so two arrivals can be closer than the
    # scraper sent them; the first's lateness is allowed for once.
    sent = [t for t, _ in server.requests]
    assert sent[-1] - sent[0] >= (len(sent) - 1) * 0.1 - 0.1
    assert all(headers["Authorization"] == "Bearer sk-scrape9secret" for _, headers in server.requests)
    assert scraper.scrapes[0].reading == parse_metrics(VLLM_TEXT)


def test_a_slow_or_failing_server_leaves_gaps_and_reasons_that_quote_no_header_or_body(server):
    server.delay_s = 0.4
    secret = {"Authorization": "Bearer sk-9secret"}
    scraper = Scraper(server.url, interval_s=0.05, timeout_s=0.1, headers=secret)
    scraper.start()

    def wait_for(condition) -> None:
        deadline = time.monotonic() + 30  # a loaded machine may be slow to get there
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.02)

    wait_for(lambda: "no answer within 0.1 s" in scraper.failures)
    server.delay_s, server.status, server.text = 0.0, 401, "denied for Bearer sk-9secret"
    wait_for(lambda: "/metrics answered HTTP 401" in scraper.failures)
    server.status, server.text = 200, VLLM_TEXT
    wait_for(lambda: bool(scraper.scrapes))
    started = time.perf_counter()
    scraper.stop()
    assert time.perf_counter() - started < 2.0  # stopping waits for one short scrape at most
    assert "no answer within 0.1 s" in scraper.failures
    assert "/metrics answered HTTP 401" in scraper.failures
    assert scraper.scrapes, "the server answered again, and was scraped again"
    assert not any("secret" in failure for failure in scraper.failures)
    summary = summarise_scrapes(scraper.scrapes, scraper.failures, lambda m: m, None)
    assert "secret" not in summary.model_dump_json()
