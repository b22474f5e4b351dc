"""The built-in workload behind `scenario="serving"`, run in the experiment's worker.

1. Start the server (`server.ServerProcess`) and wait for its health check, and load the
   model's tokenizer where there is one, to count the tokens of chunks that carry no usage
   of their own (`tokens`): not measured.
2. Send `warmup_requests` requests one at a time: not measured.
3. Ask the server once whether it has Prometheus metrics (`metrics.probe`): not measured.
4. For each round: open the measured window, send `n_requests` requests at `request_rate`
   or `concurrency` while the steady-state part is measured alongside (and the server's
   metrics scraped, where it has them), close the window when the last answer is in; then
   summarise (`summary.summarise`) and record.
5. Stop the server. Whatever it left running dies with the experiment's process group.

Request errors are counted; above `max_error_rate` they fail the case, so a server that
answers few requests never yields a flattering figure. A server that dies fails the case
with its exit status and the end of its log.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from pytest_llem.backends import DEFAULT_MAX_NEW_TOKENS, server_log_path
from pytest_llem.backends.prompts import load_prompts, sized_prompts
from pytest_llem.backends.serving import metrics as server_metrics
from pytest_llem.backends.serving import server as servers
from pytest_llem.backends.serving.loadgen import LoadPlan, RequestRecord, SteadyState, run_load
from pytest_llem.backends.serving.summary import summarise
from pytest_llem.backends.serving.tokens import TextCounter
from pytest_llem.config import ExperimentConfig, check_serving_complete
from pytest_llem.context import ExperimentContext
from pytest_llem.energy.quality import SERVER_PREEMPTED, SERVER_SATURATED, flag
from pytest_llem.errors import LlemError
from pytest_llem.extras import import_extra
from pytest_llem.results import QualityWarning, WindowMeasurement

PURPOSE = "scenario='serving'"
DEFAULT_N_REQUESTS = 64
STEADY_PART = "steady-state"
#: The flags a round's server metrics raise: kept for the result whichever round raised them.
SERVER_FLAGS = (SERVER_SATURATED, SERVER_PREEMPTED)


class ServingFailed(LlemError):
    """The load ran, but its figures would mislead (too many failed requests)."""


def request_extra(config: ExperimentConfig) -> dict[str, Any]:
    """Fields beyond OpenAI's that make each answer exactly `max_new_tokens` long, per server.

    vLLM takes `ignore_eos` and `min_tokens`; `transformers serve` refuses unknown fields but
    takes a `generation_config`. A custom command gets OpenAI's fields only.
    """
    max_tokens = config.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    extra: dict[str, Any] = {}
    if config.temperature > 0:
        extra["top_p"] = config.top_p
    if not config.ignore_eos:
        return extra
    if config.server == "vllm":
        extra.update(ignore_eos=True, min_tokens=max_tokens)
    elif config.server == "transformers":
        generation = model_generation_config(config.model)
        generation.update(min_new_tokens=max_tokens, max_new_tokens=max_tokens)
        extra["generation_config"] = json.dumps(generation)
    return extra


def model_generation_config(model: str | None) -> dict[str, Any]:
    """A local model's own `generation_config.json` ({} otherwise): `transformers serve` uses a
    request's generation_config *instead of* the model's, so it starts from the model's."""
    path = Path(model) / "generation_config.json" if model else None
    if path is None or not path.is_file():
        return {}
    try:
        given = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in given.items() if k not in ("transformers_version", "_from_model_config")}


def stream_options(config: ExperimentConfig) -> dict[str, Any]:
    """Usage in the stream (OpenAI's `include_usage`); vLLM also reports it in every chunk,
    cumulative (`continuous_usage_stats`), which counts each chunk's tokens exactly. A
    custom command gets OpenAI's fields only."""
    options: dict[str, Any] = {"include_usage": True}
    if config.server == "vllm":
        options["continuous_usage_stats"] = True
    return options


def text_counter(model: str | None) -> TextCounter | None:
    """The model's tokenizer as a counter of a text's tokens; None where transformers or the
    tokenizer's files are not on this machine (never downloaded here)."""
    if model is None or importlib.util.find_spec("transformers") is None:
        return None
    try:
        # Imported by name: only the worker loads transformers, and only for this.
        tokenizer = importlib.import_module("transformers").AutoTokenizer.from_pretrained(
            model, local_files_only=True
        )
    except Exception:  # no tokenizer for this model here: chunks are counted instead
        return None
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def load_plan(
    config: ExperimentConfig, base_url: str, prompts: list[str], *, warmup: bool = False
) -> LoadPlan:
    return LoadPlan(
        base_url=base_url,
        model=config.model or "default",
        prompts=prompts,
        max_tokens=config.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
        temperature=config.temperature,
        rate=None if warmup else config.request_rate,
        concurrency=1 if warmup else config.concurrency,
        seed=config.seed,
        extra_body=request_extra(config),
        endpoint=config.endpoint,
        stream_options=stream_options(config),
    )


def run(ctx: ExperimentContext) -> None:
    """The workload behind `scenario="serving"`."""
    config = ctx.config
    check_serving_complete(config)
    import_extra("httpx", "serving", PURPOSE)
    import_extra("prometheus_client", "serving", PURPOSE)
    n_requests = config.n_requests or DEFAULT_N_REQUESTS
    count_text = text_counter(config.model)
    if config.input_len is not None:
        prompts, counted_by = sized_prompts(n_requests, config.seed, config.input_len, count_text)
        ctx.record(input_len_counted_by=counted_by)
    else:
        prompts = load_prompts(config.model_copy(update={"n_prompts": n_requests}))
    experiment_id = os.environ.get("PYTEST_LLEM_EXPERIMENT_ID", "server")
    log = server_log_path(ctx.state_dir or Path.cwd(), experiment_id)
    port = servers.free_port()
    server = servers.ServerProcess(
        servers.server_command(config, port), servers.server_env(config), port, log
    )
    try:
        ctx.record(server_log=str(log), server_command=server.command)
        server.wait_healthy(config.server_startup_timeout)
        if config.warmup_requests:
            warmup = load_plan(config, server.base_url, prompts[: config.warmup_requests], warmup=True)
            records, _ = run_load(warmup, check_alive=server.check_alive)
            failed = [r for r in records if not r.ok]
            if failed:
                raise ServingFailed(
                    f"warm-up request failed, so the load would fail too: {failed[0].error}; server log {log}"
                )
        # Asked once: a server without metrics gets no scraper at all during the load.
        metrics_note = server_metrics.probe(server.base_url)
        earlier_flags: list[QualityWarning] = []
        for index in ctx.rounds():
            _measure_round(ctx, config, server, prompts, str(log), count_text, metrics_note, earlier_flags)
            if config.rounds > 1:
                flags = ctx.serving.warnings if ctx.serving is not None else []
                earlier_flags += [
                    flag(w.code, f"round {index + 1}: {w.message}") for w in flags if w.code in SERVER_FLAGS
                ]
    finally:
        server.stop()


def _measure_round(
    ctx: ExperimentContext,
    config: ExperimentConfig,
    server: servers.ServerProcess,
    prompts: list[str],
    log: str,
    count_text: TextCounter | None,
    metrics_note: str | None,
    earlier_flags: list[QualityWarning],
) -> None:
    steady_parts: list[WindowMeasurement] = []
    steady = SteadyState(
        len(prompts),
        config.request_rate,
        config.concurrency,
        on_open=lambda: ctx.begin_part(STEADY_PART),
        on_close=lambda: steady_parts.append(ctx.end_part(STEADY_PART)),
    )
    scraper = None if metrics_note is not None else server_metrics.Scraper(server.base_url)
    try:
        with ctx.window():
            on_timeline = ctx.on_timeline()
            if scraper is not None:
                scraper.start()
            try:
                records, start = run_load(
                    load_plan(config, server.base_url, prompts), steady, check_alive=server.check_alive
                )
            finally:
                if scraper is not None:
                    scraper.halt()  # a scrape in flight must not hold the window open
    finally:
        if scraper is not None:
            scraper.stop()
    whole = ctx.windows[-1]
    if scraper is None:
        seen = server_metrics.absent(metrics_note or "")
    else:
        opened, closed = steady.opened_at, steady.closed_at
        seen = server_metrics.summarise_scrapes(
            scraper.scrapes,
            scraper.failures,
            on_timeline,
            (opened, closed) if opened is not None and closed is not None else None,
            scraper.interval_s,
            # The window's end on the timeline: every window so far, end to end.
            until_s=sum(w.duration_s for w in ctx.windows),
        )
    span = None
    if steady.opened_at is not None and steady.closed_at is not None:
        span = (steady.opened_at - start, steady.closed_at - start)
    summary = summarise(
        records,
        server=servers.server_label(config),
        server_log=log,
        request_rate=config.request_rate,
        concurrency=config.concurrency,
        slo=config.slo,
        whole=whole,
        steady_span=span,
        steady_measured=steady_parts[0] if steady_parts else None,
        steady_note=steady.note,
        count_text=count_text,
        server_metrics=seen,
        earlier_flags=earlier_flags,
    )
    _record(ctx, records, summary.input_tokens, summary.output_tokens)
    ctx.record_serving(summary)
    share = summary.errors / summary.n_requests
    if share > config.max_error_rate:
        raise ServingFailed(
            f"{summary.errors} of {summary.n_requests} requests failed ({share:.0%}, above "
            f"max_error_rate={config.max_error_rate:g}): {'; '.join(summary.error_samples)}; "
            f"server log {log}"
        )


def _record(
    ctx: ExperimentContext, records: list[RequestRecord], input_tokens: int | None, output: int
) -> None:
    ctx.record(output_tokens=output, input_tokens=input_tokens)
    for record in records:
        if not record.ok:
            continue
        ctx.record_latency(batch_s=record.e2e_s, first_token_s=record.ttft_s)
        for gap in record.inter_token_s:
            ctx.record_latency(inter_token_s=gap)
