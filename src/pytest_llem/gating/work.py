"""Equal work on both sides: energy per token compares only runs that did the same work.

The work of an experiment is its prompt set (a digest of the prompts' text), the settings
that change what is generated (`WORK_SETTINGS`; the sampling ones only when sampling), and,
where the workload recorded them (the built-in pytorch backend does), a digest of each
request's input and output token counts and a digest of the generated tokens. A serving
load adds its shape (`SERVING_WORK_SETTINGS`: the requests it sent, their rate and
concurrency), compared where both sides recorded it. Two runs of a case whose work differs
are `incomparable`; with greedy decoding, different generated tokens
on otherwise equal work are reported as "outputs changed".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pytest_llem.results import ExperimentResult
from pytest_llem.store.report import WorkSignature

#: Config fields that change the work done, whatever the workload.
WORK_SETTINGS = ("n_prompts", "max_new_tokens", "ignore_eos", "max_input_tokens", "temperature")
#: Config fields that change the work only when sampling (temperature > 0).
SAMPLING_SETTINGS = ("top_p", "top_k", "seed")
#: A serving load's shape: the same prompts at another rate, concurrency or count is other work.
SERVING_WORK_SETTINGS = ("n_requests", "request_rate", "concurrency")
#: The `ctx.record()` keys a workload may use to describe its work.
REQUEST_TOKENS_KEY = "request_tokens_digest"
OUTPUT_DIGEST_KEY = "output_digest"


def describe_work(
    config: Mapping[str, Any], result: ExperimentResult, prompt_digest: str | None
) -> WorkSignature:
    greedy = not config.get("temperature")
    names = WORK_SETTINGS + (() if greedy else SAMPLING_SETTINGS)
    extra = result.extra
    settings = {name: config.get(name) for name in names}
    if result.serving is not None:
        serving = result.serving
        rate = serving.request_rate
        # As sent (n_requests defaults in the workload); an infinite rate as JSON keeps it.
        settings.update(
            n_requests=serving.n_requests,
            request_rate="inf" if rate is not None and math.isinf(rate) else rate,
            concurrency=serving.concurrency,
        )
    return WorkSignature(
        prompt_digest=prompt_digest,
        settings=settings,
        request_tokens_digest=_text_or_none(extra.get(REQUEST_TOKENS_KEY)),
        output_digest=_text_or_none(extra.get(OUTPUT_DIGEST_KEY)),
        greedy=greedy,
    )


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def work_differences(before: WorkSignature | None, after: WorkSignature | None) -> list[str]:
    """Why the two sides did different work (empty: the same, as far as both sides know)."""
    if before is None or after is None:
        return []
    reasons = [
        f"{name} {before.settings.get(name)!r} -> {after.settings.get(name)!r}"
        for name in dict.fromkeys([*before.settings, *after.settings])
        if before.settings.get(name) != after.settings.get(name)
        # A load's shape counts where both sides recorded it (reports from before it was recorded).
        and (name not in SERVING_WORK_SETTINGS or (name in before.settings and name in after.settings))
    ]
    if _differ(before.prompt_digest, after.prompt_digest):
        reasons.append(f"prompt set changed ({before.prompt_digest} -> {after.prompt_digest})")
    if _differ(before.request_tokens_digest, after.request_tokens_digest):
        reasons.append("token counts per request differ")
    return reasons


def outputs_changed(before: WorkSignature | None, after: WorkSignature | None) -> bool:
    """Greedy decoding on both sides, and different generated tokens."""
    if before is None or after is None or not (before.greedy and after.greedy):
        return False
    return _differ(before.output_digest, after.output_digest)


def _differ(old: str | None, new: str | None) -> bool:
    """Known on both sides and different."""
    return old is not None and new is not None and old != new
