"""A benchmark session's experiments: each one from its config to its state and its report entry.

This is the work behind the pytest plugin, with no pytest in it, in the pytest process: the
plugin turns options into `LlemSettings`, picks this process's role in the run (`roles`),
calls `run_experiment` from the `llem` fixture and `finish` at the end. The run's report,
baseline and gate are its `run_record.RunRecord`.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from pytest_llem.backends import builtin_workload, server_log_path
from pytest_llem.backends.prompts import load_prompts
from pytest_llem.base.atomic import redact_file
from pytest_llem.base.digests import json_digest
from pytest_llem.base.redaction import EXTRA_NAMES_ENV, redact_text, set_extra_secret_names
from pytest_llem.config import (
    ExperimentConfig,
    build_config,
    compute_config_hash,
    default_timeout_s,
)
from pytest_llem.energy.uncertainty import energy_uncertainty
from pytest_llem.errors import ConfigError, ExperimentFailed, ExperimentInterrupted, LlemError, StorageError
from pytest_llem.fingerprints.model import model_fingerprint
from pytest_llem.gating.work import describe_work
from pytest_llem.isolation.launcher import build_experiment_env, reclaim_work_dirs
from pytest_llem.isolation.launchers import make_launcher
from pytest_llem.isolation.protocol import ExperimentRequest
from pytest_llem.isolation.repeats import RepeatPlan, run_repeats
from pytest_llem.isolation.signals import InterruptGuard, SessionInterrupts
from pytest_llem.isolation.workload import Workload, describe_workload
from pytest_llem.processes import process_start_time, signal_name
from pytest_llem.progress import MEASURING, ProgressEvent, ProgressListener
from pytest_llem.results import ExperimentResult
from pytest_llem.roles import Role, SingleProcessRole
from pytest_llem.run_record import RunRecord
from pytest_llem.settings import LlemSettings
from pytest_llem.store.experiments import ExperimentPhase, ExperimentState, sanitise_experiment_id
from pytest_llem.store.report import ReportEntry, SessionOutcome, WorkSignature
from pytest_llem.store.state import StateManager


class BenchmarkSession:
    """One pytest session's benchmarks: each experiment from its config to its state and its
    entry in the run's record (`run_record.RunRecord`), which this process's role (`roles`)
    keeps, gates and publishes."""

    def __init__(
        self,
        settings: LlemSettings,
        root: Path | None = None,
        role: Role | None = None,
        project_dir: Path | None = None,
    ) -> None:
        #: Lines for the user while a session waits (a GPU lease); the plugin writes them uncaptured.
        self.notify: Callable[[str], None] = lambda line: print(f"pytest-llem: {line}", file=sys.stderr)
        self.settings = settings
        self.root = root
        set_extra_secret_names(settings.redact_env)
        self.role = role or SingleProcessRole()
        self.states = StateManager(settings.state_dir, settings.store_url)
        #: SIGINT/SIGTERM for the whole session; the plugin installs it.
        self.interrupts = SessionInterrupts()
        #: The run's report, baseline, gate and storage problems.
        self.record = RunRecord(settings, self.role, self.states, self.interrupts, root, project_dir)
        #: Lines for the terminal as the session starts (which filesystem Slurm jobs rely on).
        self.start_notes: list[str] = []
        #: Follows each experiment process as it runs (set by the plugin; None: nobody watches).
        self.progress: ProgressListener | None = None
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

    @property
    def problems(self) -> list[str]:
        """Problems that did not stop the session, for the terminal summary (the record's)."""
        return self.record.problems

    def start(self) -> None:
        """Open the store (an unreachable one stops the session before anything is measured),
        and start the run's record: earlier runs repaired, states orphaned by a session that
        died failed, the baseline found."""
        self.record.open_store()
        note = self.launcher.check()
        if note is not None:
            self.start_notes.append(note)
        reclaim_work_dirs()  # left by a pytest that was SIGKILLed
        self.record.start()

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
        entry = ReportEntry(nodeid=nodeid, case_key=case_key, worker_id=self.role.worker_id)
        self.record.entries.append(entry)
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
                self.record.storage_failed(exc)
                entry.error = self._redact(str(exc))
                raise
            except LlemError as exc:
                entry.failed = True
                entry.error = self._redact(str(exc))
                raise
            finally:
                self.launcher.release()
                self.record.checkpoint()
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
        # The session's settings are the lowest layer: a marker's or a call's fields win, and
        # the settings' fields over every case (smoke mode's smallest workload) over them all.
        session_defaults = {
            "energy": self.settings.energy,
            "rounds": self.settings.rounds,
            "repeats": self.settings.repeats,
            "min_window_s": self.settings.min_window_s,
        }
        config = build_config(session_defaults, *config_layers, self.settings.fields_over_cases)
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
            run_id=self.record.report.run_id,
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
                partial(self.record.undecided, entry),
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
                run_id=self.record.report.run_id,
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
            self.record.states_behind = True
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

    def finish(self, outcome: SessionOutcome, exit_code: int) -> Path | None:
        """Stop the preloaded interpreter, then write the run's final report (`RunRecord.finish`)."""
        self.close_preloaded()
        return self.record.finish(outcome, exit_code)

    def complete_at_exit(self) -> None:
        """The preloaded interpreter stopped and the report's last word (`RunRecord.complete_at_exit`)."""
        self.close_preloaded()
        self.record.complete_at_exit()
