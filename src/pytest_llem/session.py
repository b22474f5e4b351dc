"""A benchmark session: runs experiments, keeps their states, and writes the session report.

This is the work behind the pytest plugin, with no pytest in it: the plugin turns options
into `LlemSettings`, calls `run_experiment` from the `llem` fixture and `finish` at the end.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from pytest_llem import __version__
from pytest_llem.backends import BACKEND_WORKLOADS
from pytest_llem.backends.prompts import load_prompts
from pytest_llem.config import build_config, compute_config_hash, json_digest
from pytest_llem.energy.idle import IdleBaselines
from pytest_llem.energy.meter import MeterOptions
from pytest_llem.energy.uncertainty import energy_uncertainty
from pytest_llem.errors import ConfigError, ExperimentFailed, ExperimentInterrupted, LlemError
from pytest_llem.gating.compare import Comparison, MetricChange
from pytest_llem.gating.gate import GateOutcome, run_gate
from pytest_llem.gating.work import describe_work
from pytest_llem.isolation.launcher import build_experiment_env, run_in_child
from pytest_llem.isolation.protocol import ExperimentRequest
from pytest_llem.isolation.repeats import pool_processes
from pytest_llem.isolation.signals import InterruptGuard, sleep_unless_interrupted
from pytest_llem.isolation.workload import Workload, describe_workload
from pytest_llem.output.publish import publish
from pytest_llem.processes import signal_name
from pytest_llem.results import ExperimentResult
from pytest_llem.settings import LlemSettings
from pytest_llem.store.history import RunHistory, UnknownRun, autosave_name
from pytest_llem.store.machine import MachineInfo
from pytest_llem.store.models import model_fingerprint
from pytest_llem.store.redaction import redact_text
from pytest_llem.store.report import ReportEntry, SessionOutcome, SessionReport, WorkSignature, write_report
from pytest_llem.store.state import ExperimentPhase, StateManager, sanitise_experiment_id, utc_now


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
    ) -> None:
        self.settings = settings
        self.root = root
        self.worker_id = worker_id
        self.states = StateManager(settings.state_dir)
        self.report = SessionReport(
            run_id=run_id or new_run_id(), started_at=utc_now(), plugin_version=__version__
        )
        self.report_name = "report.json" if worker_id == "main" else f"report-{worker_id}.json"
        self.report_path: Path | None = None
        #: Problems that did not stop the session, for the terminal summary.
        self.problems: list[str] = []
        self.idle = IdleBaselines(settings.baseline_s, settings.sample_interval_s)
        self.baseline: SessionReport | None = None
        #: The comparison, budgets and failures, once `gate` has run.
        self.gate_outcome = GateOutcome()
        self._experiments_started = 0

    @property
    def entries(self) -> list[ReportEntry]:
        return self.report.experiments

    def start(self) -> None:
        """Create the state dir and fail states orphaned by a session that died."""
        try:
            self.states.ensure_dirs()
        except OSError as exc:
            raise ConfigError(
                f"cannot use state dir {self.settings.state_dir}: {exc.strerror or exc}; "
                "choose another with --llem-state-dir or PYTEST_LLEM_STATE_DIR"
            ) from None
        stale = self.states.cleanup_stale()
        self.report.stale_experiments = [s.experiment_id for s in stale]
        self.report.machine = MachineInfo.current()
        if self.settings.save_name:
            self.report.name = self.settings.save_name
        elif self.settings.autosave:
            self.report.name = autosave_name(self.root)
        if self.worker_id == "main" and (self.settings.compare or self.settings.compare_fail):
            self.baseline = self._find_baseline(self.settings.compare or "latest")

    def _find_baseline(self, ref: str) -> SessionReport | None:
        history = RunHistory(self.settings.state_dir)
        if ref != "latest":
            try:
                return history.find(ref)
            except UnknownRun as exc:
                raise ConfigError(f"--llem-compare: {exc}") from None
        assert self.report.machine is not None
        baseline = history.latest(self.report.machine.id, exclude_run_id=self.report.run_id)
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
        if self.worker_id != "main":
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
        guard = InterruptGuard()
        # The guard covers teardown *and* bookkeeping: a signal cannot leave a state half-done.
        with guard.installed():
            try:
                result = self._run(entry, workload, config_layers, guard)
            except ExperimentInterrupted as exc:
                if exc.result is None:
                    entry.failed = entry.interrupted = True
                    entry.error = str(exc)
                raise
            except LlemError as exc:
                entry.failed = True
                entry.error = self._redact(str(exc))
                raise
            finally:
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
        }
        config = build_config(session_defaults, *config_layers)
        if workload is None:
            if config.backend is None:
                raise ConfigError(
                    "llem.run() needs a workload function, or backend= naming a built-in backend"
                )
            workload = BACKEND_WORKLOADS[config.backend]
        spec = describe_workload(workload)
        entry.model_fingerprint = model_fingerprint(config.model)
        config_hash = compute_config_hash(config, spec.ref, entry.model_fingerprint)
        entry.config = config.model_dump(mode="json")
        entry.config_hash = config_hash
        entry.workload = spec.ref
        # The prompts' text, not their file's name: the work a comparison must find equal.
        uses_prompts = config.backend is not None or config.prompts is not None
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
        env = build_experiment_env(config, experiment_id)
        # Before the experiment exists: a Ctrl-C during a long cool-down leaves no state behind.
        meter_options = self._prepare_devices(config.energy, env, guard)
        entry.experiment_id = experiment_id
        state = self.states.create(experiment_id, config_hash)
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
        try:
            # Each process is a fresh child in its own group; a failure in any fails the experiment.
            result = pool_processes(
                [
                    run_in_child(request, env=env, guard=guard, timeout_s=timeout_s)
                    for _ in range(config.repeats)
                ]
            )
        except ExperimentInterrupted as exc:
            if exc.result is not None:
                self._mark_done(entry, exc.result)
            else:
                self._mark_failed(entry, f"interrupted by {exc.signal_name}; its process group was killed")
            raise
        except ExperimentFailed as exc:
            self._mark_failed(entry, str(exc))
            raise
        self._mark_done(entry, result)
        return result

    def _prepare_devices(self, meter: str, env: dict[str, str], guard: InterruptGuard) -> MeterOptions:
        """Cool down after the previous experiment, then take idle baselines for new devices.

        Both wait; a signal ends the wait at once (`ExperimentInterrupted`), not after it.
        """
        self.idle.sleep = partial(sleep_unless_interrupted, guard=guard)
        options = self.settings.meter_options()
        if self._experiments_started:
            problem = self.idle.cool_down(
                meter, options, env, self.settings.cooldown_s, self.settings.cooldown_temp_c
            )
            if problem is not None:
                self.problems.append(problem)
        self._experiments_started += 1
        idle = self.idle.measure(meter, options, env)
        return self.settings.meter_options({key: reading.power_w for key, reading in idle.items()})

    def _experiment_id(self, nodeid: str, requested: str | None, config_hash: str) -> str:
        if requested is not None:
            return sanitise_experiment_id(requested)
        test_name = nodeid.rpartition("::")[2] or nodeid
        return sanitise_experiment_id(f"{test_name[:80]}-{config_hash[:8]}-{uuid.uuid4().hex[:6]}")

    def _mark_done(self, entry: ReportEntry, result: ExperimentResult) -> None:
        assert entry.experiment_id is not None
        result.energy_uncertainty = energy_uncertainty(result)
        state = self.states.load(entry.experiment_id)
        if state is None:
            raise ExperimentFailed(f"state of {entry.experiment_id} vanished from the state dir")
        if state.phase is ExperimentPhase.INITIALISING:
            state.advance(ExperimentPhase.MEASURING)
        state.advance(ExperimentPhase.DONE)
        state.result = result
        self.states.save(state)
        entry.phase = state.phase.value
        entry.result = result
        self._describe_work(entry)

    def _describe_work(self, entry: ReportEntry) -> None:
        """The work signature once a result is in (its prompt digest was taken before the run)."""
        assert entry.result is not None and entry.config is not None
        prompt_digest = entry.work.prompt_digest if entry.work else None
        entry.work = describe_work(entry.config, entry.result, prompt_digest)

    def _mark_failed(self, entry: ReportEntry, message: str) -> None:
        assert entry.experiment_id is not None
        message = self._redact(message)
        state = self.states.mark_failed(entry.experiment_id, message)
        entry.phase = state.phase.value

    def _redact(self, text: str) -> str:
        return redact_text(text, root=self.root)

    def absorb(self, worker_report: SessionReport) -> None:
        """Take in a finished xdist worker's experiments (controller side)."""
        self.report.experiments.extend(worker_report.experiments)
        self.report.stale_experiments.extend(worker_report.stale_experiments)
        self._checkpoint()

    def _checkpoint(self) -> None:
        self.report_path = write_report(self.report, self.settings.state_dir, self.root, self.report_name)

    def finish(self, outcome: SessionOutcome, exit_code: int) -> Path:
        """Write the final report; signals arriving meanwhile are ignored (we are stopping anyway)."""
        self.report.outcome = outcome
        self.report.exit_code = exit_code
        self.report.finished_at = utc_now()
        with InterruptGuard().installed():
            self._checkpoint()
            if self.worker_id == "main":
                self.problems.extend(
                    publish(self.report, self.comparison, self.failures, self.settings, self.root)
                )
        assert self.report_path is not None
        return self.report_path
