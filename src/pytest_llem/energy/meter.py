"""The energy-meter interface and the meter over sampled devices.

A meter lives in the isolated child (and, for the idle baseline, briefly in the parent,
which reads NVML and never touches CUDA). Windows are named, as in Zeus's `ZeusMonitor`, so
the implicit whole-call window and a workload's explicit windows can overlap:

    meter.begin_window("generate")
    ...                                   # the work being measured
    measurement = meter.end_window("generate")

A device's energy is `None` when it could not be measured, with a note that says why:
never a guess dressed as a measurement.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pydantic import BaseModel, Field

from pytest_llem.energy import DEFAULT_HOST_BUSY_SHARE, DEFAULT_SAMPLE_INTERVAL_S, host_load, quality
from pytest_llem.energy.devices import DeviceTally, MeasuredDevice, Reading, take_reading, with_slow_fields
from pytest_llem.results import QualityWarning, WindowMeasurement

# Every pass reads what changes fast (energy counter, power). Temperature, clocks and clock-
# limiting reasons change slowly and each costs a driver call: read them this often (and at
# every window edge, so a window's start and end temperatures are exact).
SLOW_READ_INTERVAL_S = 1.0
# Process lists cost milliseconds per call and serialise in the driver: check them rarely.
PROCESS_CHECK_INTERVAL_S = 1.0
# A window's edge is the moment just before its counter reads. A thread that stalls between
# that moment and the reads (preempted for a time slice on a busy host: milliseconds) makes
# the energy cover a span longer or shorter than the duration by the stall; for a part as
# short as a prefill, a few milliseconds, that is as much as the part. So an edge whose reads
# took longer than EDGE_STALL_FACTOR times what the meter's recent edges took (the median of
# the last EDGE_HISTORY; a driver whose reads slow down for good moves it within a few edges)
# plus EDGE_STALL_SLACK_S is read again, EDGE_READ_ATTEMPTS times at most, and the quickest
# attempt is kept. The meter's first edge reads twice, to learn how long its reads take.
EDGE_READ_ATTEMPTS = 3
EDGE_STALL_FACTOR = 2.0
EDGE_STALL_SLACK_S = 0.0005
EDGE_HISTORY = 15


class MeterOptions(BaseModel):
    """Session-wide meter settings, sent to the child with each experiment."""

    sample_interval_s: float = Field(default=DEFAULT_SAMPLE_INTERVAL_S, gt=0)
    rapl_dram: bool = False
    #: Report a meter's estimate (CodeCarbon without a power interface) as `estimated_energy_j`,
    #: flagged and never gated; without it an estimate is only the reason energy is missing.
    allow_estimated_energy: bool = False
    #: Idle power per device key (GPU UUID or RAPL zone), measured by the parent.
    baseline_power_w: dict[str, float] = Field(default_factory=dict)
    #: When each baseline was measured (Unix time: parent and child share the wall clock).
    baseline_measured_at: dict[str, float] = Field(default_factory=dict)
    #: What the session waited for before measuring each baseline (`idle.IdleReading.conditions`).
    baseline_conditions: dict[str, str] = Field(default_factory=dict)
    #: The GPUs the experiment owns, by UUID (its lease): the meter opens exactly these, and
    #: none when the list is empty (a CPU-only case). None: those `CUDA_VISIBLE_DEVICES` names
    #: (a case that names its own devices, or a meter used outside a session).
    gpu_uuids: list[str] | None = None
    #: Why the experiment owns no GPU (`gpu_uuids == []`), for the note that replaces a figure.
    no_gpu_reason: str | None = None
    #: Above this share of the host's CPU taken by others in a round, the result is flagged
    #: `host_busy` (`--llem-host-busy-share`).
    host_busy_share: float = Field(default=DEFAULT_HOST_BUSY_SHARE, ge=0, le=1)


def synchronize_accelerators() -> None:
    """Wait for launched GPU work, so a window's edges are where the work really is.

    Only where the workload has already imported torch and initialised CUDA: the meter
    itself never imports torch (the parent process must not).
    """
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return
    for index in range(torch.cuda.device_count()):
        torch.cuda.synchronize(index)


class EnergyMeter(ABC):
    """Measures energy over named windows that begin and end in the same process."""

    def __init__(self) -> None:
        self._window_starts: dict[str, float] = {}
        self._host_cpu_starts: dict[str, host_load.CpuSnapshot | None] = {}

    @property
    def measures_gpus(self) -> bool:
        """Whether the meter reads a GPU: then a round is measured for `MIN_WINDOW_S` at least,
        else for `MIN_CPU_WINDOW_S`, unless the config says otherwise (see
        `ExperimentContext.min_window_s`)."""
        return False

    def begin_window(self, name: str) -> None:
        if name in self._window_starts:
            raise ValueError(f"window {name!r} is already open")
        synchronize_accelerators()
        # Every meter, `none` included: others' CPU time skews the timing whatever is metered.
        self._host_cpu_starts[name] = host_load.snapshot()
        self._begin_readings(name)
        self._window_starts[name] = time.perf_counter()

    def end_window(self, name: str) -> WindowMeasurement:
        if name not in self._window_starts:
            raise ValueError(f"window {name!r} was never opened")
        synchronize_accelerators()
        duration_s = time.perf_counter() - self._window_starts.pop(name)
        measured = self._end_readings(name, duration_s)
        share = host_load.other_cpu_share(self._host_cpu_starts.pop(name), host_load.snapshot())
        return measured.model_copy(update={"host_other_cpu_share": share})

    def window_origin(self, name: str) -> float:
        """The moment (`time.perf_counter`) from which open window `name` counts its time: its
        timeline's `t_s` is zero there, so other series timed on the same clock line up with it."""
        if name not in self._window_starts:
            raise ValueError(f"window {name!r} is not open")
        return self._window_starts[name]

    @abstractmethod
    def _begin_readings(self, name: str) -> None:
        """Take the starting readings for window `name`."""

    @abstractmethod
    def _end_readings(self, name: str, duration_s: float) -> WindowMeasurement:
        """Take the closing readings for window `name` and return what was used."""

    def close(self) -> None:  # noqa: B027 - optional hook; most meters hold nothing to release
        """Release device handles and stop sampling threads."""


class NoEnergyMeter(EnergyMeter):
    """Times windows and measures no energy, saying why in every result."""

    NOT_MEASURED = QualityWarning(
        code=quality.ENERGY_NOT_MEASURED,
        message="no energy meter was selected (energy='none'); time and tokens only",
    )

    def __init__(self, reasons: list[str] | None = None) -> None:
        super().__init__()
        self.reasons = reasons or []
        self.warning = (
            QualityWarning(
                code=quality.ENERGY_NOT_MEASURED, message="energy not measured: " + "; ".join(self.reasons)
            )
            if self.reasons
            else self.NOT_MEASURED
        )

    def _begin_readings(self, name: str) -> None:
        return None

    def _end_readings(self, name: str, duration_s: float) -> WindowMeasurement:
        return WindowMeasurement(duration_s=duration_s, warnings=[self.warning], notes=list(self.reasons))


@dataclass
class _OpenWindow:
    started: float
    tallies: list[DeviceTally]
    persistence_off: list[str] = field(default_factory=list)
    #: How long each edge's kept reads took where even the quickest attempt was slow.
    stalled_edges_s: list[float] = field(default_factory=list)


class SampledMeter(EnergyMeter):
    """Energy counters read at each window's edges, plus a sampling thread.

    The thread reads every device each `sample_interval_s`: the energy counter (so a
    wrapping counter is never missed) and power for the timeline, in one driver call where
    the device allows it; every `SLOW_READ_INTERVAL_S` also temperature, clocks and
    clock-limiting reasons for the quality flags, and every `PROCESS_CHECK_INTERVAL_S`
    which processes use each GPU. Window edges read everything.
    """

    def __init__(
        self,
        devices: list[MeasuredDevice],
        options: MeterOptions | None = None,
        notes: list[str] | None = None,
        on_close: list[Callable[[], None]] | None = None,
    ) -> None:
        super().__init__()
        self.devices = devices
        self.options = options or MeterOptions()
        self.notes = notes or []
        self._on_close = on_close or []
        self._windows: dict[str, _OpenWindow] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process_group = os.getpgrp()
        self._recent_edges_s: deque[float] = deque(maxlen=EDGE_HISTORY)

    @property
    def measures_gpus(self) -> bool:
        return any(device.kind == "gpu" for device in self.devices)

    def _read_all(
        self, windows: list[_OpenWindow], now: float, check_processes: bool, slow: bool = True
    ) -> None:
        self._add(windows, now, [take_reading(device, slow=slow) for device in self.devices], check_processes)

    def _add(
        self, windows: list[_OpenWindow], now: float, readings: list[Reading], check_processes: bool
    ) -> None:
        for index, (device, reading) in enumerate(zip(self.devices, readings, strict=True)):
            for window in windows:
                window.tallies[index].add(now - window.started, reading)
            if check_processes:
                try:
                    pids = device.other_processes(self._process_group)
                except Exception:  # a process list is a hint for a flag; never fail a measurement on it
                    continue
                for window in windows:
                    window.tallies[index].other_pids |= pids

    def _read_edge(self, window: _OpenWindow) -> tuple[float, list[Reading]]:
        """Every device's readings at one of `window`'s edges, and the edge's moment
        (`time.perf_counter`, just before the counter reads kept): see EDGE_READ_ATTEMPTS."""
        usual_s = statistics.median(self._recent_edges_s) if self._recent_edges_s else None
        kept: tuple[float, float, list[Reading]] | None = None
        for _ in range(EDGE_READ_ATTEMPTS):
            moment = time.perf_counter()
            readings = [take_reading(device, slow=False) for device in self.devices]
            took_s = time.perf_counter() - moment
            if kept is None or took_s < kept[1]:
                kept = (moment, took_s, readings)
            if usual_s is None:  # the meter's first edge: its first attempt is all there is to go by
                usual_s = took_s
            elif took_s <= _stall_limit_s(usual_s):
                break
        assert kept is not None and usual_s is not None  # EDGE_READ_ATTEMPTS >= 1
        moment, took_s, readings = kept
        self._recent_edges_s.append(took_s)
        if took_s > _stall_limit_s(usual_s):
            window.stalled_edges_s.append(took_s)
        return moment, [with_slow_fields(d, r) for d, r in zip(self.devices, readings, strict=True)]

    def _begin_readings(self, name: str) -> None:
        now_unix = time.time()
        window = _OpenWindow(
            started=0.0,
            tallies=[
                DeviceTally(
                    d,
                    self.options.baseline_power_w.get(d.key),
                    baseline_age_s=self._baseline_age(d, now_unix),
                    baseline_measured_at=self._baseline_measured_at(d),
                    baseline_conditions=self.options.baseline_conditions.get(d.key),
                )
                for d in self.devices
            ],
        )
        for device in self.devices:
            try:
                if device.persistence_mode_off():
                    window.persistence_off.append(device.label)
            except Exception:  # same as above: a hint, not a measurement
                pass
        with self._lock:
            # The window's duration runs from just before the first counter read to just before
            # the last, so energy and duration cover the same span (no edge-time bias).
            window.started, readings = self._read_edge(window)
            self._add([window], window.started, readings, check_processes=True)
            self._windows[name] = window
        if self._thread is None:
            self._thread = threading.Thread(target=self._sample_loop, name="pytest-llem-sampler", daemon=True)
            self._thread.start()

    def window_origin(self, name: str) -> float:
        # The window's duration and timeline run from just before its first counter read.
        super().window_origin(name)
        return self._windows[name].started

    def _end_readings(self, name: str, duration_s: float) -> WindowMeasurement:
        with self._lock:
            window = self._windows.pop(name)
            ended, readings = self._read_edge(window)
            self._add([window], ended, readings, check_processes=True)
        duration_s = ended - window.started
        devices = []
        notes = list(self.notes)
        if window.stalled_edges_s:
            notes.append(
                "the counter reads at an edge of this window stalled for up to "
                f"{max(window.stalled_edges_s) * 1000:.1f} ms in every attempt (a busy host?): "
                "energy and duration may span times that differ by as much"
            )
        coarse_counters: dict[str, float] = {}
        for tally in window.tallies:
            device_energy, device_notes = tally.result(duration_s)
            devices.append(device_energy)
            notes.extend(device_notes)
            update_s = tally.device.counter_update_s
            if (
                device_energy.energy_source == tally.device.counter_source
                and update_s
                and duration_s < update_s
            ):
                coarse_counters[tally.device.label] = update_s
        warnings = quality.assess_window(
            duration_s,
            devices,
            other_pids={t.device.label: t.other_pids for t in window.tallies},
            persistence_off=window.persistence_off,
            lost=[t.device.label for t in window.tallies if t.lost is not None],
            coarse_counters=coarse_counters,
        )
        return WindowMeasurement(duration_s=duration_s, devices=devices, warnings=warnings, notes=notes)

    def _baseline_age(self, device: MeasuredDevice, now_unix: float) -> float | None:
        measured_at = self.options.baseline_measured_at.get(device.key)
        if measured_at is None or device.key not in self.options.baseline_power_w:
            return None
        return max(0.0, now_unix - measured_at)

    def _baseline_measured_at(self, device: MeasuredDevice) -> datetime | None:
        measured_at = self.options.baseline_measured_at.get(device.key)
        if measured_at is None or device.key not in self.options.baseline_power_w:
            return None
        return datetime.fromtimestamp(measured_at, timezone.utc)

    def _sample_loop(self) -> None:
        last_process_check = last_slow_read = time.perf_counter()
        while not self._stop.wait(self.options.sample_interval_s):
            now = time.perf_counter()
            check_processes = now - last_process_check >= PROCESS_CHECK_INTERVAL_S
            if check_processes:
                last_process_check = now
            slow = now - last_slow_read >= SLOW_READ_INTERVAL_S
            if slow:
                last_slow_read = now
            with self._lock:
                if self._windows:
                    self._read_all(list(self._windows.values()), now, check_processes, slow)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        closers, self._on_close = self._on_close, []  # closing twice must not shut NVML down twice
        for close in closers:
            close()


def _stall_limit_s(usual_s: float) -> float:
    """How long an edge's reads may take before they count as stalled (EDGE_READ_ATTEMPTS)."""
    return usual_s * EDGE_STALL_FACTOR + EDGE_STALL_SLACK_S
