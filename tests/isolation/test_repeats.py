"""Repeated processes: `repeats=N`, and `repeats="auto"`, which stops when the answer is clear.

The adaptive runs use a synthetic workload whose throughput the test sets process by
process (`workloads.scheduled_throughput`), so whether a shift is clear does not depend on
this machine's load.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import workloads
from helpers import reports, start_llem_pytest
from sample_reports import make_result

from pytest_llem.config import build_config
from pytest_llem.errors import ConfigError
from pytest_llem.gating.limits import parse_limit
from pytest_llem.isolation.repeats import RepeatPlan, pool_processes, run_repeats
from pytest_llem.output.terminal import format_summary
from pytest_llem.results import PREFILL_DECODE_KEY, PrefillDecode, QualityWarning
from pytest_llem.session import BenchmarkSession
from pytest_llem.settings import LlemSettings, resolve_settings
from pytest_llem.values import DEFAULT_AUTO_REPEATS, parse_repeats

NODE = "tests/test_bench.py::test_throughput"
BASELINE_RATE = 1000


def test_repeats_take_a_count_or_auto_with_a_maximum():
    assert parse_repeats(4) == parse_repeats("4") == 4
    assert parse_repeats("auto") == f"auto:{DEFAULT_AUTO_REPEATS}" == "auto:8"
    assert parse_repeats(" auto:5 ") == "auto:5"
    assert RepeatPlan.of("auto:5") == RepeatPlan(3, 5) and RepeatPlan.of("auto:5").adaptive
    assert RepeatPlan.of(4) == RepeatPlan(4, 4) and not RepeatPlan.of(4).adaptive
    assert build_config({"repeats": "auto:6"}).repeats == "auto:6"
    assert resolve_settings({"repeats": "auto"}, {}).repeats == "auto:8"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "repeats: must be at least 1, or 'auto' / 'auto:N' (got 0)"),
        ("often", "repeats: expected a number of processes, 'auto' or 'auto:N' (N processes at most)"),
        ("auto:2", "repeats: auto:2 allows too few processes for the rank test, which needs 3; use auto:3"),
        (True, "repeats: expected a number of processes"),
    ],
)
def test_bad_repeats_are_one_line_naming_the_field(value, message):
    with pytest.raises(ConfigError) as raised:
        build_config({"repeats": value})
    assert str(raised.value).startswith(message)


def test_bad_repeats_option_names_the_option():
    with pytest.raises(
        ConfigError, match=r"^--llem-repeats: expected a number of processes, .* got 'sometimes'$"
    ):
        resolve_settings({"repeats": "sometimes"}, {})


def test_run_repeats_adds_processes_only_while_undecided():
    ran: list[int] = []

    def run_process(index: int):
        ran.append(index)
        return make_result([1.0])

    verdicts = iter([True, True, False])
    result = run_repeats(RepeatPlan(3, 8), run_process, lambda pooled: next(verdicts))
    assert ran == [0, 1, 2, 3, 4]
    assert (result.extra["repeats"], result.extra["repeats_max"], result.extra["repeats_decided"]) == (
        5,
        8,
        True,
    )
    ran.clear()
    undecided = run_repeats(RepeatPlan(3, 4), run_process, lambda pooled: True)
    assert ran == [0, 1, 2, 3] and undecided.extra["repeats_decided"] is False
    ran.clear()
    fixed = run_repeats(RepeatPlan(2, 2), run_process, lambda pooled: pytest.fail("a count never asks"))
    assert ran == [0, 1] and "repeats_max" not in fixed.extra


def split(calls: int, prefill_j: float | None, decode_j: float, flagged: bool = False) -> dict:
    warnings = [{"code": "counter_resolution", "message": "short"}] if flagged else []
    return PrefillDecode(
        calls=calls,
        prefill_duration_s=0.1 * calls,
        decode_duration_s=1.0 * calls,
        prefill_energy_j=prefill_j,
        decode_energy_j=decode_j,
        input_tokens=10 * calls,
        output_tokens=100 * calls,
        prefill_warnings=warnings,
    ).as_extra()


def test_pooled_processes_add_up_every_processs_prefill_and_decode():
    first, second = make_result([1.0]), make_result([1.0])
    first.extra[PREFILL_DECODE_KEY] = split(2, 4.0, 40.0)
    second.extra[PREFILL_DECODE_KEY] = split(1, 3.0, 30.0, flagged=True)
    pooled = pool_processes([first, second]).prefill_decode
    assert pooled is not None
    assert (pooled.calls, pooled.input_tokens, pooled.output_tokens) == (3, 30, 300)
    assert pooled.decode_energy_per_output_token_j == pytest.approx(70.0 / 300)
    assert pooled.prefill_energy_per_input_token_j == pytest.approx(7.0 / 30)
    assert [w.code for w in pooled.prefill_warnings] == ["counter_resolution"]  # one process's doubt stays


def test_a_split_some_process_lacks_or_cannot_read_is_not_the_pooled_experiments():
    first, second = make_result([1.0]), make_result([1.0])
    first.extra[PREFILL_DECODE_KEY] = split(2, 4.0, 40.0)
    assert pool_processes([first, second]).prefill_decode is None
    second.extra[PREFILL_DECODE_KEY] = split(1, None, 30.0)
    pooled = pool_processes([first, second]).prefill_decode
    assert pooled is not None and pooled.prefill_energy_j is None and pooled.decode_energy_j == 70.0


def test_pooled_processes_keep_the_time_weighted_share_others_took_and_each_ones_flag():
    busy = QualityWarning(code="host_busy", message="other processes took 60% of the host's CPU time")
    quiet = make_result([1.0], round_s=3.0, host_other_cpu_share=0.0)
    loaded = make_result([1.0], round_s=1.0, host_other_cpu_share=0.6, warnings=[busy])
    pooled = pool_processes([quiet, loaded])
    assert pooled.host_other_cpu_share == pytest.approx(0.15)
    assert [w.code for w in pooled.warnings] == ["host_busy"] and pooled.flagged


def session(state_dir: Path, **settings) -> BenchmarkSession:
    # The workload sets its own throughput in a short window: no minimum window or host_busy
    # limit, so no flag keeps its figures out of the gate, whatever else runs on this machine.
    quiet = {"energy": "none", "min_window_s": 0.0, "host_busy_share": 1.0}
    bench = BenchmarkSession(LlemSettings(enabled=True, state_dir=state_dir, **quiet, **settings))
    bench.start()
    return bench


def throughput(bench: BenchmarkSession, tmp_path: Path, name: str, rates: list[int]):
    params = {"counter": str(tmp_path / f"{name}.count"), "rates": rates}
    return bench.run_experiment(NODE, workloads.scheduled_throughput, [{"params": params}])


@pytest.fixture
def gated(tmp_path: Path):
    """A baseline of 3 processes at 1000 tokens/s, then a session gating tokens_per_s at 30%."""
    state_dir = tmp_path / "state"
    baseline = session(state_dir, repeats=3)
    throughput(baseline, tmp_path, "baseline", [BASELINE_RATE])
    baseline.finish("passed", 0)

    def start(repeats: str = "auto:5") -> BenchmarkSession:
        return session(
            state_dir, repeats=repeats, compare="latest", compare_fail=(parse_limit("tokens_per_s:30%"),)
        )

    return start


def test_a_clear_regression_stops_at_the_minimum(gated, tmp_path: Path):
    bench = gated()
    result = throughput(bench, tmp_path, "slow", [400])
    assert result.extra["repeats"] == 3 and result.extra["repeats_decided"] is True
    assert len({r.process for r in result.rounds}) == 3
    assert bench.record.gate() is True
    (failure,) = bench.record.failures
    assert failure.metric == "tokens_per_s" and failure.status == "regression" and failure.p_value == 0.05
    assert (
        f"repeats=auto: processes each case needed to settle its comparison, of its maximum: {NODE} 3/5"
        in (format_summary(bench.record.entries))
    )


def test_no_change_is_decided_at_the_minimum_too(gated, tmp_path: Path):
    bench = gated()
    result = throughput(bench, tmp_path, "same", [BASELINE_RATE])
    assert result.extra["repeats"] == 3 and result.extra["repeats_decided"] is True
    assert bench.record.gate() is False


def test_an_unclear_shift_goes_to_the_maximum_and_says_so(gated, tmp_path: Path):
    # Medians 500 tokens/s (beyond the 30% limit), but every other process is faster than the
    # baseline: the rank test never finds the drop significant (p 0.3, 0.2, 0.34).
    bench = gated()
    result = throughput(bench, tmp_path, "unclear", [500, 500, 1500, 500, 1500])
    assert result.extra["repeats"] == 5 and result.extra["repeats_decided"] is False
    assert bench.record.gate() is False
    (change,) = [c for c in bench.record.comparison.changes if c.metric == "tokens_per_s"]
    assert change.inconclusive and change.note.startswith("beyond the limit but not significant")
    assert f"{NODE} 5/5 (still undecided)" in "\n".join(format_summary(bench.record.entries))


def test_without_a_baseline_auto_runs_the_minimum(tmp_path: Path):
    bench = session(tmp_path / "state", repeats="auto")
    result = throughput(bench, tmp_path, "alone", [400, 1500])
    assert result.extra["repeats"] == 3 and result.extra["repeats_max"] == 8
    assert result.extra["repeats_decided"] is True


SUITE = """
from workloads import scheduled_throughput

def test_throughput(llem):
    llem.run(scheduled_throughput, params={"counter": %r, "rates": %r})
"""


def test_xdist_workers_repeat_until_the_controllers_baseline_settles_the_comparison(tmp_path: Path):
    # Only the controller gates, but the workers run the processes: they must compare with
    # the same baseline, or auto would stop every case at the minimum under -n.
    pytest.importorskip("xdist")
    suite, state_dir = tmp_path / "test_suite.py", tmp_path / "state"

    def run_suite(rates: list[int], *options: str) -> str:
        suite.write_text(SUITE % (str(tmp_path / f"{len(rates)}.count"), rates))
        proc = start_llem_pytest(tmp_path, state_dir, suite.name, "--llem-energy=none", *options)
        output, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, output
        return output

    run_suite([BASELINE_RATE], "--llem-repeats=3")
    gate = ("--llem-compare=latest", "--llem-compare-fail=tokens_per_s:30%", "--llem-repeats=auto:5")
    output = run_suite([500, 500, 1500, 500, 1500], "-n", "2", *gate)
    entry = reports(state_dir)[-1]["experiments"][0]
    assert entry["worker_id"].startswith("gw")
    assert (entry["result"]["extra"]["repeats"], entry["result"]["extra"]["repeats_decided"]) == (5, False)
    assert "test_suite.py::test_throughput 5/5 (still undecided)" in output
