"""Contract tests for the Zeus and CodeCarbon meters.

First against stand-ins that implement only the public API the adapters rely on, so every
figure has an exact right answer: Zeus's `ZeusMonitor.begin_window(name, sync_execution=...)`
/ `end_window(...)` returning a measurement with `time`, `gpu_energy` and `cpu_energy` (joules
per index, `None` when no CPU is measured), and CodeCarbon's `EmissionsTracker(save_to_file=...,
log_level=..., allow_multiple_runs=...)` with `start()`, `stop()` and `final_emissions_data`
(energies in kWh), including 2.7-2.8's one-tracker-per-machine lock.

Then against the real packages, on this machine's CPU, through a real experiment: the newest
Zeus and CodeCarbon (the `dev` extra installs them), and CodeCarbon 2.8.4, installed once per
session with `pip install --target` (skipped, with the reason, where that install fails).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from pytest_llem.energy import quality
from pytest_llem.energy.adapters import CodeCarbonMeter, ZeusMeter
from pytest_llem.energy.factory import create_meter
from pytest_llem.errors import MeterUnavailable
from pytest_llem.session import BenchmarkSession
from pytest_llem.settings import LlemSettings

OLD_CODECARBON = "2.8.4"


def codes(window) -> list[str]:
    return [w.code for w in window.warnings]


# --- Zeus -------------------------------------------------------------------------------------------


@dataclass
class ZeusMeasurement:
    time: float
    gpu_energy: dict[int, float]
    cpu_energy: dict[int, float] | None


class StandInZeusMonitor:
    """`ZeusMonitor`'s window API over a simulated clock and constant per-device power."""

    def __init__(self, gpu_w: dict[int, float] | None = None, cpu_w: dict[int, float] | None = None) -> None:
        self.gpu_w = {0: 250.0} if gpu_w is None else gpu_w
        self.cpu_w = cpu_w
        self.gpu_indices = sorted(self.gpu_w)
        self.cpu_indices = sorted(cpu_w or {})
        self.clock_s = 0.0
        self._starts: dict[str, float] = {}
        self.synced: list[bool] = []

    def advance(self, seconds: float) -> None:
        self.clock_s += seconds

    def begin_window(self, key: str, sync_execution: bool = True) -> None:
        # Zeus syncs through torch by default: RuntimeError without it, CUDA initialised with it.
        self.synced.append(sync_execution)
        self._starts[key] = self.clock_s

    def end_window(self, key: str, sync_execution: bool = True, cancel: bool = False) -> ZeusMeasurement:
        self.synced.append(sync_execution)
        elapsed = self.clock_s - self._starts.pop(key)
        return ZeusMeasurement(
            time=elapsed,
            gpu_energy={i: w * elapsed for i, w in self.gpu_w.items()},
            cpu_energy=None if self.cpu_w is None else {i: w * elapsed for i, w in self.cpu_w.items()},
        )


def test_zeus_window_reports_joules_per_gpu_and_cpu_package():
    monitor = StandInZeusMonitor(gpu_w={1: 200.0, 0: 300.0}, cpu_w={0: 50.0})
    meter = ZeusMeter(monitor)
    meter.begin_window("w")
    monitor.advance(10.0)
    window = meter.end_window("w")
    assert [(d.device, d.kind, d.energy_j, d.energy_source) for d in window.devices] == [
        ("gpu0", "gpu", 3000.0, "zeus"),
        ("gpu1", "gpu", 2000.0, "zeus"),
        ("cpu-package-0", "cpu", 500.0, "zeus"),
    ]
    # Zeus's own clock is the window's length, not the meter's.
    assert window.duration_s == 10.0 and all(d.duration_s == 10.0 for d in window.devices)
    totals = window.totals
    assert (totals.energy_j, totals.gpu_energy_j, totals.cpu_energy_j) == (5500.0, 5000.0, 500.0)
    # Zeus reports no power samples; a GPU is not flagged for lacking what the library never gives.
    assert window.warnings == []


def test_zeus_without_cpu_measurement_reports_gpus_only():
    monitor = StandInZeusMonitor(gpu_w={0: 100.0}, cpu_w=None)
    meter = ZeusMeter(monitor)
    meter.begin_window("w")
    monitor.advance(6.0)
    window = meter.end_window("w")
    assert [(d.device, d.energy_j) for d in window.devices] == [("gpu0", 600.0)]
    assert window.totals.energy_scope == ["gpu"]


def test_zeus_gpus_carry_their_board_uuid_read_through_the_nvml_handles_zeus_holds(monkeypatch):
    monitor = StandInZeusMonitor(gpu_w={0: 100.0, 1: 100.0}, cpu_w={0: 10.0})
    # Zeus's GPUs object: one per index, each with the NVML handle Zeus opened for it.
    monitor.gpus = SimpleNamespace(gpus=[SimpleNamespace(handle=f"handle-{i}") for i in (0, 1)])
    nvml = ModuleType("pynvml")
    nvml.nvmlDeviceGetUUID = lambda handle: {"handle-0": b"GPU-aaaa", "handle-1": "GPU-bbbb"}[handle]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    meter = ZeusMeter(monitor)
    meter.begin_window("w")
    monitor.advance(6.0)
    window = meter.end_window("w")
    assert [(d.device, d.uuid) for d in window.devices] == [
        ("gpu0", "GPU-aaaa"),
        ("gpu1", "GPU-bbbb"),
        ("cpu-package-0", None),
    ]
    # A Zeus without those handles: no UUIDs, and so no GPU taken for the same board later.
    assert ZeusMeter(StandInZeusMonitor()).gpu_uuids == {}


def test_zeus_short_and_zero_energy_windows_are_flagged():
    monitor = StandInZeusMonitor(gpu_w={0: 0.0})
    meter = ZeusMeter(monitor)
    meter.begin_window("w")
    monitor.advance(1.0)
    window = meter.end_window("w")
    assert codes(window) == [quality.SHORT_WINDOW, quality.ZERO_ENERGY]


def test_zeus_overlapping_windows_each_get_their_own_figures():
    monitor = StandInZeusMonitor(gpu_w={0: 300.0})
    meter = ZeusMeter(monitor)
    meter.begin_window("outer")
    monitor.advance(2.0)
    meter.begin_window("inner")
    monitor.advance(3.0)
    inner = meter.end_window("inner")
    monitor.advance(5.0)
    outer = meter.end_window("outer")
    assert (inner.duration_s, inner.energy_j) == (3.0, 900.0)
    assert (outer.duration_s, outer.energy_j) == (10.0, 3000.0)
    assert codes(inner) == [quality.SHORT_WINDOW] and codes(outer) == []


def test_zeus_never_synchronises_cuda_itself():
    monitor = StandInZeusMonitor()
    meter = ZeusMeter(monitor)
    meter.begin_window("w")
    meter.end_window("w")
    assert monitor.synced == [False, False]  # the meter synchronises, and only where CUDA is in use


def test_zeus_monitoring_nothing_is_energy_not_measured_with_the_reason():
    monitor = StandInZeusMonitor(gpu_w={}, cpu_w=None)
    meter = ZeusMeter(monitor)
    meter.begin_window("w")
    monitor.advance(6.0)
    window = meter.end_window("w")
    assert window.devices == [] and window.energy_j is None
    assert [w.message for w in window.warnings] == [f"energy not measured: {ZeusMeter.NOTHING_MONITORED}"]


def test_zeus_meter_by_name_builds_a_monitor_from_the_library(monkeypatch):
    package, monitor_module = ModuleType("zeus"), ModuleType("zeus.monitor")
    monitor_module.ZeusMonitor = StandInZeusMonitor  # type: ignore[attr-defined]
    package.monitor = monitor_module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "zeus", package)
    monkeypatch.setitem(sys.modules, "zeus.monitor", monitor_module)
    meter = create_meter("zeus")
    assert isinstance(meter, ZeusMeter) and isinstance(meter.monitor, StandInZeusMonitor)


def test_zeus_meter_without_the_library_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "zeus", None)
    monkeypatch.setitem(sys.modules, "zeus.monitor", None)
    with pytest.raises(MeterUnavailable) as info:
        create_meter("zeus")
    assert "the 'zeus' extra" in str(info.value) and "'path/to/pytest-llem[zeus]'" in str(info.value)


# --- CodeCarbon -------------------------------------------------------------------------------------


class CPU:
    """CodeCarbon's CPU hardware object, as its tracker holds it: the mode it chose, its TDP."""

    def __init__(self, mode: str, tdp: float | None = 65.0) -> None:
        self._mode, self._tdp = mode, tdp


class GPU:
    """CodeCarbon's GPU hardware object (NVML or AMDSMI energy counters)."""


class RAM:
    """CodeCarbon's RAM estimate."""


class StandInCodeCarbon:
    """A `codecarbon` module whose trackers report the kWh consumed while they ran.

    `locking=True` behaves as 2.7-2.8: `allow_multiple_runs` defaults to False, and then a
    second tracker on the machine does not start; its `stop()` returns without figures.
    `locking=None` is a version before the option existed. `cpu_mode` is how its trackers
    read the CPU: `intel_rapl` measures, `cpu_load` and `constant` are its TDP estimate; the
    hardware list (`tracker._hardware`, as CodeCarbon's) says so, and logs its fallback.
    """

    def __init__(self, locking: bool | None = False, cpu_mode: str = "intel_rapl", gpu: bool = True) -> None:
        self.consumed_kwh = {"gpu": 0.0, "cpu": 0.0, "ram": 0.0}
        self.trackers: list = []
        self.locked = False
        self.locking = locking
        self.cpu_mode = cpu_mode
        self.gpu = gpu
        self.module = ModuleType("codecarbon")
        self.module.EmissionsTracker = self._tracker_class()  # type: ignore[attr-defined]

    def consume(self, gpu: float = 0.0, cpu: float = 0.0, ram: float = 0.0) -> None:
        for part, kwh in (("gpu", gpu), ("cpu", cpu), ("ram", ram)):
            self.consumed_kwh[part] += kwh

    def _tracker_class(self) -> type:
        library = self

        class EmissionsTracker:
            def __init__(
                self, save_to_file: bool = True, log_level: str = "info", allow_multiple_runs: bool = False
            ) -> None:
                self.options = {"save_to_file": save_to_file, "log_level": log_level}
                if library.locking is not None:
                    self.options["allow_multiple_runs"] = allow_multiple_runs
                library.trackers.append(self)
                self.blocked = False
                if library.locking and not allow_multiple_runs:
                    self.blocked = library.locked  # codecarbon logs an error and gives up
                    library.locked = True

            def start(self) -> None:
                self._hardware = [RAM(), CPU(library.cpu_mode), *([GPU()] if library.gpu else [])]
                if library.cpu_mode != "intel_rapl":
                    logging.getLogger("codecarbon").warning(
                        "No CPU tracking mode found. Falling back on CPU load mode."
                    )
                self._started = dict(library.consumed_kwh)

            def stop(self) -> float | None:
                if self.blocked:
                    return None  # and final_emissions_data never set
                used = {part: library.consumed_kwh[part] - self._started[part] for part in self._started}
                self.final_emissions_data = SimpleNamespace(
                    gpu_energy=used["gpu"],
                    cpu_energy=used["cpu"],
                    ram_energy=used["ram"],
                    energy_consumed=sum(used.values()),
                )
                return 0.0  # kg CO2eq, which the meter does not use

        if library.locking is None:  # before the option existed: no **options

            class OlderTracker(EmissionsTracker):
                def __init__(self, save_to_file: bool = True, log_level: str = "info") -> None:
                    super().__init__(save_to_file, log_level)

            return OlderTracker
        return EmissionsTracker


@pytest.fixture
def codecarbon() -> StandInCodeCarbon:
    return StandInCodeCarbon()


def test_codecarbon_window_converts_kwh_to_joules_and_leaves_ram_out(codecarbon):
    meter = CodeCarbonMeter(codecarbon.module)
    meter.begin_window("w")
    codecarbon.consume(gpu=0.002, cpu=0.0005, ram=0.0001)
    window = meter.end_window("w")
    assert [(d.device, d.kind, d.energy_source) for d in window.devices] == [
        ("gpu", "gpu", "codecarbon"),
        ("cpu", "cpu", "codecarbon"),
    ]
    gpu, cpu = window.devices
    assert gpu.energy_j == pytest.approx(7200.0) and cpu.energy_j == pytest.approx(1800.0)
    assert window.energy_j == pytest.approx(9000.0)  # 1 kWh is 3.6 MJ
    assert any("RAM energy" in note and "left out" in note for note in window.notes)


def test_codecarbon_tracker_writes_no_files_and_stays_quiet(codecarbon):
    meter = CodeCarbonMeter(codecarbon.module)
    meter.begin_window("w")
    meter.end_window("w")
    (tracker,) = codecarbon.trackers
    assert tracker.options == {"save_to_file": False, "log_level": "warning", "allow_multiple_runs": True}


def test_codecarbon_2_8_lock_does_not_stop_overlapping_windows():
    library = StandInCodeCarbon(locking=True)
    meter = CodeCarbonMeter(library.module)
    meter.begin_window("outer")
    meter.begin_window("inner")
    library.consume(cpu=0.001)
    inner, outer = meter.end_window("inner"), meter.end_window("outer")
    assert inner.energy_j == pytest.approx(3600.0) and outer.energy_j == pytest.approx(3600.0)


def test_codecarbon_without_figures_is_energy_not_measured_with_the_reason():
    library = StandInCodeCarbon(locking=True)
    library.locked = True  # another codecarbon on this machine holds the lock
    meter = CodeCarbonMeter(library.module)
    meter._tracker_options = lambda: {"save_to_file": False, "log_level": "error"}  # as an old adapter
    meter.begin_window("w")
    window = meter.end_window("w")
    assert window.devices == [] and window.energy_j is None
    assert [w.message for w in window.warnings] == [f"energy not measured: {CodeCarbonMeter.NO_FIGURES}"]


def test_codecarbon_before_allow_multiple_runs_gets_only_what_it_accepts():
    library = StandInCodeCarbon(locking=None)
    meter = CodeCarbonMeter(library.module)
    meter.begin_window("w")
    library.consume(gpu=0.001)
    assert meter.end_window("w").energy_j == pytest.approx(3600.0)
    assert library.trackers[0].options == {"save_to_file": False, "log_level": "warning"}


def test_codecarbon_figures_are_read_defensively(codecarbon):
    meter = CodeCarbonMeter(codecarbon.module)
    meter.begin_window("w")
    (tracker,) = codecarbon.trackers
    tracker.stop = lambda: setattr(tracker, "final_emissions_data", SimpleNamespace(cpu_energy=None))
    window = meter.end_window("w")
    assert [w.message for w in window.warnings] == [
        f"energy not measured: {CodeCarbonMeter.NOTHING_MEASURED}"
    ]


def test_codecarbon_without_a_gpu_reports_the_cpu_only(codecarbon):
    meter = CodeCarbonMeter(codecarbon.module)
    meter.begin_window("w")
    codecarbon.consume(cpu=0.001)
    window = meter.end_window("w")
    assert [(d.device, d.kind) for d in window.devices] == [("cpu", "cpu")]
    assert window.totals.energy_scope == ["cpu"]


def test_codecarbon_short_window_is_flagged_but_not_for_missing_samples(codecarbon):
    meter = CodeCarbonMeter(codecarbon.module)
    meter.begin_window("w")
    codecarbon.consume(gpu=0.001)
    window = meter.end_window("w")
    assert window.duration_s < quality.MIN_WINDOW_S
    assert codes(window) == [quality.SHORT_WINDOW]


def test_codecarbon_overlapping_windows_each_get_their_own_tracker(codecarbon):
    meter = CodeCarbonMeter(codecarbon.module)
    meter.begin_window("outer")
    codecarbon.consume(gpu=0.001)
    meter.begin_window("inner")
    codecarbon.consume(gpu=0.002)
    inner = meter.end_window("inner")
    codecarbon.consume(gpu=0.001)
    outer = meter.end_window("outer")
    assert len(codecarbon.trackers) == 2
    assert inner.energy_j == pytest.approx(7200.0)
    assert outer.energy_j == pytest.approx(14400.0)


ESTIMATE = (
    "codecarbon: its CPU figure is an estimate, not a measurement ('cpu_load' mode: 65 W TDP scaled by "
    "CPU load), since it found no power interface it can read (RAPL, Power Gadget)"
)


def test_codecarbon_estimating_the_cpu_reports_no_energy_and_why():
    library = StandInCodeCarbon(cpu_mode="cpu_load", gpu=False)
    meter = CodeCarbonMeter(library.module)
    meter.begin_window("w")
    library.consume(cpu=0.001)
    window = meter.end_window("w")
    assert window.devices == [] and window.energy_j is None and window.estimated_energy_j is None
    assert [w.message for w in window.warnings] == [f"energy not measured: {ESTIMATE}"]


def test_codecarbon_keeps_a_measured_gpu_and_leaves_its_cpu_estimate_out():
    library = StandInCodeCarbon(cpu_mode="constant")
    meter = CodeCarbonMeter(library.module)
    meter.begin_window("w")
    library.consume(gpu=0.001, cpu=0.001)
    window = meter.end_window("w")
    assert [(d.device, d.energy_j) for d in window.devices] == [("gpu", pytest.approx(3600.0))]
    assert window.totals.energy_scope == ["gpu"]
    assert any("'constant' mode" in note and note.endswith("; left out") for note in window.notes)


def test_codecarbon_estimate_kept_only_when_asked_flagged_and_never_energy():
    library = StandInCodeCarbon(cpu_mode="cpu_load", gpu=False)
    meter = CodeCarbonMeter(library.module, allow_estimated_energy=True)
    meter.begin_window("w")
    library.consume(cpu=0.001)
    window = meter.end_window("w")
    assert window.energy_j is None and window.estimated_energy_j == pytest.approx(3600.0)
    assert codes(window) == [quality.ENERGY_NOT_MEASURED, quality.ESTIMATED_ENERGY]
    assert window.warnings[1].message == (
        "estimated_energy_j is codecarbon's estimate of the CPU, not a measurement: in no energy figure, "
        "never gated"
    )


def test_codecarbon_whose_way_of_measuring_cannot_be_told_is_not_taken_as_measured(codecarbon):
    meter = CodeCarbonMeter(codecarbon.module)
    meter.begin_window("w")
    (tracker,) = codecarbon.trackers
    del tracker._hardware  # a CodeCarbon that keeps its hardware elsewhere
    codecarbon.consume(cpu=0.001)
    window = meter.end_window("w")
    assert window.energy_j is None
    assert "could not tell whether it measured or estimated" in window.warnings[0].message


def test_codecarbon_warnings_are_shown_once_not_once_per_window(caplog, monkeypatch):
    # As in a fresh child process: no filter yet on codecarbon's logger (earlier tests added one).
    monkeypatch.setattr(logging.getLogger("codecarbon"), "filters", [])
    library = StandInCodeCarbon(cpu_mode="cpu_load")
    meter = CodeCarbonMeter(library.module)
    with caplog.at_level(logging.WARNING, logger="codecarbon"):
        for name in ("a", "b", "c"):
            meter.begin_window(name)
            meter.end_window(name)
    assert [r.getMessage() for r in caplog.records if r.name == "codecarbon"] == [
        "No CPU tracking mode found. Falling back on CPU load mode."
    ]


def test_codecarbon_meter_by_name_uses_the_library(codecarbon, monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", codecarbon.module)
    meter = create_meter("codecarbon")
    assert isinstance(meter, CodeCarbonMeter) and meter.codecarbon is codecarbon.module


def test_codecarbon_meter_without_the_library_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)
    with pytest.raises(MeterUnavailable) as info:
        create_meter("codecarbon")
    assert "the 'codecarbon' extra" in str(info.value) and "'path/to/pytest-llem[codecarbon]'" in str(
        info.value
    )


# --- the real libraries, on this machine's CPU, through a real experiment ---------------------------

BUSY_S = 2.0


def busy_loop(ctx) -> None:
    """Two seconds of pure-Python work inside one window, plus the library's version."""
    library = ctx.params["library"]
    with ctx.window():
        end = time.perf_counter() + BUSY_S
        n = 0
        while time.perf_counter() < end:
            n += 1
    ctx.record(output_tokens=1, library_version=__import__(library).__version__)


def run_busy_loop(bench, library: str, env: dict[str, str] | None = None):
    return bench.run_experiment(
        f"tests/test_adapters.py::{library}",
        busy_loop,
        [{"energy": library, "params": {"library": library}, "env": env or {}}],
    )


def assert_figures_or_the_reason(result, reason: str) -> None:
    """Energy for each device the library measured, or no figure and the library's reason."""
    if result.energy_by_device:
        assert result.energy_j is not None and result.energy_j > 0
        assert all(d.energy_j > 0 and d.duration_s >= BUSY_S for d in result.energy_by_device)
    else:
        assert result.energy_j is None
        assert [w.message for w in result.warnings] == [f"energy not measured: {reason}"]


def needs(module: str):
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None, reason=f"{module} is not installed (the dev extra has it)"
    )


@needs("zeus")
def test_real_zeus_measures_a_busy_loop_or_says_why_not(bench):
    result = run_busy_loop(bench, "zeus")
    print(f"\nzeus {result.extra['library_version']}: {result.energy_by_device or result.warnings}")
    assert result.duration_s >= BUSY_S
    assert_figures_or_the_reason(result, ZeusMeter.NOTHING_MONITORED)


#: What the real CodeCarbon's estimate is reported as: no energy, and this reason.
REAL_ESTIMATE = "energy not measured: codecarbon: its CPU figure is an estimate, not a measurement ("


def assert_measured_or_the_estimate_refused(result) -> None:
    """RAPL read by CodeCarbon is energy; its TDP model is only the reason energy is missing."""
    if result.energy_by_device:
        assert_figures_or_the_reason(result, CodeCarbonMeter.NO_FIGURES)
    else:
        assert result.energy_j is None and result.cpu_energy_j is None
        assert [w.message[: len(REAL_ESTIMATE)] for w in result.warnings] == [REAL_ESTIMATE]


#: CodeCarbon 3 with a forced CPU power uses its TDP model even where RAPL is readable: the
#: estimating CodeCarbon on any machine, as on one without RAPL (this development VM).
FORCED_TDP = {"CODECARBON_FORCE_CPU_POWER": "20"}


@needs("codecarbon")
def test_real_codecarbon_estimating_the_cpu_reports_no_energy_and_why(bench):
    result = run_busy_loop(bench, "codecarbon", FORCED_TDP)
    print(f"\ncodecarbon {result.extra['library_version']}: {result.energy_by_device or result.warnings}")
    assert result.energy_j is None and result.cpu_energy_j is None and result.estimated_energy_j is None
    assert [w.message for w in result.warnings] == [
        f"{REAL_ESTIMATE}'cpu_load' mode: 20 W TDP scaled by CPU load), since it found no power "
        "interface it can read (RAPL, Power Gadget)"
    ]
    assert result.energy_uncertainty is None and not result.flagged


@pytest.fixture
def estimates_allowed(state_dir: Path):
    """A started session run with --llem-allow-estimated-energy."""
    # No host_busy limit: the flags checked are the estimate's, whatever else runs on this machine.
    session = BenchmarkSession(
        LlemSettings(
            enabled=True, state_dir=state_dir, energy="none", allow_estimated_energy=True, host_busy_share=1.0
        )
    )
    session.start()
    yield session
    session.close_preloaded()


@needs("codecarbon")
def test_real_codecarbon_estimate_when_asked_is_flagged_and_never_energy(estimates_allowed):
    result = run_busy_loop(estimates_allowed, "codecarbon", FORCED_TDP)
    print(f"\ncodecarbon {result.extra['library_version']}: estimated {result.estimated_energy_j} J")
    assert result.energy_j is None and result.energy_per_token_j is None
    assert result.estimated_energy_j is not None and result.estimated_energy_j > 0
    assert [w.code for w in result.warnings] == [quality.ENERGY_NOT_MEASURED, quality.ESTIMATED_ENERGY]
    assert result.flagged


@pytest.fixture(scope="session")
def old_codecarbon(tmp_path_factory) -> Path:
    """CodeCarbon 2.8.4 in a folder of its own, installed once per session.

    Without its dependencies: the newest CodeCarbon (dev extra) brought the ones 2.8 imports
    (its CLI's fief-client is never imported by the tracker), and a second pandas or pydantic
    in front of the venv's would be tested instead of ours.
    """
    if importlib.util.find_spec("codecarbon") is None:
        pytest.skip("codecarbon's dependencies are not installed (the dev extra has them)")
    target = tmp_path_factory.mktemp("codecarbon-" + OLD_CODECARBON)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--target", str(target), f"codecarbon=={OLD_CODECARBON}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if install.returncode != 0:
        last = (install.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"could not install codecarbon=={OLD_CODECARBON}: {last}")
    return target


def test_real_codecarbon_2_8_with_its_lock_measures_overlapping_windows(bench, old_codecarbon):
    # The whole-call window and the workload's window overlap: two trackers at once, which
    # 2.8 refuses unless allow_multiple_runs=True (and its stop() then had no figures).
    env = {"PYTHONPATH": os.pathsep.join([str(old_codecarbon), os.environ.get("PYTHONPATH", "")])}
    result = run_busy_loop(bench, "codecarbon", env)
    print(f"\ncodecarbon {result.extra['library_version']}: {result.energy_by_device or result.warnings}")
    assert result.extra["library_version"] == OLD_CODECARBON
    assert_measured_or_the_estimate_refused(result)
