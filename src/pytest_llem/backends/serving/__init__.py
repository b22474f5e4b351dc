"""Serving benchmarks (`scenario="serving"`): an OpenAI-compatible server measured under load.

- `server`: the server's command and environment, its launch inside the experiment's process
  group on a free loopback port, health polling, and its log kept with the run.
- `loadgen`: the load generator (Poisson arrivals or a fixed concurrency, streaming
  requests through httpx) and the steady-state tracker that opens and closes that window.
- `summary`: per-request records turned into rates, percentiles, goodput and energy.
- `workload`: the built-in workload that ties them together in the experiment's worker.

Nothing here imports httpx or the server's libraries at import time: the pytest process
imports this package only to read configs and results.
"""
