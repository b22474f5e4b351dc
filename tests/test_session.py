"""BenchmarkSession on its own: a smoke session (`--llem-smoke`), whose settings say what it
runs, keeps and compares."""

from __future__ import annotations

from pathlib import Path

import workloads

from pytest_llem.session import BenchmarkSession
from pytest_llem.settings import SMOKE_FIELDS, LlemSettings, resolve_settings, smoke_settings


def test_smoke_is_a_switch_from_the_option_or_the_ini_key():
    assert resolve_settings({"smoke": True}, {}, environ={}).smoke
    assert resolve_settings({}, {"smoke": True}, environ={}).smoke
    assert not resolve_settings({}, {}, environ={}).smoke


def test_a_smoke_session_runs_the_smallest_workload_and_leaves_no_history(tmp_path: Path):
    state_dir = tmp_path / "state"
    settings = LlemSettings(
        enabled=True,
        state_dir=state_dir,
        smoke=True,
        rounds=5,
        repeats=3,
        baseline_s=5.0,
        compare="latest",
        markdown_path=tmp_path / "summary.md",
    )
    bench = BenchmarkSession(smoke_settings(settings))
    bench.start()
    smoke_dir = bench.settings.state_dir
    assert smoke_dir != state_dir and smoke_dir.is_dir()

    # The case asks for more; the smoke fields win over the session, marker and call.
    result = bench.run_experiment(
        "tests/test_x.py::case",
        workloads.count_tokens,
        [{"n_prompts": 64, "max_new_tokens": 32, "rounds": 2}],
    )
    config = result.config
    assert {name: config[name] for name in SMOKE_FIELDS} == SMOKE_FIELDS
    assert result.energy_j is None and not result.rounds
    assert bench.record.gate() is False  # a smoke session never gates

    assert bench.finish("passed", 0) is None
    assert not smoke_dir.exists()
    assert not state_dir.exists()  # nothing in the history, no states, no report
    assert not (tmp_path / "summary.md").exists()  # nothing published
    assert bench.record.closing_lines() == [
        "smoke run: 1 case(s) ran once with the smallest workload; "
        "nothing was measured, saved to the history or published"
    ]


def test_a_smoke_summary_shows_which_cases_ran_and_no_figures(tmp_path: Path):
    by_figure = LlemSettings(enabled=True, state_dir=tmp_path, smoke=True, sort="-tokens_per_s")
    settings = smoke_settings(by_figure)
    assert settings.summary_view().columns == ("test", "status")
    assert settings.summary_view().sort is None  # a figure column cannot order a table without figures
    by_status = smoke_settings(LlemSettings(enabled=True, state_dir=tmp_path, smoke=True, sort="status"))
    assert by_status.summary_view().sort == "status"
    BenchmarkSession(settings).finish("passed", 0)
    assert not settings.state_dir.exists()
