"""A benchmark session: runs experiments, keeps their states, and writes the session report.

This is the work behind the pytest plugin, with no pytest in it: the plugin turns options
into `LlemSettings`, calls `run_experiment` from the `llem` fixture and `finish` at the end.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from pytest_llem import __version__
from pytest_llem.backends import builtin_workload
from pytest_llem.backends.prompts import load_prompts
from pytest_llem.config import (
    ExperimentConfig,
    build_config,
    compute_config_hash,
    default_timeout_s,
    json_digest,
)
from pytest_llem.energy.uncertainty import energy_uncertainty
from pytest_llem.errors import (
    INTERRUPTED_EXIT_CODE,
    ConfigError,
    ExperimentFailed,
    ExperimentInterrupted,
    LlemError,
    StorageError,
)
from pytest_llem.gating.compare import Comparison, MetricChange, measured_by_case, needs_more_samples
from pytest_llem.gating.fingerprint import fingerprint_differences
from pytest_llem.gating.gate import GateOutcome, run_gate
from pytest_llem.gating.work import describe_work
from pytest_llem.isolation.files import server_log_path
from pytest_llem.isolation.launcher import build_experiment_env, reclaim_work_dirs
from pytest_llem.isolation.launchers import make_launcher
from pytest_llem.isolation.protocol import ExperimentRequest
from pytest_llem.isolation.repeats import RepeatPlan, run_repeats
from pytest_llem.isolation.signals import InterruptGuard, SessionInterrupts
from pytest_llem.isolation.workload import Workload, describe_workload
from pytest_llem.output.publish import publish
from pytest_llem.output.summary import SummaryView
from pytest_llem.processes import process_start_time, signal_name
from pytest_llem.progress import MEASURING, ProgressEvent, ProgressListener
from pytest_llem.results import ExperimentResult
from pytest_llem.settings import LlemSettings
from pytest_llem.store.atomic import DiskFull, disk_is_full, make_reserve, redact_file
from pytest_llem.store.database import StoreBusy, StoreFailed
from pytest_llem.store.history import RunHistory, UnknownRun, autosave_name
from pytest_llem.store.machine import MachineInfo
from pytest_llem.store.models import model_fingerprint
from pytest_llem.store.names import skipped_line
from pytest_llem.store.redaction import EXTRA_NAMES_ENV, redact_text, set_extra_secret_names
from pytest_llem.store.report import (
    ReportEntry,
    SessionOutcome,
    SessionReport,
    WorkSignature,
    read_worker_reports,
    report_path,
    take_in_workers,
    write_report,
)
from pytest_llem.store.state import (
    ExperimentPhase,
    ExperimentState,
    StateManager,
    sanitise_experiment_id,
    utc_now,
)

#: The smallest workload every backend accepts, laid over each case's fields in smoke mode
#: (`--llem-smoke`): it checks that a suite still runs, in seconds, and measures nothing.
SMOKE_FIELDS: dict[str, Any] = {
    "n_prompts": 1,
    "max_new_tokens": 1,
    "warmup_batches": 0,
    "rounds": 1,
    "repeats": 1,
    "min_window_s": 0,
    "energy": "none",
}


def smoke_settings(settings: LlemSettings, state_dir: Path) -> LlemSettings:
    """Settings for a smoke session: a throwaway state dir, nothing resumed, compared or published."""
    return dataclasses.replace(
        settings,
        state_dir=state_dir,
        resume=False,
        save_name=None,
        autosave=False,
        compare=None,
        compare_fail=(),
        json_path=None,
        store_url=None,
        markdown_path=None,
        html_path=None,
        benchmark_json_path=None,
        baseline_s=0.0,
        cooldown_s=0.0,
        cooldown_temp_c=None,
    )


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


class BenchmarkSession:
    """One pytest session's benchmarks.

    Under pytest-xdist each worker has its own, sharing the controller's `run_id`; its report
    is checkpointed as `report-<worker_id>.json` and `absorb`ed by the controller's session,
    which writes the merged `report.json`.
    """

    def __init__(
        self,
        settings: LlemSettings,
        root: Path | None = None,
        worker_id: str = "main",
        run_id: str | None = None,
        baseline_run_id: str | None = None,
    ) -> None:
        #: Lines for the user while a session waits (a GPU lease); the plugin writes them uncaptured.
        self.notify: Callable[[str], None] = lambda line: print(f"pytest-llem: {line}", file=sys.stderr)
        #: Smoke mode keeps states and the report in a folder removed at `finish`: no history.
        self.smoke_dir: Path | None = None
        if settings.smoke:
            self.smoke_dir = Path(tempfile.mkdtemp(prefix="pytest-llem-smoke-"))
            settings = smoke_settings(settings, self.smoke_dir)
        self.settings = settings
        self.root = root
        set_extra_secret_names(settings.redact_env)
        self.worker_id = worker_id
        self.states = StateManager(settings.state_dir, settings.store_url)
        self.history = RunHistory(settings.state_dir, settings.store_url)
        self.report = SessionReport(
            run_id=run_id or new_run_id(),
            started_at=utc_now(),
            plugin_version=__version__,
            owner_pid=os.getpid(),
            owner_start_time=process_start_time(os.getpid()),
        )
        self.report_name = "report.json" if worker_id == "main" else f"report-{worker_id}.json"
        self.report_path: Path | None = None
        #: Lines for the terminal as the session starts (which filesystem Slurm jobs rely on).
        self.start_notes: list[str] = []
        #: Problems that did not stop the session, for the terminal summary.
        self.problems: list[str] = []
        self.baseline: SessionReport | None = None
        #: An xdist worker's: the run its controller compares with (`repeats="auto"` needs it).
        self._baseline_run_id = baseline_run_id
        #: The comparison, budgets and failures, once `gate` has run.
        self.gate_outcome = GateOutcome()
        #: Follows each experiment process as it runs (set by the plugin; None: nobody watches).
        self.progress: ProgressListener | None = None
        #: SIGINT/SIGTERM for the whole session; the plugin installs it.
        self.interrupts = SessionInterrupts()
        self.finished = False
        #: The state dir or the store could not be written (a full disk, a store gone): one line,
        #: the session stops (exit 1).
        self.storage_problem: str | None = None
        #: A finished experiment's state could not reach done: `finish` tries again from the report.
        self._states_behind = False
        self.report_written = False
        self.storage_problem_shown = False
        #: xdist controller: each worker's latest report, and the workers that handed over.
        self._workers: dict[str, SessionReport] = {}
        self._final_workers: set[str] = set()
        #: Foreign or broken files met in the state dir, by path, with why they were skipped.
        self._skipped_files: dict[str, str] = {}
        #: Where and how experiments run (`--llem-launcher`): GPU leases, idle baselines and
        #: the start method are its own; the problems it meets join the session's.
        self.launcher = make_launcher(
            settings,
            note_problem=self.problems.append,
            notify=lambda line: self.notify(line),
            interrupted=lambda: self.interrupts.received is not None,
        )

    @property
    def collected_backends(self) -> set[str | None]:
        """The backends the collected cases name (`cases_collected`): what `preload=auto` imports."""
        return self.launcher.collected_backends

    @collected_backends.setter
    def collected_backends(self, backends: set[str | None]) -> None:
        self.launcher.collected_backends = backends

    def cases_collected(self, cases: list[ExperimentConfig], will_run: bool) -> None:
        """Take in the selected cases' marker configs; a preloading launcher may start its
        preloaded interpreter now (`launchers.LocalLauncher.cases_collected`)."""
        self.launcher.cases_collected(cases, will_run)

    def close_preloaded(self) -> None:
        """Stop what the launcher started for the session (the preloaded interpreter)."""
        self.launcher.close()

    def full_disk_at_start(self, exc: LlemError) -> str | None:
        """The line for a `start` that failed because the state dir's disk is full, which stops
        the session with exit 1 as a disk that fills later does; None when it failed for another
        reason (a usage error, exit 4). A store that cannot even be opened on a full disk says
        "check the URL": the disk is what to fix, and the line says so."""
        if isinstance(exc, DiskFull):
            return str(exc)
        if not disk_is_full(self.settings.state_dir):
            return None
        reason = str(exc).split("; ")[0]
        return (
            f"the disk of the state dir {self.settings.state_dir} is full, so the session cannot "
            f"start ({reason}); free space there or choose another --llem-state-dir"
        )

    @property
    def entries(self) -> list[ReportEntry]:
        return self.report.experiments

    def summary_view(self) -> SummaryView:
        """The results table as asked for; a smoke run's figures measure nothing: no figures."""
        view = self.settings.summary_view()
        if self.settings.smoke:
            return SummaryView(("test", "status"), view.sort if view.sort in ("test", "status") else None)
        return view

    def start(self) -> None:
        """Create the state dir, open the store (an unreachable one stops the session before
        anything is measured), and fail states orphaned by a session that died."""
        try:
            self.states.ensure_dirs()
        except StorageError:
            raise
        except OSError as exc:
            raise ConfigError(
                f"cannot use state dir {self.settings.state_dir}: {exc.strerror or exc}; "
                "choose another with --llem-state-dir or PYTEST_LLEM_STATE_DIR"
            ) from None
        self.history = RunHistory(self.settings.state_dir, store=self.states.store)
        self.history.skipped.update(self.states.skipped)  # JSON files of the state dir, imported once
        make_reserve(self.settings.state_dir)
        note = self.launcher.check()
        if note is not None:
            self.start_notes.append(note)
        reclaim_work_dirs()  # left by a pytest that was SIGKILLed
        if self.worker_id == "main":
            # Before stale cleanup: a run that lost its store kept its results in its report
            # file, and they bring its experiments' states to done instead of stale.
            repaired = self.history.repair(exclude_run_id=self.report.run_id)
            if repaired:
                self.problems.append(
                    f"completed the report of {len(repaired)} earlier run(s) that a killed session, an "
                    f"interrupted xdist session or a lost store left unfinished: {', '.join(repaired)}"
                )
        stale = self.states.cleanup_stale()
        self.report.stale_experiments = [s.experiment_id for s in stale]
        self._skipped_files.update(self.states.skipped)
        self.report.machine = MachineInfo.current()
        if self.settings.save_name:
            self.report.name = self.settings.save_name
        elif self.settings.autosave:
            self.report.name = autosave_name(self.root)
        if self.worker_id == "main":
            # In the store from the start, so that a controller killed before its first
            # checkpoint still leaves a run that the next session can complete.
            self.history.save(self.report, self.root)
        if self.worker_id == "main" and (self.settings.compare or self.settings.compare_fail):
            self.baseline = self._find_baseline(self.settings.compare or "latest")
        elif self._baseline_run_id is not None:
            # The controller chose it and says what it found; a worker reads the same run so
            # that `repeats="auto"` can tell when a case's comparison is settled.
            try:
                self.baseline = self.history.find(self._baseline_run_id)
            except UnknownRun:
                self.baseline = None

    def _find_baseline(self, ref: str) -> SessionReport | None:
        history = self.history
        if ref != "latest":
            try:
                return history.find(ref)
            except UnknownRun as exc:
                raise ConfigError(f"--llem-compare: {exc}") from None
        assert self.report.machine is not None
        baseline = history.latest(self.report.machine.id, exclude_run_id=self.report.run_id)
        newer_unreadable = [
            item
            for item in history.skipped_after(baseline.run_id if baseline else None)
            if f"/{self.report.run_id}/" not in item
        ]
        if newer_unreadable:  # never a silent fall-back to an older baseline
            self.problems.append(
                f"the newest saved run(s) cannot be read, so the comparison uses "
                f"{'run ' + baseline.run_id if baseline else 'nothing'}: {'; '.join(newer_unreadable)}"
            )
        self._skipped_files.update(history.skipped)
        if baseline is None:
            self.problems.append(
                f"nothing to compare with: no earlier run on this machine (id {self.report.machine.id}) "
                "finished uninterrupted with a measured experiment; this run can be the baseline of the next"
            )
        return baseline

    def gate(self) -> bool:
        """Compare with the baseline and check budgets; return whether that fails the session.

        Only the session that holds every experiment gates (not an xdist worker).
        """
        if self.worker_id != "main" or self.settings.smoke:
            return False
        self.gate_outcome = run_gate(
            self.report,
            self.baseline,
            self.settings.compare_fail,
            self.settings.gate_flagged,
            compare_requested=bool(self.settings.compare or self.settings.compare_fail),
            across_machines=self.settings.compare_across_machines,
        )
        self.problems.extend(self.gate_outcome.notes)
        return self.gate_outcome.failed

    def test_failed(self, nodeid: str) -> None:
        """pytest failed the test `nodeid`: its experiments' status says so, whatever they measured."""
        for entry in self.entries:
            if entry.nodeid == nodeid:
                entry.test_failed = True

    def skipped_files(self) -> list[str]:
        """One line per file of the state dir skipped this session (each named once)."""
        self._skipped_files.update(self.states.skipped)
        return [skipped_line(what, why) for what, why in sorted(self._skipped_files.items())]

    @property
    def comparison(self) -> Comparison | None:
        return self.gate_outcome.comparison

    @property
    def failures(self) -> list[MetricChange]:
        """Regressions and exceeded budgets, once `gate` has run."""
        return self.gate_outcome.failures

    def run_experiment(
        self,
        nodeid: str,
        workload: Workload | str | None,
        config_layers: list[Mapping[str, Any]],
        case_key: str | None = None,
    ) -> ExperimentResult:
        """Validate, run in an isolated child, persist and report one experiment.

        `case_key` identifies the case across runs (`store.cases.case_key`); the node id when None.
        Raises `LlemError` subclasses whose message is meant for the user as it is.
        """
        entry = ReportEntry(nodeid=nodeid, case_key=case_key, worker_id=self.worker_id)
        self.entries.append(entry)
        guard = InterruptGuard(self.interrupts)
        # The guard covers teardown *and* bookkeeping: a signal cannot leave a state half-done.
        with guard.installed():
            try:
                result = self._run(entry, workload, config_layers, guard)
            except ExperimentInterrupted as exc:
                if exc.result is None:
                    entry.failed = entry.interrupted = True
                    entry.error = str(exc)
                raise
            except StorageError as exc:
                # Not the experiment's failure: what it measured stays in the entry.
                self._storage_failed(exc)
                entry.error = self._redact(str(exc))
                raise
            except LlemError as exc:
                entry.failed = True
                entry.error = self._redact(str(exc))
                raise
            finally:
                self.launcher.release()
                self._checkpoint()
        if guard.received is not None:
            # The experiment finished just as the signal came: it is kept, the session stops.
            raise ExperimentInterrupted(signal_name(guard.received), result=result)
        return result

    def _run(
        self,
        entry: ReportEntry,
        workload: Workload | str | None,
        config_layers: list[Mapping[str, Any]],
        guard: InterruptGuard,
    ) -> ExperimentResult:
        # The session's settings are the lowest layer: a marker's or a call's fields win.
        session_defaults = {
            "energy": self.settings.energy,
            "rounds": self.settings.rounds,
            "repeats": self.settings.repeats,
            "min_window_s": self.settings.min_window_s,
        }
        smoke_layer = [SMOKE_FIELDS] if self.settings.smoke else []
        config = build_config(session_defaults, *config_layers, *smoke_layer)
        if workload is None:
            workload = builtin_workload(config)
            if workload is None:
                raise ConfigError(
                    "llem.run() needs a workload function, or backend= naming a built-in backend "
                    "(or scenario='serving' with server=)"
                )
        spec = describe_workload(workload)
        self.launcher.workload_named(spec.ref.partition(":")[0])
        entry.model_fingerprint = model_fingerprint(config.model)
        config_hash = compute_config_hash(config, spec.ref, entry.model_fingerprint)
        entry.config = config.model_dump(mode="json")
        entry.config_hash = config_hash
        entry.workload = spec.ref
        # The prompts' text, not their file's name: the work a comparison must find equal.
        uses_prompts = (
            config.backend is not None or config.prompts is not None or config.scenario == "serving"
        )
        entry.work = WorkSignature(prompt_digest=json_digest(load_prompts(config)) if uses_prompts else None)

        if self.settings.resume:
            previous = self.states.find_resumable(config_hash)
            if previous is not None and previous.result is not None:
                entry.experiment_id = previous.experiment_id
                entry.phase = previous.phase.value
                entry.resumed = True
                entry.result = previous.result.model_copy(update={"resumed": True})
                if entry.result.energy_uncertainty is None:  # saved before uncertainties existed
                    entry.result.energy_uncertainty = energy_uncertainty(entry.result)
                self._describe_work(entry)
                return entry.result

        experiment_id = self._experiment_id(entry.nodeid, config.experiment_id, config_hash)
        if config.experiment_id is not None:
            experiment_id = self._unused_id(experiment_id)
        env = build_experiment_env(config, experiment_id, store_url=self.settings.store_url)
        if self.settings.redact_env:  # the child redacts what it writes too
            env[EXTRA_NAMES_ENV] = ",".join(self.settings.redact_env)
        # Before the experiment exists: a Ctrl-C while waiting for GPUs or during a long
        # cool-down leaves no state behind.
        meter_options = self.launcher.prepare(config, experiment_id, env, guard)
        entry.experiment_id = experiment_id
        state = self.states.create(
            experiment_id,
            config_hash,
            run_id=self.report.run_id,
            nodeid=entry.nodeid,
            case_key=entry.case_key,
        )
        entry.phase = state.phase.value
        request = ExperimentRequest(
            experiment_id=experiment_id,
            config=config,
            config_hash=config_hash,
            workload=spec,
            state_dir=str(self.settings.state_dir),
            sys_path=[p for p in sys.path if p],
            meter=meter_options,
        )
        timeout_s = config.timeout if config.timeout is not None else self.settings.timeout_s
        if timeout_s is None:
            timeout_s = default_timeout_s(config)
        try:
            # Each process is a fresh child in its own group; a failure in any fails the experiment.
            plan = RepeatPlan.of(config.repeats)
            result = run_repeats(
                plan,
                lambda process: self._run_process(
                    entry.nodeid, request, env, guard, timeout_s, process, plan.maximum
                ),
                partial(self._undecided, entry),
            )
        except ExperimentInterrupted as exc:
            if exc.result is not None:
                self._mark_done(entry, self.launcher.placed(exc.result))
            else:
                self._mark_failed(entry, f"interrupted by {exc.signal_name}; its {self.launcher.how_stopped}")
            raise
        except ExperimentFailed as exc:
            self._mark_failed(entry, str(exc))
            raise
        return self._mark_done(entry, self.launcher.placed(result))

    def _undecided(self, entry: ReportEntry, result: ExperimentResult) -> bool:
        """Whether one more process could decide `entry`'s comparison with its baseline case
        (`repeats="auto"`); without a baseline, or a baseline on other hardware, nothing can."""
        if self.baseline is None or self.settings.smoke:
            return False
        before = measured_by_case(self.baseline).get(entry.key)
        if before is None:
            return False
        hardware = fingerprint_differences(self.baseline.machine, self.report.machine).hardware
        if hardware and not self.settings.compare_across_machines:
            return False
        prompt_digest = entry.work.prompt_digest if entry.work else None
        return needs_more_samples(
            before, result, prompt_digest, self.settings.compare_fail, self.settings.gate_flagged
        )

    def _run_process(
        self,
        nodeid: str,
        request: ExperimentRequest,
        env: dict[str, str],
        guard: InterruptGuard,
        timeout_s: float | None,
        process: int,
        processes: int,
    ) -> ExperimentResult:
        """One of the experiment's processes, followed by `self.progress` while it runs.

        The session writes the state for the child: its group leader as it starts, and the
        measuring phase when the child reports it has begun to measure."""
        listener = self.progress
        experiment_id = request.experiment_id

        def on_start(pid: int) -> None:
            try:
                self.states.record_subprocess(experiment_id, pid, process_start_time(pid))
            except StorageError:
                pass  # a full disk: the owner's identity still guards the state; `done` gets the reserve

        def on_progress(events: list[ProgressEvent]) -> None:
            if any(event.phase == MEASURING for event in events):
                self._enter_measuring(experiment_id)
            if listener is not None:
                listener.update(events)

        try:
            if listener is None:
                return self.launcher.launch(request, env, guard, timeout_s, on_progress, on_start)
            listener.started(nodeid, process + 1, processes)
            outcome = "failed"
            try:
                result = self.launcher.launch(request, env, guard, timeout_s, on_progress, on_start)
                outcome = "done"
                return result
            except ExperimentInterrupted:
                outcome = "interrupted"
                raise
            finally:
                listener.ended(outcome)
        finally:
            # The server a serving case starts writes its own log; the group is gone now, so
            # what it printed can be scrubbed like every other file of the state dir.
            redact_file(server_log_path(Path(request.state_dir), request.experiment_id), env)

    def _enter_measuring(self, experiment_id: str) -> None:
        # With processes > 1, a later process finds the experiment measuring already.
        try:
            state = self.states.load(experiment_id, with_parts=False)
            if state is not None and state.active and state.phase is ExperimentPhase.INITIALISING:
                self.states.advance(experiment_id, ExperimentPhase.MEASURING)
        except StorageError:
            pass  # a full disk, a store gone: the experiment goes on; its end says what was kept

    def _experiment_id(self, nodeid: str, requested: str | None, config_hash: str) -> str:
        if requested is not None:
            return sanitise_experiment_id(requested)
        test_name = nodeid.rpartition("::")[2] or nodeid
        return sanitise_experiment_id(f"{test_name[:80]}-{config_hash[:8]}-{uuid.uuid4().hex[:6]}")

    def _unused_id(self, experiment_id: str) -> str:
        """A fixed id that a session still running on this machine holds gets a unique suffix."""
        holder = self.states.load(experiment_id)
        if holder is None or not self.states.held_by_another_live_session(holder):
            return experiment_id
        return self._moved_id(experiment_id, f"is in use by a session still running (pid {holder.owner_pid})")

    def _moved_id(self, experiment_id: str, why: str) -> str:
        moved = sanitise_experiment_id(f"{experiment_id[:120]}-{uuid.uuid4().hex[:6]}")
        self.problems.append(
            f"experiment_id {experiment_id!r} {why}; this session's result is saved as {moved}"
        )
        return moved

    def _own_state(self, entry: ReportEntry) -> ExperimentState:
        """The entry's state, unless another session took its fixed id over meanwhile: then a
        new state under a moved id, so both results are kept and neither session's is lost."""
        assert entry.experiment_id is not None and entry.config_hash is not None
        state = self.states.load(entry.experiment_id)
        if state is not None and state.owner_pid != os.getpid():
            entry.experiment_id = self._moved_id(entry.experiment_id, "was taken over by another session")
            state = self.states.create(
                entry.experiment_id,
                entry.config_hash,
                run_id=self.report.run_id,
                nodeid=entry.nodeid,
                case_key=entry.case_key,
            )
        if state is None:
            raise ExperimentFailed(f"state of {entry.experiment_id} vanished from the state dir")
        return state

    def _mark_done(self, entry: ReportEntry, result: ExperimentResult) -> ExperimentResult:
        result.energy_uncertainty = energy_uncertainty(result)
        # In the entry first: if the store fails below, the report file still keeps the result,
        # and `finish` (or the next session's repair) brings the state to done from it.
        entry.phase = ExperimentPhase.DONE.value
        entry.result = result
        self._describe_work(entry)
        try:
            state = self._own_state(entry)
            if result.experiment_id != state.experiment_id:  # moved: the result says where it is
                result = entry.result = result.model_copy(update={"experiment_id": state.experiment_id})
            if state.phase is ExperimentPhase.INITIALISING:
                state.advance(ExperimentPhase.MEASURING)
            state.advance(ExperimentPhase.DONE)
            state.result = result
            self.states.save(state)  # on a full disk: the reserve is given up for this write
        except StorageError:
            self._states_behind = True
            raise
        return result

    def _describe_work(self, entry: ReportEntry) -> None:
        """The work signature once a result is in (its prompt digest was taken before the run)."""
        assert entry.result is not None and entry.config is not None
        prompt_digest = entry.work.prompt_digest if entry.work else None
        entry.work = describe_work(entry.config, entry.result, prompt_digest)

    def _mark_failed(self, entry: ReportEntry, message: str) -> None:
        state = self._own_state(entry)
        state.mark_failed(self._redact(message))
        self.states.save(state)
        entry.phase = state.phase.value

    def _redact(self, text: str) -> str:
        return redact_text(text, root=self.root)

    def absorb(self, worker_id: str, worker_report: SessionReport) -> None:
        """Take in a finished xdist worker's experiments (controller side)."""
        self._workers[worker_id] = worker_report
        self._final_workers.add(worker_id)
        self._checkpoint()

    def absorb_checkpoints(self) -> bool:
        """Take in the workers' checkpoints on disk that never came back through xdist (a
        worker killed, the controller interrupted first); True if the report changed."""
        if self.worker_id != "main":
            return False
        run_dir = report_path(self.settings.state_dir, self.report.run_id).parent
        changed = False
        for wid, worker_report in read_worker_reports(run_dir).items():
            if wid in self._final_workers or self._workers.get(wid) == worker_report:
                continue
            self._workers[wid] = worker_report
            changed = True
        return changed

    def _checkpoint(self) -> None:
        """Write the report; a full disk or a failed store is noted in `storage_problem`, never
        raised. The file is written before the store's row, so a store that failed leaves it."""
        if self._workers:
            take_in_workers(self.report, self._workers)
        try:
            self.report_path = write_report(
                self.report, self.settings.state_dir, self.root, self.report_name, self.states.store
            )
            self.report_written = True
        except (StoreFailed, StoreBusy) as exc:
            self.report_path = report_path(self.settings.state_dir, self.report.run_id, self.report_name)
            self.report_written = True
            self._storage_failed(exc)
        except StorageError as exc:
            self._storage_failed(exc)
            self.report_written = False

    def _storage_failed(self, exc: StorageError) -> None:
        """Note the first storage problem as the session's one line."""
        if self.storage_problem is not None:
            return
        line = str(exc)
        if isinstance(exc, (StoreFailed, StoreBusy)):
            kept = report_path(self.settings.state_dir, self.report.run_id, self.report_name)
            line += (
                f"; the results measured are kept in {kept}, and the next session on this state dir "
                f"(or `pytest-llem import {self.settings.state_dir}`) takes them into the store"
            )
        self.storage_problem = line

    def _catch_up_states(self) -> None:
        """States whose `done` the store refused (busy, gone) are brought there from the
        report, if the store works again; if not, the next session's repair does it."""
        if not self._states_behind:
            return
        try:
            self.states.restore_done(self.report)
            self._states_behind = False
        except StorageError:
            pass

    def complete_at_exit(self) -> None:
        """The last word on the report: rewritten when a signal came after it was written (or
        before there was one), or when xdist workers checkpointed after sessionfinish."""
        self.interrupts.stop_raising()
        workers_wrote_more = self.finished and self.absorb_checkpoints()
        interrupted = self.interrupts.received is not None
        if workers_wrote_more or (interrupted and self.report.outcome != "interrupted"):
            self.finish(self.report.outcome, self.report.exit_code or 0)  # a signal: interrupted

    def finish(self, outcome: SessionOutcome, exit_code: int) -> Path | None:
        """Write the final report; signals arriving meanwhile are ignored (we are stopping anyway).

        A session that received a signal at any point is "interrupted", whatever it was told.
        A smoke session removes its throwaway state dir instead and returns None.
        """
        if self.interrupts.received is not None:
            outcome, exit_code = "interrupted", INTERRUPTED_EXIT_CODE
        self.report.outcome = outcome
        self.report.exit_code = exit_code
        self.report.finished_at = utc_now()
        self.finished = True
        self.close_preloaded()
        self.absorb_checkpoints()
        with InterruptGuard(self.interrupts).installed():
            if self.smoke_dir is not None:
                shutil.rmtree(self.smoke_dir, ignore_errors=True)
                self.report_path = None
                return None
            self._catch_up_states()
            self._checkpoint()
            if self.worker_id == "main":
                self.problems.extend(
                    publish(
                        self.report,
                        self.comparison,
                        self.failures,
                        self.settings,
                        self.root,
                        refusal=self.gate_outcome.refusal,
                    )
                )
        return self.report_path
