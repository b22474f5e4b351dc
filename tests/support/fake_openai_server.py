"""A small OpenAI-compatible server for the serving tests' failure modes (standard library only).

    python fake_openai_server.py --port P [--token-delay S] [--tokens-per-chunk K] [--claim-tokens N]
                           [--usage-as-string] [--trickle S] [--never-healthy] [--die-after N]
                           [--fail-every N] [--ignore-term --children K --pid-file F]
                           [--batch-size B] [--kv-tokens T] [--metrics new|old|both|none|garbage]
                           [--metrics-delay S]

It answers `/health` and streams `/v1/completions` and `/v1/chat/completions` as real servers
do: K tokens per chunk (` t0 t1` for K=2; the last chunk may hold fewer), the finish reason in
the last chunk with text, and the usage in a final chunk of its own with `choices: []` when
the request asks for it (`stream_options.include_usage`); in every chunk too, cumulative,
when it asks for `continuous_usage_stats` (as vLLM does). The switches make it misbehave:
claim N completion tokens whatever it streamed, report them as a string, trickle
keep-alive bytes for S seconds before answering, never be healthy, exit with status 3 once
N requests have arrived, answer every Nth request with HTTP 500, or ignore SIGTERM with K
children that ignore it too (their PIDs and its own go to the pid file). It listens on
127.0.0.1 only.

It schedules like vLLM: at most B requests run at once (`--batch-size`) and the others wait
in a queue, first come first served; a running request holds its prompt's and its streamed
tokens in a KV cache of T tokens (`--kv-tokens`), and when the next token does not fit, the
newest running request is preempted: back to the queue's front, its tokens freed, its stream
paused until it is admitted again (recomputed, as vLLM's default does). `/metrics` answers
Prometheus text as vLLM's does: HELP and TYPE lines, `engine` and `model_name` labels,
floats written `3.0`, the counter as `vllm:num_preemptions_total` beside its `_created`
sample, a histogram's buckets and the process's own metrics around the ones read; with the
KV cache's current name (`new`), its name before vLLM 0.10 (`old`), or both as vLLM 0.10
did; `none` answers 404 (as `transformers serve` does), `garbage` an HTML page with 200;
`--metrics-delay` makes each answer that slow.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STUBBORN_CHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
DIE_STATUS = 3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-delay", type=float, default=0.005, help="seconds per chunk")
    parser.add_argument("--tokens-per-chunk", type=int, default=1)
    parser.add_argument("--claim-tokens", type=int, default=0)
    parser.add_argument("--usage-as-string", action="store_true")
    parser.add_argument("--trickle", type=float, default=0.0)
    parser.add_argument("--never-healthy", action="store_true")
    parser.add_argument("--die-after", type=int, default=0)
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--children", type=int, default=0)
    parser.add_argument("--pid-file")
    parser.add_argument("--batch-size", type=int, default=0, help="requests running at once (0: no limit)")
    parser.add_argument("--kv-tokens", type=int, default=0, help="KV cache size in tokens (0: no limit)")
    parser.add_argument("--metrics", choices=("new", "old", "both", "none", "garbage"), default="new")
    parser.add_argument("--metrics-delay", type=float, default=0.0)
    args = parser.parse_args()
    scheduler = Scheduler(args.batch_size, args.kv_tokens)
    started = time.time()

    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    kids = [subprocess.Popen([sys.executable, "-c", STUBBORN_CHILD]) for _ in range(args.children)]
    if args.pid_file:
        with open(args.pid_file + ".tmp", "w") as out:
            json.dump([os.getpid(), *(k.pid for k in kids)], out)
        os.replace(args.pid_file + ".tmp", args.pid_file)

    arrived = 0
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *values: object) -> None:
            sys.stderr.write("stub: " + (format % values) + "\n")

        def do_GET(self) -> None:
            if self.path == "/metrics" and args.metrics != "none":
                time.sleep(args.metrics_delay)
                page = "<html><body><h1>Dashboard</h1></body></html>"
                text = page if args.metrics == "garbage" else scheduler.exposition(args.metrics, started)
                data = text.encode()
                self.send_response(200)
                prometheus = "text/plain; version=0.0.4; charset=utf-8"
                self.send_header("Content-Type", "text/html" if args.metrics == "garbage" else prometheus)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            healthy = self.path == "/health" and not args.never_healthy
            known = self.path in ("/health", "/v1/models")
            self.send_response(200 if healthy else 503 if known else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            nonlocal arrived
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                arrived += 1
                if args.die_after and arrived > args.die_after:
                    sys.stderr.write(f"stub: dying with status {DIE_STATUS}\n")
                    sys.stderr.flush()
                    os._exit(DIE_STATUS)
                fail = args.fail_every and arrived % args.fail_every == 0
            if fail:
                self.send_response(500)
                self.send_header("Content-Length", "4")
                self.end_headers()
                self.wfile.write(b"boom")
                return
            tokens = int(body.get("max_tokens") or 16)
            chat = self.path == "/v1/chat/completions"
            prompt = body["messages"][-1]["content"] if chat else body["prompt"]
            options = body.get("stream_options") or {}
            continuous = bool(options.get("continuous_usage_stats"))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            trickle_until = time.monotonic() + args.trickle
            while time.monotonic() < trickle_until:  # bytes, but never an answer
                self._send(b": keep-alive\n\n")
                time.sleep(0.1)
            claimed = args.claim_tokens or tokens
            completion: object = str(claimed) if args.usage_as_string else claimed
            sent = 0
            request = scheduler.arrive(len(prompt.split()))
            try:
                while sent < tokens:
                    batch = range(sent, min(sent + args.tokens_per_chunk, tokens))
                    scheduler.step(request, len(batch))
                    time.sleep(args.token_delay)
                    sent = batch[-1] + 1
                    text = "".join(f" t{index}" for index in batch)
                    choice: dict = {"index": 0, "finish_reason": "length" if sent == tokens else None}
                    choice.update({"delta": {"content": text}} if chat else {"text": text})
                    payload: dict = {"choices": [choice]}
                    if continuous:
                        payload["usage"] = {"prompt_tokens": 1, "completion_tokens": sent}
                    self._chunk(payload)
            finally:
                scheduler.leave(request)
            if options.get("include_usage"):
                usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": completion}
                self._chunk({"choices": [], "usage": usage})
            self._send(b"data: [DONE]\n\n")
            self._send(b"")

        def _chunk(self, payload: dict) -> None:
            self._send(f"data: {json.dumps(payload)}\n\n".encode())

        def _send(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    sys.stderr.write(f"stub: listening on 127.0.0.1:{args.port}\n")
    server.serve_forever()


class Request:
    def __init__(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.streamed = 0
        self.preempted = False

    @property
    def held(self) -> int:
        return self.prompt_tokens + self.streamed


class Scheduler:
    """vLLM's scheduling in miniature: a batch limit, a queue, a KV cache, preemption."""

    def __init__(self, batch_size: int, kv_tokens: int) -> None:
        self.batch_size = batch_size
        self.kv_tokens = kv_tokens
        self.cond = threading.Condition()
        self.running: list[Request] = []
        self.waiting: collections.deque[Request] = collections.deque()
        self.preemptions = 0
        self.finished = 0

    def _used(self) -> int:
        return sum(r.held for r in self.running)

    def _fits(self, request: Request, extra: int) -> bool:
        if not self.kv_tokens or not self.running:
            return True
        return self._used() + request.held + extra <= self.kv_tokens

    def _admit(self, request: Request, extra: int) -> None:
        # Held lock. First come, first served: only the queue's head may enter.
        while not (
            self.waiting[0] is request
            and (not self.batch_size or len(self.running) < self.batch_size)
            and self._fits(request, extra)
        ):
            self.cond.wait()
        self.waiting.popleft()
        request.preempted = False
        self.running.append(request)
        self.cond.notify_all()

    def arrive(self, prompt_tokens: int) -> Request:
        request = Request(prompt_tokens)
        with self.cond:
            self.waiting.append(request)
            self._admit(request, 1)
        return request

    def step(self, request: Request, new_tokens: int) -> None:
        """Before `new_tokens` more are streamed: room in the KV cache, or a preemption."""
        with self.cond:
            if request.preempted:
                self._admit(request, new_tokens)
            while self.kv_tokens and self._used() + new_tokens > self.kv_tokens and len(self.running) > 1:
                victim = self.running.pop()  # the newest, as vLLM preempts
                victim.preempted = True
                self.preemptions += 1
                self.waiting.appendleft(victim)
                self.cond.notify_all()
                if victim is request:
                    self._admit(request, new_tokens)
            request.streamed += new_tokens

    def leave(self, request: Request) -> None:
        with self.cond:
            if request in self.running:
                self.running.remove(request)
            if request in self.waiting:
                self.waiting.remove(request)
            self.finished += 1
            self.cond.notify_all()

    def exposition(self, names: str, started: float) -> str:
        with self.cond:
            running, waiting = len(self.running), len(self.waiting)
            usage = min(1.0, self._used() / self.kv_tokens) if self.kv_tokens else 0.0
            preemptions, finished = self.preemptions, self.finished
        labels = 'engine="0",model_name="stub"'
        lines = [
            "# HELP python_gc_objects_collected_total Objects collected during gc",
            "# TYPE python_gc_objects_collected_total counter",
            'python_gc_objects_collected_total{generation="0"} 1234.0',
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{labels}}} {float(running)!r}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{labels}}} {float(waiting)!r}",
        ]
        kv_names = {"new": ["vllm:kv_cache_usage_perc"], "old": ["vllm:gpu_cache_usage_perc"]}
        for name in kv_names.get(names, ["vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"]):
            lines += [
                f"# HELP {name} KV-cache usage. 1 means 100 percent usage.",
                f"# TYPE {name} gauge",
                f"{name}{{{labels}}} {usage!r}",
            ]
        lines += [
            "# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.",
            "# TYPE vllm:num_preemptions_total counter",
            f"vllm:num_preemptions_total{{{labels}}} {float(preemptions)!r}",
            f"vllm:num_preemptions_created{{{labels}}} {started!r}",
            "# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.",
            "# TYPE vllm:e2e_request_latency_seconds histogram",
        ]
        for bound in ("0.3", "1.0", "+Inf"):
            bucket = f'vllm:e2e_request_latency_seconds_bucket{{{labels},le="{bound}"}}'
            lines.append(f"{bucket} {float(finished)!r}")
        lines += [
            f"vllm:e2e_request_latency_seconds_count{{{labels}}} {float(finished)!r}",
            f"vllm:e2e_request_latency_seconds_sum{{{labels}}} {finished * 0.1!r}",
        ]
        return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
