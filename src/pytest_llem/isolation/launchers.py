"""Where each experiment's processes run, as the session sees it: the `Launcher` interface,
`LocalLauncher` (a child group on this host), and `make_launcher`, the one place that reads
`--llem-launcher` (`slurm.SlurmLauncher` runs each experiment as a Slurm job).

Runs in the pytest process. A launcher owns what differs between the two: GPU leases, the
cool-down and the idle baseline, the start method (the preloaded interpreter or cold
starts), how the processes are started, waited for and ended early; the session owns the
experiment's config, state and report entry, and calls the launcher at each step.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol

from pytest_llem.config import ExperimentConfig
from pytest_llem.energy.idle import SETTLE_S, IdleBaselines, with_baselines
from pytest_llem.energy.meter import MeterOptions
from pytest_llem.isolation.launcher import (
    GROUP_KILLED,
    GroupStarter,
    build_experiment_env,
    cold_start,
    model_files_to_preload,
    run_in_child,
)
from pytest_llem.isolation.leases import (
    GpuInfo,
    Lease,
    LeaseTable,
    gpu_request,
    host_gpus,
    owned_gpus,
    place_result,
)
from pytest_llem.isolation.outcome import ProgressCallback
from pytest_llem.isolation.preload import PRELOAD_AUTO, PRELOAD_NONE, Preloader, auto_modules
from pytest_llem.isolation.protocol import ExperimentRequest
from pytest_llem.isolation.signals import InterruptGuard, sleep_unless_interrupted
from pytest_llem.results import ExperimentResult
from pytest_llem.settings import LlemSettings


class Launcher(Protocol):
    """What `BenchmarkSession` asks of a launcher, one experiment at a time: `prepare`, then
    `launch` once per process, then `placed` with the result; `release` on every way out."""

    #: How the launcher ends an experiment that must stop early (a signal, its timeout), as
    #: its failure says it: "interrupted by SIGINT; its <how_stopped>".
    how_stopped: str
    #: Whether experiments run on this host, so those run at once (xdist workers) share it.
    shares_host: bool
    #: The backends the collected cases name: what `--llem-preload=auto` imports.
    collected_backends: set[str | None]

    def check(self) -> str | None:
        """At the session's start: raise `ConfigError` if experiments cannot run; a line for
        the terminal, or None."""
        ...

    def cases_collected(self, cases: list[ExperimentConfig], will_run: bool) -> None:
        """The selected cases' marker configs, when collection ends."""
        ...

    def workload_named(self, module: str) -> None:
        """The module of a workload the session runs (or resumes)."""
        ...

    def share_preloaded(self) -> str | None:
        """In an xdist controller: start the preloaded interpreter its workers share; where they
        find it (passed on to `attach_preloaded`), or None when they start their own or none."""
        ...

    def attach_preloaded(self, address: str | None) -> None:
        """In an xdist worker: fork from the preloaded interpreter the controller shares at
        `address` (None: it shares none)."""
        ...

    def prepare(
        self, config: ExperimentConfig, experiment_id: str, env: dict[str, str], guard: InterruptGuard
    ) -> MeterOptions:
        """Before the experiment's state exists, whatever it must wait for (GPUs, a
        cool-down, the idle baseline), so a signal meanwhile leaves nothing behind; `env`
        gets what the child must see. Returns the meter options its request carries."""
        ...

    def launch(
        self,
        request: ExperimentRequest,
        env: dict[str, str],
        guard: InterruptGuard,
        timeout_s: float | None,
        on_progress: ProgressCallback | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> ExperimentResult:
        """One process of the experiment; `on_start` gets a local group leader's pid."""
        ...

    def placed(self, result: ExperimentResult) -> ExperimentResult:
        """The result with where it was measured; what `prepare` held is released."""
        ...

    def release(self) -> None:
        """Release what `prepare` held, if `placed` did not (a failure, a signal)."""
        ...

    def close(self) -> None:
        """The session is over: stop what the launcher started for it."""
        ...


def make_launcher(
    settings: LlemSettings,
    *,
    note_problem: Callable[[str], None],
    notify: Callable[[str], None],
    interrupted: Callable[[], bool],
) -> Launcher:
    """The launcher `--llem-launcher` names. `note_problem` takes what did not stop the session
    (for its terminal summary), `notify` a line while it waits (for GPUs, for the preloaded
    interpreter), `interrupted` says whether a signal came."""
    if settings.launcher == "slurm":
        # Imported here: its job models cost every local session and xdist worker ~40 ms to build.
        from pytest_llem.isolation.slurm import SlurmLauncher

        return SlurmLauncher(settings)
    return LocalLauncher(settings, note_problem=note_problem, notify=notify, interrupted=interrupted)


class LocalLauncher:
    """Each experiment a child group on this host (`launcher.run_in_child`), with whole GPUs
    leased from the host's table (shared by every session on the state dir), a cool-down
    after the previous experiment, the idle baseline of the devices it reads, and its start
    method: forked from the preloaded interpreter (`--llem-preload`), or cold."""

    how_stopped = GROUP_KILLED
    shares_host = True

    def __init__(
        self,
        settings: LlemSettings,
        *,
        note_problem: Callable[[str], None] = lambda line: None,
        notify: Callable[[str], None] = lambda line: None,
        interrupted: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self._note_problem = note_problem
        self._notify = notify
        #: GPU leases, shared by every session that shares the state dir (a smoke session, which
        #: measures nothing and leaves no trace, keeps its own).
        self.leases = LeaseTable(settings.state_dir)
        self._gpu_inventory: list[GpuInfo] | None = None
        self._lease: Lease | None = None
        self.idle = IdleBaselines(settings.baseline_s, settings.sample_interval_s)
        self._experiments_started = 0
        self.collected_backends: set[str | None] = set()
        #: Modules of the workloads run so far, in order (auto preloads the safe ones).
        self._workload_modules: list[str] = []
        self._preloader: Preloader | None = None
        if settings.preload != PRELOAD_NONE:
            self._preloader = Preloader(
                self._preload_modules,
                on_fallback=note_problem,
                interrupted=interrupted,
                notify=notify,
                learn=settings.preload == PRELOAD_AUTO,
            )
        self.start_group: GroupStarter = self._preloader.start if self._preloader is not None else cold_start

    def _preload_modules(self) -> list[str]:
        if self.settings.preload == PRELOAD_AUTO:
            return auto_modules(self.collected_backends, self._workload_modules)
        return self.settings.preload.split(",")

    def check(self) -> str | None:
        return None

    def cases_collected(self, cases: list[ExperimentConfig], will_run: bool) -> None:
        """Their backends are what `auto` preloads. When they will run and what to import is
        already known (modules named by `--llem-preload`, or a backend among the cases), start
        the preloaded interpreter now, without waiting for its imports. (Under `auto` without
        a backend the first workload's own module is among them, so that start waits for the
        first experiment.) The first case gives the children's environment; the model
        directories of cases with `preload_model_files` are read after the imports."""
        self.collected_backends = {case.backend for case in cases}
        known = self.settings.preload != PRELOAD_AUTO or any(b is not None for b in self.collected_backends)
        if will_run and cases and known and self._preloader is not None:
            model_dirs = dict.fromkeys(d for d in map(model_files_to_preload, cases) if d is not None)
            env = build_experiment_env(cases[0], experiment_id="", store_url=self.settings.store_url)
            self._preloader.prestart(env, read_files=model_dirs)

    def workload_named(self, module: str) -> None:
        if module not in self._workload_modules:
            self._workload_modules.append(module)

    def share_preloaded(self) -> str | None:
        """The controller of xdist workers on this host starts one preloaded interpreter for them
        all (it does not collect: its modules are `--llem-preload`'s, or under `auto` the base
        ones; each worker has it import what its cases need), as the workers' processes start.
        Its environment is the one the workers inherit, without a case's fields."""
        if self._preloader is None:
            return None
        env = build_experiment_env(ExperimentConfig(), experiment_id="", store_url=self.settings.store_url)
        return self._preloader.share(env)

    def attach_preloaded(self, address: str | None) -> None:
        if self._preloader is not None:
            self._preloader.shared = address

    def prepare(
        self, config: ExperimentConfig, experiment_id: str, env: dict[str, str], guard: InterruptGuard
    ) -> MeterOptions:
        self._lease = self._take_lease(config, experiment_id, env, guard)
        # The meter reads exactly the GPUs this experiment owns (none for a CPU-only case).
        owned = owned_gpus(self.settings.meter_options(), config, self._lease.gpus)
        return self._prepare_devices(config.energy, owned, env, guard)

    def _take_lease(
        self, config: ExperimentConfig, experiment_id: str, env: dict[str, str], guard: InterruptGuard
    ) -> Lease:
        """Wait for the GPUs `config` needs (isolation.leases); the child sees exactly those."""
        if self._gpu_inventory is None:
            self._gpu_inventory = host_gpus()
        lease = self.leases.acquire(
            experiment_id,
            gpu_request(config),
            self._gpu_inventory,
            sleep=partial(sleep_unless_interrupted, guard=guard),
            notify=self._notify,
        )
        if lease.gpus:
            env["CUDA_VISIBLE_DEVICES"] = lease.cuda_visible_devices
        self._note_lease_problems()
        return lease

    def _note_lease_problems(self) -> None:
        for row in self.leases.reclaimed:
            self._note_problem(
                f"reclaimed the lease of {row['experiment_id']} ({len(row['gpus'])} GPU(s)): its pytest "
                f"process (pid {row['pid']}) is gone"
            )
        for problem in self.leases.write_problems:
            self._note_problem(
                f"a GPU lease could not be released on disk ({problem}); it is freed when pytest ends"
            )
        self.leases.reclaimed.clear()
        self.leases.write_problems.clear()

    def _prepare_devices(
        self, meter: str, options: MeterOptions, env: dict[str, str], guard: InterruptGuard
    ) -> MeterOptions:
        """Cool down after the previous experiment, then take idle baselines for new devices
        (those `options` and `env` say the experiment reads).

        Both wait; a signal ends the wait at once (`ExperimentInterrupted`), not after it.
        """
        self.idle.sleep = partial(sleep_unless_interrupted, guard=guard)
        if self._experiments_started:
            problem = self.idle.cool_down(
                meter, options, env, self.settings.cooldown_s, self.settings.cooldown_temp_c
            )
            if problem is not None:
                self._note_problem(problem)
        self._experiments_started += 1
        # Nothing of the session may be starting meanwhile: a preloaded interpreter still
        # importing torch or reading model files would be measured as idle power.
        conditions, settle_s = "before the experiment's child started", 0.0
        if self._preloader is not None and self._preloader.running and self.idle.measures(meter):
            self._preloader.wait_ready()
            conditions += (
                f", {SETTLE_S:g} s after the preloaded interpreter had finished its imports and model reads"
            )
            settle_s = SETTLE_S
        idle = self.idle.measure(meter, options, env, conditions, settle_s)
        return with_baselines(options, idle)

    def launch(
        self,
        request: ExperimentRequest,
        env: dict[str, str],
        guard: InterruptGuard,
        timeout_s: float | None,
        on_progress: ProgressCallback | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> ExperimentResult:
        return run_in_child(
            request,
            env=env,
            guard=guard,
            timeout_s=timeout_s,
            on_progress=on_progress,
            start=self.start_group,
            on_start=on_start,
        )

    def placed(self, result: ExperimentResult) -> ExperimentResult:
        """Release the lease and record where the result was measured."""
        lease, self._lease = self._lease, None
        placed = result if lease is None else place_result(result, lease)
        self._note_lease_problems()
        return placed

    def release(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()
            self._note_lease_problems()

    def close(self) -> None:
        """Stop the preloaded interpreter, if one runs (it would also exit with this process)."""
        if self._preloader is not None:
            self._preloader.close()
