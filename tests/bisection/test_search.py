"""A commit's verdict against GOOD's run (`judge`) and the binary search (`Bisection`)."""

from __future__ import annotations

import pytest
from sample_reports import GPT2, OPT, SHORT_WINDOW, make_entry, make_report, make_result

from pytest_llem.bisection.search import Bisection, figure_with_spread, judge
from pytest_llem.gating.limits import parse_limit

LIMIT = parse_limit("energy_j:5%")
GOOD_J = [5.0, 5.05, 5.1, 4.95, 5.02]


def run(run_id: str, *cases: tuple[str, list[float]], **result_fields):
    return make_report(run_id, [make_entry(node, make_result(j, **result_fields)) for node, j in cases])


GOOD = run("good", (GPT2, GOOD_J))


def test_worse_beyond_the_limit_with_a_small_p_is_bad_and_says_by_how_much():
    verdict = judge(GOOD, run("c", (GPT2, [6.0, 6.1, 6.05])), LIMIT, 0.05)
    assert verdict.verdict == "bad" and verdict.reason is None
    assert verdict.figure == "energy_j 6.05 [6.03, 6.07] J (n=3)"
    assert verdict.change == "+20.5% p=0.0179"
    assert verdict.text() == "energy_j 6.05 [6.03, 6.07] J (n=3) +20.5% p=0.0179 bad"


def test_within_the_limit_is_good_whatever_p():
    verdict = judge(GOOD, run("c", (GPT2, [5.1, 5.12, 5.15])), LIMIT, 0.05)
    assert (verdict.verdict, verdict.change) == ("good", "+2.0%")


def test_a_stricter_alpha_leaves_the_same_change_undecided():
    verdict = judge(GOOD, run("c", (GPT2, [6.0, 6.1, 6.05])), LIMIT, 0.01)
    assert verdict.verdict == "undecided"
    assert verdict.reason == "worse than the limit, but p=0.0179 > alpha 0.01"


def test_worse_but_not_significant_is_undecided_with_the_comparisons_note():
    verdict = judge(GOOD, run("c", (GPT2, [4.9, 6.0, 6.1])), LIMIT, 0.05)
    assert verdict.verdict == "undecided" and verdict.reason.startswith(
        "beyond the limit but not significant"
    )


def test_one_sample_against_many_is_never_taken_for_a_regression():
    # A single run 20% worse: the rank test cannot judge it, so neither does the bisection.
    verdict = judge(GOOD, run("c", (GPT2, [6.0])), LIMIT, 0.05)
    assert verdict.verdict == "undecided" and "too few samples" in verdict.reason


def test_a_flagged_measurement_is_undecided_not_bad():
    verdict = judge(GOOD, run("c", (GPT2, [6.0, 6.1, 6.05]), warnings=[SHORT_WINDOW]), LIMIT, 0.05)
    assert verdict.verdict == "undecided" and "measurement-quality flag" in verdict.reason


def test_nothing_measured_or_nothing_in_common_is_undecided():
    failed = make_report("c", [make_entry(GPT2, None)])
    assert judge(GOOD, failed, LIMIT, 0.05).reason == "no case was measured at this commit"
    other = judge(GOOD, run("c", (OPT, [6.0, 6.1, 6.05])), LIMIT, 0.05)
    assert (other.verdict, other.reason) == ("undecided", "no case measured here is in GOOD's run")


def test_with_several_cases_one_bad_case_makes_the_commit_bad_and_is_named():
    good = run("good", (GPT2, GOOD_J), (OPT, GOOD_J))
    verdict = judge(good, run("c", (GPT2, [5.0, 5.01, 5.02]), (OPT, [6.0, 6.1, 6.05])), LIMIT, 0.05)
    assert verdict.verdict == "bad" and verdict.reason == f"2 cases; {OPT}"
    assert verdict.figure.startswith("energy_j 6.05 ")


def test_the_figure_of_one_sample_has_no_spread():
    assert figure_with_spread(run("c", (GPT2, [6.0])), LIMIT.metric) == "energy_j 6.00 J (n=1)"
    assert figure_with_spread(make_report("c", []), LIMIT.metric) == "energy_j -"


def search(verdicts: dict[int, str], count: int = 16) -> tuple[list[int], Bisection]:
    """The commits a search tries when each commit's verdict is `verdicts`' (default good)."""
    bisection, tried = Bisection(count), []
    while (index := bisection.next_index()) is not None:
        tried.append(index)
        bisection.record(index, verdicts.get(index, "good"))
    return tried, bisection


def test_the_search_tries_bad_first_then_halves_the_range():
    bad = {i: "bad" for i in range(11, 16)}
    tried, bisection = search(bad)
    assert tried == [15, 7, 11, 9, 10]
    result = bisection.result()
    assert result.found and (result.last_good, result.first_bad) == (10, 11)


def test_an_undecided_commit_is_gone_round_and_leaves_a_range_when_it_blocks():
    verdicts = {10: "undecided", **{i: "bad" for i in range(11, 16)}}
    tried, bisection = search(verdicts)
    assert tried == [15, 7, 11, 9, 10]
    result = bisection.result()
    assert not result.found and list(result.candidates) == [10, 11] and result.undecided == (10,)


def test_an_undecided_middle_makes_the_search_try_its_neighbour():
    verdicts = {**{i: "bad" for i in range(3, 16)}, 7: "undecided"}
    tried, bisection = search(verdicts)
    assert tried[:3] == [15, 7, 6]
    assert bisection.result().first_bad == 3 and bisection.result().found


def test_bad_not_bad_ends_the_search_at_once():
    for verdict in ("good", "undecided"):
        tried, bisection = search({15: verdict})
        assert tried == [15] and bisection.result() is None


def test_two_commits_need_only_bad_judged():
    tried, bisection = search({1: "bad"}, count=2)
    assert tried == [1] and bisection.result().found


def test_a_search_needs_a_commit_after_good():
    with pytest.raises(ValueError):
        Bisection(1)
