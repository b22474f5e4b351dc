"""Contract tests for the Zeus and CodeCarbon meters.

Neither library is installed here, so each is replaced by a stand-in that implements only the
public API the adapters rely on: Zeus's `ZeusMonitor.begin_window(name)` / `end_window(name)`
returning a measurement with `time`, `gpu_energy` and `cpu_energy` (joules per index, `None`
when no CPU is measured), and CodeCarbon's `EmissionsTracker(save_to_file=..., log_level=...)`
with `start()`, `stop()` and `final_emissions_data` (energies in kWh). The stand-ins take
their energy from counters the tests advance, so every figure has an exact right answer.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace

import pytest

from pytest_llem.energy import quality
from pytest_llem.energy.adapters import CodeCarbonMeter, ZeusMeter
from pytest_llem.energy.factory import create_meter
from pytest_llem.errors import MeterUnavailable


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
        self.clock_s = 0.0
        self._starts: dict[str, float] = {}

    def advance(self, seconds: float) -> None:
        self.clock_s += seconds

    def begin_window(self, key: str, sync_execution: bool = True) -> None:
        self._starts[key] = self.clock_s

    def end_window(self, key: str, sync_execution: bool = True, cancel: bool = False) -> ZeusMeasurement:
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
    assert "pip install 'pytest-llem[zeus]'" in str(info.value)


# --- CodeCarbon -------------------------------------------------------------------------------------


class StandInCodeCarbon:
    """A `codecarbon` module whose trackers report the kWh consumed while they ran."""

    def __init__(self) -> None:
        self.consumed_kwh = {"gpu": 0.0, "cpu": 0.0, "ram": 0.0}
        self.trackers: list = []
        self.module = ModuleType("codecarbon")
        self.module.EmissionsTracker = self._tracker_class()  # type: ignore[attr-defined]

    def consume(self, gpu: float = 0.0, cpu: float = 0.0, ram: float = 0.0) -> None:
        for part, kwh in (("gpu", gpu), ("cpu", cpu), ("ram", ram)):
            self.consumed_kwh[part] += kwh

    def _tracker_class(self) -> type:
        library = self

        class EmissionsTracker:
            def __init__(self, save_to_file: bool = True, log_level: str = "info") -> None:
                self.options = {"save_to_file": save_to_file, "log_level": log_level}
                self.final_emissions_data = None
                library.trackers.append(self)

            def start(self) -> None:
                self._started = dict(library.consumed_kwh)

            def stop(self) -> float:
                used = {part: library.consumed_kwh[part] - self._started[part] for part in self._started}
                self.final_emissions_data = SimpleNamespace(
                    gpu_energy=used["gpu"],
                    cpu_energy=used["cpu"],
                    ram_energy=used["ram"],
                    energy_consumed=sum(used.values()),
                )
                return 0.0  # kg CO2eq, which the meter does not use

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
    assert tracker.options == {"save_to_file": False, "log_level": "error"}


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


def test_codecarbon_meter_by_name_uses_the_library(codecarbon, monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", codecarbon.module)
    meter = create_meter("codecarbon")
    assert isinstance(meter, CodeCarbonMeter) and meter.codecarbon is codecarbon.module


def test_codecarbon_meter_without_the_library_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)
    with pytest.raises(MeterUnavailable) as info:
        create_meter("codecarbon")
    assert "pip install 'pytest-llem[codecarbon]'" in str(info.value)
