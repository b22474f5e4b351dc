"""Comparisons: directions, significance over rounds, what is not gated, when more samples decide."""

from __future__ import annotations

import random

import pytest
from sample_reports import EPYC, GPT2, SHORT_WINDOW, make_entry, make_report, make_result

from pytest_llem.gating.compare import compare_reports, needs_more_samples
from pytest_llem.gating.limits import parse_limit
from pytest_llem.gating.metrics import METRICS, round_values
from pytest_llem.gating.stats import p_worse, sample_values
from pytest_llem.gating.work import describe_work
from pytest_llem.results import RoundResult


def compare(baseline_rounds, current_rounds, *limits, gate_flagged=False, **current_fields):
    baseline = make_report("base", [make_entry(GPT2, make_result(baseline_rounds))])
    current = make_report("now", [make_entry(GPT2, make_result(current_rounds, **current_fields))])
    return compare_reports(baseline, current, [parse_limit(x) for x in limits], gate_flagged)


def energy_change(comparison):
    return next(c for c in comparison.changes if c.metric == "energy_per_token_j")


# --- direction and significance --------------------------------------------------------------


def test_each_metric_knows_which_direction_is_worse():
    # 10% more energy per token and (same tokens, same time) unchanged throughput.
    worse = compare([1.0], [1.1], "energy_per_token_j:5%", "tokens_per_s:5%")
    assert energy_change(worse).status == "regression"
    cheaper = compare([1.0], [0.8], "energy_per_token_j:5%")
    assert energy_change(cheaper).status == "improved"
    slower = compare([1.0], [1.0], "tokens_per_s:5%", round_s=2.4)
    throughput = next(c for c in slower.changes if c.metric == "tokens_per_s")
    assert throughput.status == "regression" and throughput.change_pct == pytest.approx(-100 / 6)
    faster = compare([1.0], [1.0], "tokens_per_s:5%", round_s=1.5)
    assert next(c for c in faster.changes if c.metric == "tokens_per_s").status == "improved"


def test_regression_line_has_values_change_limit_and_p():
    comparison = compare([1.00, 1.01, 0.99, 1.00], [1.20, 1.21, 1.19, 1.20], "energy_per_token_j:5%")
    (failure,) = comparison.failures
    # 4 rounds a side, fully apart: 1 split in C(8, 4) = 70, even with the tied 1.00s.
    assert failure.line() == (
        f"pytest-llem: REGRESSION {GPT2} energy_per_token_j 0.100 -> 0.120 J (+20.0%, limit 5%, p=0.0143)"
    )


def rounds(rng: random.Random, mean: float, relative_sd: float, n: int = 10) -> list[float]:
    return [rng.gauss(mean, mean * relative_sd) for _ in range(n)]


def test_a_real_ten_percent_shift_in_ten_rounds_is_caught():
    rng = random.Random(0)
    caught = 0
    for _ in range(100):
        comparison = compare(rounds(rng, 1.0, 0.03), rounds(rng, 1.1, 0.03), "energy_per_token_j:5%")
        caught += energy_change(comparison).status == "regression"
    assert caught >= 95


def test_noise_of_the_same_size_without_a_shift_is_not_a_regression():
    # Rounds that scatter by 10% around the same mean: their medians often differ by more than
    # the 5% limit, but the rank test says the difference is not real.
    rng = random.Random(1)
    beyond_limit = false_alarms = 0
    for _ in range(200):
        change = energy_change(
            compare(rounds(rng, 1.0, 0.10), rounds(rng, 1.0, 0.10), "energy_per_token_j:5%")
        )
        beyond_limit += change.note is not None and "not significant" in change.note
        false_alarms += change.status == "regression"
    assert beyond_limit >= 20  # the limit alone would have failed these builds
    assert false_alarms <= 12  # about the 5% significance level, not the ~20% of a bare limit


def test_with_fewer_than_three_rounds_the_limit_alone_decides():
    change = energy_change(compare([1.0, 1.0], [1.2, 1.2], "energy_per_token_j:5%"))
    assert change.status == "regression" and change.p_value is None


def test_p_is_shown_only_where_it_decided_the_row():
    regression = energy_change(
        compare([1.0, 1.01, 0.99, 1.02, 0.98], [1.5, 1.51, 1.49, 1.52, 1.48], "energy_per_token_j:5%")
    )
    assert regression.status == "regression" and regression.p_decides
    noisy = energy_change(compare([1.0, 0.8, 1.2], [1.1, 0.85, 1.25], "energy_per_token_j:5%"))
    assert noisy.status == "ok" and noisy.note is not None and noisy.p_decides  # p said: not real
    improved = energy_change(compare([1.0, 1.01, 0.99], [0.5, 0.51, 0.49], "energy_per_token_j:5%"))
    assert improved.status == "improved" and improved.p_value is not None and not improved.p_decides
    assert improved.cells()[5:7] == ("5%", "-")  # the limit is shown, the p that decided nothing is not
    unlimited = energy_change(compare([1.0, 1.01, 0.99], [1.5, 1.51, 1.49]))
    assert unlimited.p_value is not None and not unlimited.p_decides and unlimited.cells()[5:7] == ("-", "-")


def test_p_is_shown_wherever_a_change_went_beyond_its_limit_and_nowhere_else():
    def case(rounds, digest, **fields):
        result = make_result(rounds, extra={"output_digest": digest}, **fields)
        return make_entry(GPT2, result, work=describe_work(result.config, result, "p1"))

    def change(before, after, gate_flagged=False):
        base, now = make_report("base", [before]), make_report("now", [after])
        return energy_change(compare_reports(base, now, [parse_limit("energy_per_token_j:5%")], gate_flagged))

    # Within its limit, with other generated tokens: the note is about the outputs, not p.
    within = change(case([1.0, 1.01, 0.99], "aaaa"), case([1.01, 1.02, 1.0], "bbbb"))
    assert within.status == "ok" and within.note == "outputs changed" and within.p_value is not None
    assert not within.p_decides and within.cells()[6] == "-"
    # Beyond its limit and real, but a flag keeps it from the gate: p is what said it is real.
    flagged = change(
        case([1.0, 1.01, 0.99], "aaaa"), case([1.5, 1.51, 1.49], "aaaa", warnings=[SHORT_WINDOW])
    )
    assert flagged.status == "flagged" and flagged.p_decides and flagged.cells()[6] == "0.05"


# --- what is not gated, and budgets ----------------------------------------------------------


def test_flagged_results_are_shown_but_not_gated_unless_asked():
    flagged = compare([1.0], [1.5], "energy_per_token_j:5%", warnings=[SHORT_WINDOW])
    assert energy_change(flagged).status == "flagged" and not flagged.failures
    gated = compare([1.0], [1.5], "energy_per_token_j:5%", gate_flagged=True, warnings=[SHORT_WINDOW])
    assert energy_change(gated).status == "regression"


def test_per_test_limits_from_the_marker_override_the_session_limit():
    config = {"compare_fail": {"energy_per_token_j": "30%"}}
    comparison = compare([1.0], [1.2], "energy_per_token_j:5%", config=config)
    change = energy_change(comparison)
    assert change.limit == "30%" and change.status == "ok"


def test_a_saved_runs_bare_marker_limit_keeps_its_old_meaning_an_amount_shown_with_its_unit():
    # A release before units were required read {"tokens_per_s": "30"} as 30 tokens/s.
    config = {"compare_fail": {"energy_per_token_j": "0.03"}}  # 0.1 J a token in the baseline
    comparison = compare([1.0], [1.2], config=config)
    change = energy_change(comparison)
    assert change.limit == "0.03 J" and change.status == "ok"
    assert energy_change(compare([1.0], [1.4], config=config)).status == "regression"


def test_a_different_machine_gives_a_warning_not_a_crash():
    baseline = make_report("base", [make_entry(GPT2, make_result([1.0]))], machine=EPYC)
    current = make_report(
        "now", [make_entry(GPT2, make_result([1.0])), make_entry("t::new", make_result([1.0]))]
    )
    comparison = compare_reports(baseline, current, [parse_limit("energy_per_token_j:5%")])
    assert "ran on another machine (AMD EPYC 7763, id epyc)" in comparison.machine_warning
    assert comparison.only_in_current == ["t::new"] and not comparison.failures


def test_with_several_processes_each_process_is_one_sample():
    # Rounds agree closely inside each process, but the processes disagree with each other:
    # pooled as independent rounds, a 10% shift looks real (p < 0.01); as one sample per
    # process it is within what separate processes do anyway.
    def rounds_of(process_means):
        return [
            RoundResult(index=i, process=p, duration_s=1.0, output_tokens=10, energy_j=mean + 0.01 * i)
            for p, mean in enumerate(process_means)
            for i in range(3)
        ]

    baseline = make_result([1.0], rounds=rounds_of([1.0, 1.05, 0.95]))
    current = make_result([1.0], rounds=rounds_of([1.1, 1.0, 1.15]))
    metric = METRICS["energy_per_token_j"]
    assert sample_values(baseline.rounds, metric) == pytest.approx([0.101, 0.106, 0.096])
    pooled_p = p_worse(round_values(baseline.rounds, metric), round_values(current.rounds, metric), False)
    assert pooled_p < 0.01
    comparison = compare_reports(
        make_report("base", [make_entry(GPT2, baseline)]),
        make_report("now", [make_entry(GPT2, current)]),
        [parse_limit("energy_per_token_j:5%")],
    )
    change = energy_change(comparison)
    assert change.change_pct == pytest.approx(100 * (0.111 - 0.101) / 0.101)
    assert change.status == "ok" and change.p_value > 0.1


# --- repeats="auto": when more samples could decide ------------------------------------------


def more_samples(baseline_rounds, current_rounds, *limits, **current_fields):
    before = make_entry(GPT2, make_result(baseline_rounds))
    current = make_result(current_rounds, **current_fields)
    return needs_more_samples(before, current, None, [parse_limit(x) for x in limits])


def test_more_samples_only_while_a_change_beyond_its_limit_is_not_significant():
    base = [1.0, 1.02, 0.98]
    assert more_samples(base, [1.5, 1.52, 1.48], "energy_per_token_j:5%") is False  # regression, p=0.05
    assert more_samples(base, [1.0, 1.01, 0.99], "energy_per_token_j:5%") is False  # within the limit
    assert more_samples(base, [0.5, 0.51, 0.49], "energy_per_token_j:5%") is False  # improved
    assert more_samples(base, [1.5, 0.9, 1.6], "energy_per_token_j:5%") is True  # beyond, p > 0.05
    assert more_samples(base, [1.5, 0.9, 1.6]) is False  # no limit: nothing to decide


def test_more_samples_when_the_rank_test_lacks_samples_on_this_side_only():
    assert more_samples([1.0, 1.02, 0.98], [1.5], "energy_per_token_j:5%") is True
    # The baseline can never be tested: the limit alone decides, more samples change nothing.
    assert more_samples([1.0], [1.5], "energy_per_token_j:5%") is False


def test_more_samples_never_for_different_work_or_a_per_test_limit_decides():
    base = [1.0, 1.02, 0.98]
    before = make_entry(GPT2, make_result(base))
    config = {**before.config, "max_new_tokens": 8}
    before.work = describe_work({**before.config, "max_new_tokens": 4}, before.result, None)
    unclear = make_result([1.5, 0.9, 1.6], config=config)
    assert needs_more_samples(before, unclear, None, [parse_limit("energy_per_token_j:5%")]) is False
    per_test = make_result(
        [1.5, 0.9, 1.6], config={**before.config, "compare_fail": {"energy_per_token_j": "5%"}}
    )
    assert needs_more_samples(make_entry(GPT2, make_result(base)), per_test, None) is True


# --- prefill and decode apart ------------------------------------------------------------------

COUNTER_RESOLUTION = {"code": "counter_resolution", "message": "gpu0: the window lasted 20 ms"}


def split(energy_j: float, prefill_flags: list[dict]) -> dict:
    """A `PrefillDecode` as the pytorch backend records it: `energy_j` per part, 100 tokens each way."""
    return {
        "prefill_decode": {
            "calls": 5,
            "prefill_duration_s": 0.1,
            "decode_duration_s": 1.9,
            "prefill_energy_j": energy_j,
            "decode_energy_j": energy_j,
            "energy_scope": ["gpu"],
            "input_tokens": 100,
            "output_tokens": 100,
            "prefill_warnings": prefill_flags,
        }
    }


def test_a_flagged_prefill_stays_out_of_the_gate_while_decode_is_gated():
    limits = ["prefill_energy_per_input_token_j:5%", "decode_energy_per_output_token_j:5%"]
    baseline = make_report("base", [make_entry(GPT2, make_result([1.0], extra=split(10.0, [])))])
    current = make_report(
        "now", [make_entry(GPT2, make_result([1.0], extra=split(20.0, [COUNTER_RESOLUTION])))]
    )
    comparison = compare_reports(baseline, current, [parse_limit(x) for x in limits])
    status = {c.metric: (c.status, c.unit, c.current) for c in comparison.changes}
    # Twice the energy on both parts: the prefill part is flagged (shorter than the counter's
    # update), so not gated; the decode part is not, and regresses. The whole result is not flagged.
    assert status["prefill_energy_per_input_token_j"] == ("flagged", "J", pytest.approx(0.2))
    assert status["decode_energy_per_output_token_j"] == ("regression", "J", pytest.approx(0.2))
    assert not current.experiments[0].result.flagged
    gated = compare_reports(baseline, current, [parse_limit(x) for x in limits], gate_flagged=True)
    assert {c.metric for c in gated.failures} == {
        "prefill_energy_per_input_token_j",
        "decode_energy_per_output_token_j",
    }
