"""Run names from git, finding runs by name, id or path, the latest run per project and machine,
and retention."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import datetime, timezone

import pytest
from sample_reports import EPYC, GPT2, make_entry, make_report, make_result

from pytest_llem.store.experiments import ExperimentPhase
from pytest_llem.store.history import RunHistory, UnknownRun, autosave_name
from pytest_llem.store.report import report_path, write_report
from pytest_llem.store.state import StateManager

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_autosave_names_the_commit_the_time_and_a_dirty_tree(tmp_path):
    assert autosave_name(tmp_path, NOW) == "nogit-20261126T120000Z"
    git(tmp_path, "init", "-q")
    (tmp_path / "bench.py").write_text("x = 1\n")
    git(tmp_path, "add", "bench.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "first")
    clean = autosave_name(tmp_path, NOW)
    assert re.fullmatch(r"[0-9a-f]{10}-20261126T120000Z", clean)
    (tmp_path / "bench.py").write_text("x = 2\n")
    assert autosave_name(tmp_path, NOW) == clean + "-dirty"


def test_runs_are_found_by_name_id_or_path_and_latest_is_per_machine(tmp_path):
    state_dir = tmp_path / "state"
    result = make_result([1.0])
    for run_id, name, machine, day in [
        ("r1", "main", None, 0),
        ("r2", "main", None, 1),
        ("r3", None, EPYC, 2),
    ]:
        kwargs = {"machine": machine} if machine else {}
        write_report(
            make_report(run_id, [make_entry(GPT2, result)], name=name, days_after_t0=day, **kwargs), state_dir
        )
    (state_dir / "runs" / "broken").mkdir()
    (state_dir / "runs" / "broken" / "report.json").write_text("{not json")
    history = RunHistory(state_dir)
    assert [r.run_id for r in history.runs()] == ["r1", "r2", "r3"]  # the unreadable one is skipped
    assert history.find("main").run_id == "r2"  # the newest of that name
    assert history.find("r1").run_id == "r1"
    assert history.find(str(report_path(state_dir, "r3"))).run_id == "r3"
    assert history.latest("h100x1").run_id == "r2"
    assert history.latest("h100x1", exclude_run_id="r2").run_id == "r1"
    assert history.latest("epyc").run_id == "r3"
    assert history.latest("other") is None
    with pytest.raises(UnknownRun, match=r"no saved run named 'nightly' \(latest: main, main, r3\)"):
        history.find("nightly")


def test_an_unreadable_newer_report_is_named_never_silently_passed_over(tmp_path):
    state_dir = tmp_path / "state"
    result = make_result([1.0])
    write_report(make_report("20260101T000000Z-aaaaaa", [make_entry("t::a", result)]), state_dir)
    newest = report_path(state_dir, "20260102T000000Z-bbbbbb")
    newest.parent.mkdir(parents=True)
    newest.write_text('{"run_id": "20260102T0000')  # truncated by a crash
    history = RunHistory(state_dir)
    baseline = history.latest(None)
    assert baseline is not None and baseline.run_id == "20260101T000000Z-aaaaaa"
    (skipped,) = history.skipped_after(baseline.run_id)
    assert skipped.startswith("runs/20260102T000000Z-bbbbbb/report.json (not a report: ")


def test_reports_with_naive_timestamps_sort_with_aware_ones(tmp_path):
    state_dir = tmp_path / "state"
    aware = make_report("r1", [], days_after_t0=0)
    write_report(aware, state_dir)
    naive = json.loads(aware.model_dump_json())
    naive.update(run_id="r2", started_at="2099-01-01T00:00:00", finished_at="2099-01-01T00:05:00")
    path = report_path(state_dir, "r2")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(naive))
    assert [run.run_id for run in RunHistory(state_dir).runs()] == ["r1", "r2"]


def test_the_default_baseline_is_the_newest_finished_uninterrupted_run_that_measured_something(tmp_path):
    state_dir = tmp_path / "state"
    measured = make_entry(GPT2, make_result([1.0]))
    crashed = make_entry(GPT2, None, error="boom")

    def save(run_id, day, entries, **fields):
        write_report(make_report(run_id, entries, days_after_t0=day).model_copy(update=fields), state_dir)

    save("good", 0, [measured])
    save("failed-with-a-pass", 1, [crashed, measured], outcome="failed", exit_code=1)
    save("collect-only", 2, [])
    save("all-crashed", 3, [crashed], outcome="failed", exit_code=1)
    save("interrupted", 4, [measured], outcome="interrupted", exit_code=130)
    save("killed", 5, [measured], outcome="running", finished_at=None)
    history = RunHistory(state_dir)
    assert history.latest("h100x1").run_id == "failed-with-a-pass"
    assert history.latest("h100x1", exclude_run_id="failed-with-a-pass").run_id == "good"


def test_a_run_repaired_after_its_controller_was_killed_never_becomes_the_baseline(tmp_path):
    # The xdist controller is in the store from the start and killed before its first report
    # file; its worker finished, passed and measured. The repaired run is kept, not gated against.
    state_dir = tmp_path / "state"
    measured = make_entry(GPT2, make_result([1.0]), worker_id="gw0")
    history = RunHistory(state_dir)
    history.save(make_report("killed", []).model_copy(update={"outcome": "running", "finished_at": None}))
    write_report(make_report("killed", [measured]), state_dir, name="report-gw0.json")
    assert history.repair() == ["killed"]
    assert [e.nodeid for e in history.find("killed").measured] == [GPT2]
    assert history.latest("h100x1") is None
    assert history.find("killed").repaired


def saved_runs(history: RunHistory, runs: list[tuple[str, str | None, str | None, float]]) -> None:
    """Save finished runs, each `(run_id, project, name, day)`, with one measured case."""
    for run_id, project, name, day in runs:
        report = make_report(run_id, [make_entry(GPT2, make_result([1.0]))], name=name, days_after_t0=day)
        report.project = project
        history.save(report)


def test_the_default_baseline_is_the_newest_run_of_its_own_project_never_anothers(state_dir, store_url):
    history = RunHistory(state_dir, store_url)
    saved_runs(
        history,
        [("a1", "alpha", None, 0), ("b1", "beta", None, 1), ("a2", "alpha", None, 2), ("old", None, None, 3)],
    )
    history.save(
        make_report("b2", [make_entry(GPT2, make_result([1.0]))], days_after_t0=4).model_copy(
            update={"project": "beta", "outcome": "interrupted"}
        )
    )

    assert history.latest("h100x1", project="beta").run_id == "b1"  # b2 cannot be a baseline
    assert history.latest("h100x1", project="alpha").run_id == "a2"
    assert history.latest("h100x1", exclude_run_id="a2", project="alpha").run_id == "a1"
    assert history.latest("h100x1", project="gamma") is None
    assert history.latest("epyc", project="alpha") is None
    assert history.latest("h100x1").run_id == "old"  # any project's: what the pytest process never asks
    # What a project with no run of its own is told about: the newest of another or of none.
    elsewhere = history.latest_elsewhere("h100x1", "gamma")
    assert (elsewhere.run_id, elsewhere.project) == ("old", None)
    elsewhere = history.latest_elsewhere("h100x1", "beta", exclude_run_id="old")
    assert (elsewhere.run_id, elsewhere.project) == ("a2", "alpha")
    assert history.latest_elsewhere("epyc", "beta") is None
    assert history.find("a2").project == "alpha" and history.find("old").project is None


def test_a_run_name_two_projects_share_finds_the_asking_projects_run_first(state_dir, store_url):
    history = RunHistory(state_dir, store_url)
    saved_runs(history, [("a1", "alpha", "main", 0), ("b1", "beta", "main", 1), ("a2", "alpha", None, 2)])

    assert history.find("main", project="alpha").run_id == "a1"
    assert history.find("main", project="beta").run_id == "b1"
    assert history.find("main").run_id == "b1"  # no project: the newest of that name
    assert history.find("main", project="gamma").run_id == "b1"  # named: any project's, when not its own
    assert history.find("a1", project="beta").run_id == "a1"  # a run id is one run, whoever's
    # A run saved before projects may be the asking project's own: it comes before another's.
    saved_runs(history, [("old", None, "main", -1)])
    assert history.find("main", project="gamma").run_id == "old"
    assert history.find("main", project="alpha").run_id == "a1"


def test_runs_are_listed_by_project_and_legacy_runs_have_none(state_dir, store_url):
    history = RunHistory(state_dir, store_url)
    saved_runs(history, [("a1", "alpha", None, 0), ("old", None, None, 1), ("b1", "beta", None, 2)])

    assert [(run.run_id, run.project) for run in history.summaries()] == [
        ("a1", "alpha"),
        ("old", None),
        ("b1", "beta"),
    ]
    assert [run.run_id for run in history.summaries(project="beta")] == ["b1"]
    assert history.summaries(project="gamma") == []
    assert history.projects() == ["alpha", "beta"]


def test_retention_keeps_the_newest_runs_of_each_project_on_each_machine(state_dir, store_url):
    history = RunHistory(state_dir, store_url)
    saved_runs(
        history,
        [
            ("b1", "beta", None, 0),
            ("a1", "alpha", None, 1),
            ("a2", "alpha", None, 2),
            ("a3", "alpha", None, 3),
        ],
    )
    history.save(
        make_report(
            "b-epyc", [make_entry(GPT2, make_result([1.0]))], machine=EPYC, days_after_t0=4
        ).model_copy(update={"project": "beta"})
    )

    removed = history.clean(keep_newest=1)

    # A busy project never deletes another's only run: beta's baseline outlives alpha's history.
    assert [run.run_id for run in removed] == ["a1", "a2"]
    assert [run.run_id for run in history.summaries()] == ["b1", "a3", "b-epyc"]


def test_retention_deletes_runs_and_what_only_they_hold_never_a_resumed_experiment(state_dir, store_url):
    states, history = StateManager(state_dir, store_url), RunHistory(state_dir, store_url)
    for day, (run_id, name) in enumerate([("r1", None), ("r2", "main"), ("r3", None), ("r4", None)]):
        state = states.create(f"{run_id}-exp", "c" * 16, run_id=run_id)
        state.advance(ExperimentPhase.MEASURING)
        state.advance(ExperimentPhase.DONE)
        state.result = make_result([1.0]).model_copy(update={"experiment_id": state.experiment_id})
        state.result.batch_latencies_s = [0.1, 0.2]  # a bulky part, kept in its own table
        states.save(state)
        entries = [make_entry(GPT2, state.result)]
        entries[0].experiment_id = state.experiment_id
        if run_id == "r4":  # r4 resumed r1's experiment: r1's state must outlive r1
            entries.append(make_entry(GPT2, state.result).model_copy(update={"experiment_id": "r1-exp"}))
        write_report(
            make_report(run_id, entries, name=name, days_after_t0=day), state_dir, store=states.store
        )

    removed = history.clean(keep_newest=1)

    assert [run.run_id for run in removed] == ["r1", "r3"]  # r2 is named, r4 the newest
    assert [run.run_id for run in history.summaries()] == ["r2", "r4"]
    assert sorted(s.experiment_id for s in states.all_states()) == ["r1-exp", "r2-exp", "r4-exp"]
    assert sorted(p.name for p in (state_dir / "runs").iterdir()) == ["r2", "r4"]
    with states.store.read() as conn:
        parts = set(conn.exec_driver_sql("SELECT experiment_id FROM experiment_parts").scalars())
        linked = set(conn.exec_driver_sql("SELECT run_id FROM run_experiments").scalars())
        reports = set(conn.exec_driver_sql("SELECT run_id FROM run_reports").scalars())
    assert parts == {"r1-exp", "r2-exp", "r4-exp"} and linked == reports == {"r2", "r4"}

    assert [run.run_id for run in history.clean(older_than=NOW, keep_named=False)] == ["r2", "r4"]
    assert states.all_states() == [] and history.summaries() == []


def test_a_batch_of_runs_is_saved_in_one_go_and_found_as_single_saves_are(state_dir, store_url, monkeypatch):
    from pytest_llem.store.report import save_runs

    monkeypatch.setenv("HF_TOKEN", "hf_sekrit")
    history = RunHistory(state_dir, store_url)
    result = make_result([1.0, 1.2]).model_copy(update={"batch_latencies_s": [0.5, 0.25]})
    # Saved before the batch, then replaced by it with other experiments.
    old = make_report("r0", [make_entry(GPT2, result).model_copy(update={"experiment_id": "gone"})])
    history.save(old)
    reports = [
        make_report(
            f"r{i}",
            [make_entry(GPT2, result).model_copy(update={"experiment_id": f"r{i}-exp"})],
            name="nightly hf_sekrit" if i == 1 else None,
            days_after_t0=i,
        )
        for i in range(3)
    ]
    reports[2].experiments[0].error = "failed holding hf_sekrit"

    assert save_runs(history.store, reports) == 3
    assert save_runs(history.store, []) == 0

    assert [run.run_id for run in history.summaries()] == ["r0", "r1", "r2"]
    assert [run.run_id for run in history.summaries(limit=2)] == ["r1", "r2"]
    assert history.latest(reports[0].machine.id).run_id == "r2"
    assert history.find("nightly ***").run_id == "r1"  # the name is redacted as the report is
    found = history.find("r2")
    assert found.experiments[0].error == "failed holding ***"
    assert found.experiments[0].result.batch_latencies_s == [0.5, 0.25]
    with history.store.read() as conn:
        linked = sorted(conn.exec_driver_sql("SELECT run_id, experiment_id FROM run_experiments").all())
    assert [tuple(row) for row in linked] == [("r0", "r0-exp"), ("r1", "r1-exp"), ("r2", "r2-exp")]


def test_repair_never_writes_outside_runs_for_a_row_whose_run_id_climbs_out(tmp_path, store_url):
    state_dir = tmp_path / "state"
    victim = tmp_path / "victim"
    victim.mkdir()
    worker = make_report("w", [make_entry(GPT2, make_result([1.0]))]).model_copy(
        update={"outcome": "running", "finished_at": None}
    )
    (victim / "report-gw0.json").write_text(worker.model_dump_json())  # looks like a checkpoint
    (state_dir / "runs").mkdir(parents=True)
    history = RunHistory(state_dir, store_url)
    # A row of a shared store that another machine wrote without checking its run id.
    history.save(worker.model_copy(update={"run_id": "../../victim"}))

    assert history.repair() == []
    assert sorted(p.name for p in victim.iterdir()) == ["report-gw0.json"]
