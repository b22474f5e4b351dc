"""A small OpenAI-compatible server for the serving tests' failure modes (standard library only).

    python fake_openai_server.py --port P [--token-delay S] [--tokens-per-chunk K] [--claim-tokens N]
                           [--usage-as-string] [--trickle S] [--never-healthy] [--die-after N]
                           [--fail-every N] [--ignore-term --children K --pid-file F]

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
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()

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
            healthy = self.path == "/health" and not args.never_healthy
            self.send_response(200 if healthy else 503)
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
            while sent < tokens:
                time.sleep(args.token_delay)
                batch = range(sent, min(sent + args.tokens_per_chunk, tokens))
                sent = batch[-1] + 1
                text = "".join(f" t{index}" for index in batch)
                choice: dict = {"index": 0, "finish_reason": "length" if sent == tokens else None}
                choice.update({"delta": {"content": text}} if chat else {"text": text})
                payload: dict = {"choices": [choice]}
                if continuous:
                    payload["usage"] = {"prompt_tokens": 1, "completion_tokens": sent}
                self._chunk(payload)
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


if __name__ == "__main__":
    main()
