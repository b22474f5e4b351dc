"""The energy-meter interface every measurement source implements, and the `none` meter.

A meter lives in the isolated child. Windows are named, as in Zeus's `ZeusMonitor`, so the
implicit whole-call window and a workload's explicit windows can overlap:

    meter.begin_window("generate")
    ...                                   # the work being measured
    measurement = meter.end_window("generate")

`measurement.energy_j` is `None` when the meter could not measure, with a `QualityWarning`
that says why: never a guess dressed as a measurement.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable

from pytest_llem.errors import MeterUnavailable
from pytest_llem.results import QualityWarning, WindowMeasurement


class EnergyMeter(ABC):
    """Measures energy over named windows that begin and end in the same process."""

    #: Label stored as `energy_source` in results; None when nothing is measured.
    source: str | None = None

    def __init__(self) -> None:
        self._window_starts: dict[str, float] = {}

    def begin_window(self, name: str) -> None:
        if name in self._window_starts:
            raise ValueError(f"window {name!r} is already open")
        self._begin_readings(name)
        self._window_starts[name] = time.perf_counter()

    def end_window(self, name: str) -> WindowMeasurement:
        try:
            started = self._window_starts.pop(name)
        except KeyError:
            raise ValueError(f"window {name!r} was never opened") from None
        duration_s = time.perf_counter() - started
        return self._end_readings(name, duration_s)

    @abstractmethod
    def _begin_readings(self, name: str) -> None:
        """Take the starting readings for window `name`."""

    @abstractmethod
    def _end_readings(self, name: str, duration_s: float) -> WindowMeasurement:
        """Take the closing readings for window `name` and return what was used."""

    def close(self) -> None:  # noqa: B027 - optional hook; most meters hold nothing to release
        """Release device handles and stop sampling threads."""


class NoEnergyMeter(EnergyMeter):
    """`energy="none"`: times windows, measures no energy, and says so in every result."""

    source = None
    NOT_MEASURED = QualityWarning(
        code="energy_not_measured",
        message="no energy meter was selected (energy='none'); time and tokens only",
    )

    def _begin_readings(self, name: str) -> None:
        return None

    def _end_readings(self, name: str, duration_s: float) -> WindowMeasurement:
        return WindowMeasurement(duration_s=duration_s, warnings=[self.NOT_MEASURED])


METERS: dict[str, Callable[[], EnergyMeter]] = {"none": NoEnergyMeter}


def create_meter(name: str) -> EnergyMeter:
    try:
        factory = METERS[name]
    except KeyError:
        raise MeterUnavailable(
            f"unknown energy meter {name!r} (available: {', '.join(sorted(METERS))})"
        ) from None
    return factory()
