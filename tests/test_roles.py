"""Each process's part in a run: one process, an xdist controller, an xdist worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sample_reports import make_entry, make_report, make_result

from pytest_llem.errors import ConfigError
from pytest_llem.fingerprints.machine import MachineInfo
from pytest_llem.gating.limits import parse_limit
from pytest_llem.isolation.signals import SessionInterrupts
from pytest_llem.roles import Role, SingleProcessRole, XdistControllerRole, XdistWorkerRole
from pytest_llem.run_record import RunRecord
from pytest_llem.settings import LlemSettings
from pytest_llem.store.history import UnknownRun
from pytest_llem.store.report import SessionReport, load_report, report_path
from pytest_llem.store.state import StateManager

NODE = "tests/test_x.py::case"


def started(state_dir: Path, role: Role, **settings) -> RunRecord:
    """A run's record as a session starts it, for `role`."""
    llem = LlemSettings(enabled=True, state_dir=state_dir, energy="none", **settings)
    record = RunRecord(llem, role, StateManager(state_dir), SessionInterrupts())
    record.open_store()
    record.start()
    return record


def earlier_run(state_dir: Path, run_id: str = "earlier", **settings) -> SessionReport:
    """A finished run of this project on this machine with one measured case: the default baseline."""
    record = started(state_dir, SingleProcessRole(), **settings)
    report = make_report(run_id, [make_entry(NODE, make_result([100.0]))], machine=MachineInfo.current())
    report.project = record.report.project
    record.history.save(report)
    return report


def worker_report(worker_id: str, run_id: str) -> SessionReport:
    return make_report(run_id, [make_entry(f"{NODE}[{worker_id}]", make_result([5.0]), worker_id=worker_id)])


@pytest.mark.parametrize(
    ("role", "name"),
    [
        (SingleProcessRole(), "report.json"),
        (XdistControllerRole(), "report.json"),
        (XdistWorkerRole("gw1", run_id="run-1", baseline_run_id=None), "report-gw1.json"),
    ],
)
def test_each_role_writes_its_own_report_file_in_the_runs_folder(state_dir: Path, role: Role, name: str):
    record = started(state_dir, role)
    record.checkpoint()
    assert record.report_path == report_path(state_dir, record.report.run_id, name)
    assert json.loads(record.report_path.read_text())["run_id"] == record.report.run_id


def test_a_worker_reports_to_its_controllers_run_and_the_others_to_a_new_one(state_dir: Path):
    worker = started(state_dir, XdistWorkerRole("gw0", run_id="run-of-the-controller", baseline_run_id=None))
    assert worker.report.run_id == "run-of-the-controller"
    first, second = started(state_dir, SingleProcessRole()), started(state_dir, SingleProcessRole())
    assert first.report.run_id != second.report.run_id


@pytest.mark.parametrize("role", [SingleProcessRole(), XdistControllerRole()])
def test_the_run_is_in_the_store_from_the_start_unless_a_worker_runs_it(state_dir: Path, role: Role):
    record = started(state_dir, role)
    assert record.history.find(record.report.run_id).outcome == "running"
    worker = started(state_dir, XdistWorkerRole("gw0", run_id="the-workers-run", baseline_run_id=None))
    with pytest.raises(UnknownRun):
        worker.history.find("the-workers-run")


def test_only_the_process_holding_every_experiment_repairs_earlier_runs(state_dir: Path, monkeypatch):
    repaired: list[str] = []

    def repair(self, exclude_run_id: str | None = None) -> list[str]:
        repaired.append("asked")
        return ["killed-run"]

    from pytest_llem.store.history import RunHistory

    monkeypatch.setattr(RunHistory, "repair", repair)
    worker = started(state_dir, XdistWorkerRole("gw0", run_id="run-1", baseline_run_id=None))
    assert not repaired and not worker.problems
    single = started(state_dir, SingleProcessRole())
    assert repaired == ["asked"]
    assert single.problems == [
        "completed the report of 1 earlier run(s) that a killed session, an interrupted xdist session "
        "or a lost store left unfinished: killed-run"
    ]


def test_the_baseline_is_found_from_compare_and_only_when_asked_for(state_dir: Path):
    earlier = earlier_run(state_dir)
    assert started(state_dir, SingleProcessRole()).baseline is None
    assert started(state_dir, SingleProcessRole(), compare="latest").baseline.run_id == earlier.run_id
    gated = started(state_dir, XdistControllerRole(), compare_fail=(parse_limit("energy_j:10%"),))
    assert gated.baseline.run_id == earlier.run_id  # limits compare with the latest run
    with pytest.raises(ConfigError, match="--llem-compare: "):
        started(state_dir, SingleProcessRole(), compare="no-such-run")


def test_without_an_earlier_run_the_baseline_is_none_and_a_line_says_so(state_dir: Path):
    record = started(state_dir, SingleProcessRole(), compare="latest")
    assert record.baseline is None
    assert record.problems[-1].startswith(
        f"nothing to compare with: no earlier run of project {record.report.project!r} on this machine"
    )
    assert record.problems[-1].endswith("; this run can be the baseline of the next")


def test_a_bare_compare_never_takes_another_projects_run_and_names_it_in_one_line(state_dir: Path):
    theirs = earlier_run(state_dir, "theirs", project="alpha")
    record = started(state_dir, SingleProcessRole(), compare="latest", project="beta")
    assert record.report.project == "beta"
    assert record.baseline is None
    (line,) = [problem for problem in record.problems if problem.startswith("nothing to compare with")]
    assert line == (
        f"nothing to compare with: no earlier run of project 'beta' on this machine (id "
        f"{record.report.machine.id}) finished uninterrupted with a measured experiment; the newest run "
        "that did is theirs, of project 'alpha', compared with only when named: --llem-compare=theirs"
    )
    named = started(state_dir, SingleProcessRole(), compare="theirs", project="beta")
    assert named.baseline.run_id == theirs.run_id
    assert not [problem for problem in named.problems if "compar" in problem]  # a run id names one run
    ours = earlier_run(state_dir, "ours", project="beta")
    assert (
        started(state_dir, SingleProcessRole(), compare="latest", project="beta").baseline.run_id
        == ours.run_id
    )
    assert (
        started(state_dir, SingleProcessRole(), compare="latest", project="alpha").baseline.run_id == "theirs"
    )


def test_a_run_saved_before_projects_is_named_as_such_never_taken_by_a_bare_compare(state_dir: Path):
    legacy = make_report("legacy", [make_entry(NODE, make_result([100.0]))], machine=MachineInfo.current())
    started(state_dir, SingleProcessRole()).history.save(legacy)
    record = started(state_dir, SingleProcessRole(), compare_fail=(parse_limit("energy_j:10%"),))
    assert record.baseline is None
    assert record.problems[-1].endswith(
        "the newest run that did is legacy, saved without a project (by an earlier pytest-llem), "
        "compared with only when named: --llem-compare=legacy"
    )


def test_a_run_name_is_this_projects_first_and_another_projects_with_a_line_that_says_so(state_dir: Path):
    record = started(state_dir, SingleProcessRole(), project="alpha")
    for run_id, project, day in [("ours", "alpha", 0), ("theirs", "beta", 1)]:
        report = make_report(run_id, [make_entry(NODE, make_result([100.0]))], name="main", days_after_t0=day)
        report.project = project
        record.history.save(report)

    mine = started(state_dir, SingleProcessRole(), compare="main", project="alpha")
    assert mine.baseline.run_id == "ours" and not mine.problems
    other = started(state_dir, SingleProcessRole(), compare="main", project="gamma")
    assert other.baseline.run_id == "theirs"
    assert other.problems == [
        "--llem-compare=main: no run of project 'gamma' has that name, so the comparison uses the newest "
        "run that has: theirs, of project 'beta'"
    ]


def test_a_worker_reads_the_baseline_its_controller_found_and_nothing_else(state_dir: Path):
    earlier = earlier_run(state_dir)
    handed = XdistWorkerRole("gw0", run_id="run-1", baseline_run_id=earlier.run_id)
    assert started(state_dir, handed, compare="latest").baseline.run_id == earlier.run_id
    none_handed = XdistWorkerRole("gw0", run_id="run-1", baseline_run_id=None)
    assert started(state_dir, none_handed, compare="latest").baseline is None  # never looked up itself
    gone = XdistWorkerRole("gw0", run_id="run-1", baseline_run_id="deleted-run")
    assert started(state_dir, gone).baseline is None


def test_limits_without_a_baseline_fail_the_gate_but_never_a_workers(state_dir: Path):
    limits = (parse_limit("energy_j:10%"),)
    single = started(state_dir, SingleProcessRole(), compare_fail=limits)
    single.entries.append(make_entry(NODE, make_result([100.0])))
    assert single.gate() is True
    assert "limits were set but there is no baseline" in single.gate_outcome.refusal
    worker_role = XdistWorkerRole("gw0", run_id="run-1", baseline_run_id=None)
    worker = started(state_dir, worker_role, compare_fail=limits)
    worker.entries.append(make_entry(NODE, make_result([100.0])))
    assert worker.gate() is False and worker.gate_outcome.refusal is None


def test_settings_that_turn_the_gate_off_leave_it_off(state_dir: Path):
    record = started(state_dir, SingleProcessRole(), compare_fail=(parse_limit("energy_j:10%"),), gated=False)
    assert record.gate() is False and record.gate_outcome.refusal is None


def test_the_controller_takes_in_reports_handed_over_and_left_on_disk(state_dir: Path):
    controller = XdistControllerRole()
    record = started(state_dir, controller)
    run_id = record.report.run_id
    controller.absorb(record, "gw0", worker_report("gw0", run_id))
    written = load_report(record.report_path)
    assert [e.worker_id for e in written.experiments] == ["gw0"]

    # A worker killed before it handed over left only its checkpoint.
    killed = started(state_dir, XdistWorkerRole("gw1", run_id=run_id, baseline_run_id=None))
    killed.entries.append(make_entry(f"{NODE}[gw1]", make_result([5.0]), worker_id="gw1"))
    killed.checkpoint()
    assert controller.absorb_checkpoints(record) is True
    assert controller.absorb_checkpoints(record) is False  # nothing new since
    record.finish("passed", 0)
    assert sorted(e.worker_id for e in load_report(record.report_path).experiments) == ["gw0", "gw1"]


def test_a_checkpoint_never_replaces_a_report_the_worker_handed_over(state_dir: Path):
    controller = XdistControllerRole()
    record = started(state_dir, controller)
    run_id = record.report.run_id
    stale = started(state_dir, XdistWorkerRole("gw0", run_id=run_id, baseline_run_id=None))
    stale.checkpoint()  # an earlier checkpoint, without the experiment the handover has
    controller.absorb(record, "gw0", worker_report("gw0", run_id))
    assert controller.absorb_checkpoints(record) is False
    assert len(record.entries) == 1


@pytest.mark.parametrize(
    "role", [SingleProcessRole(), XdistWorkerRole("gw0", run_id="run-1", baseline_run_id=None)]
)
def test_a_single_process_or_a_worker_takes_in_no_checkpoints(state_dir: Path, role: Role):
    record = started(state_dir, role)
    other = started(state_dir, XdistWorkerRole("gw9", run_id=record.report.run_id, baseline_run_id=None))
    other.entries.append(make_entry(NODE, make_result([5.0]), worker_id="gw9"))
    other.checkpoint()
    assert role.absorb_checkpoints(record) is False
    record.checkpoint()
    assert all(e.worker_id != "gw9" for e in load_report(record.report_path).experiments)


def test_only_the_process_holding_every_experiment_publishes(state_dir: Path, tmp_path: Path):
    published = tmp_path / "single.json"
    started(state_dir, SingleProcessRole(), json_path=published).finish("passed", 0)
    assert json.loads(published.read_text())["outcome"] == "passed"
    not_published = tmp_path / "worker.json"
    worker = XdistWorkerRole("gw0", run_id="run-1", baseline_run_id=None)
    path = started(state_dir, worker, json_path=not_published).finish("passed", 0)
    assert path is not None and path.name == "report-gw0.json"  # its report is the controller's to merge
    assert not not_published.exists()
