"""Equal work on both sides: what counts as the same work, and how a comparison treats the rest."""

from __future__ import annotations

import math

import pytest
from sample_reports import CONFIG, GPT2, make_entry, make_report, make_result
from serving_loads import (
    serving_result,
)

from pytest_llem.gating.compare import compare_reports
from pytest_llem.gating.gate import run_gate
from pytest_llem.gating.limits import parse_limit
from pytest_llem.gating.work import describe_work, outputs_changed, work_differences

LIMIT = [parse_limit("energy_per_token_j:5%")]


def case(energies, config=CONFIG, prompt_digest="p1", **extra):
    result = make_result(energies, config=config, extra=extra)
    return make_entry(GPT2, result, work=describe_work(config, result, prompt_digest))


def gate(before, after):
    return run_gate(make_report("now", [after]), make_report("base", [before]), LIMIT)


def test_the_work_holds_decoding_settings_and_sampling_ones_only_when_sampling():
    greedy = describe_work({**CONFIG, "max_new_tokens": 32, "top_k": 5}, make_result([1.0]), "p")
    assert greedy.greedy and greedy.settings == {
        "n_prompts": None,
        "max_new_tokens": 32,
        "ignore_eos": None,
        "max_input_tokens": None,
        "temperature": None,
    }
    sampled = describe_work({**CONFIG, "temperature": 0.7, "top_k": 5, "seed": 1}, make_result([1.0]), None)
    assert not sampled.greedy and sampled.settings["top_k"] == 5 and sampled.settings["seed"] == 1


@pytest.mark.parametrize(
    ("after", "reason"),
    [
        (case([1.0], config={**CONFIG, "max_new_tokens": 64}), "max_new_tokens None -> 64"),
        (case([1.0], prompt_digest="p2"), "prompt set changed (p1 -> p2)"),
        (case([1.0], request_tokens_digest="r2"), "token counts per request differ"),
    ],
)
def test_different_work_is_incomparable_never_ok_or_improved(after, reason):
    before = case([2.0], request_tokens_digest="r1")
    outcome = gate(before, after)  # half the energy: it would read "improved"
    statuses = {c.status for c in outcome.comparison.changes}
    assert statuses == {"incomparable"}
    assert outcome.comparison.incomparable == {GPT2: reason}
    # Every case in common did different work: the gate compared nothing, so it fails.
    assert outcome.failed and "did different work" in outcome.refusal


def test_the_same_work_compares_and_unknown_parts_are_not_held_against_it():
    before = case([1.0], request_tokens_digest="r1")
    after = case([1.5], request_tokens_digest=None, prompt_digest=None)  # older or custom workload
    assert work_differences(before.work, after.work) == []
    outcome = gate(before, after)
    assert [c.status for c in outcome.failures] == ["regression"] and outcome.refusal is None


def test_with_greedy_decoding_different_outputs_are_reported_beside_the_change():
    before = case([1.0], output_digest="aaaa")
    after = case([1.02], output_digest="bbbb")
    comparison = compare_reports(make_report("base", [before]), make_report("now", [after]), LIMIT)
    energy = next(c for c in comparison.changes if c.metric == "energy_per_token_j")
    assert energy.status == "ok" and energy.note == "outputs changed"
    sampled = {**CONFIG, "temperature": 0.7}
    assert not outputs_changed(
        case([1.0], config=sampled, output_digest="aaaa").work,
        case([1.0], config=sampled, output_digest="bbbb").work,
    )


def test_a_load_of_another_size_rate_or_concurrency_is_other_work():
    from pytest_llem.gating.compare import compare_reports
    from pytest_llem.gating.work import describe_work, work_differences

    def work(result):
        return describe_work(result.config, result, "prompts")

    assert work_differences(work(serving_result(64)), work(serving_result(64))) == []
    assert work_differences(work(serving_result(64)), work(serving_result(2))) == ["n_requests 64 -> 2"]
    assert work_differences(work(serving_result(4, 2.0)), work(serving_result(4, math.inf))) == [
        "request_rate 2.0 -> 'inf'"
    ]
    assert work_differences(work(serving_result(4, None, 2)), work(serving_result(4, None, 4))) == [
        "concurrency 2 -> 4"
    ]
    base, now = serving_result(64), serving_result(2)
    comparison = compare_reports(
        make_report("base", [make_entry("t::serve", base, work=work(base))]),
        make_report("now", [make_entry("t::serve", now, work=work(now))]),
        [parse_limit("requests_per_s:5%")],
    )
    assert comparison.incomparable == {"t::serve": "n_requests 64 -> 2"}
    assert {c.status for c in comparison.changes} == {"incomparable"}
