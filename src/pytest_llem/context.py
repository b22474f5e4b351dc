"""`ExperimentContext`: what a workload receives in the isolated child.

    def generate(ctx):
        model = load(ctx.config.model)         # not measured
        with ctx.window():                     # measured; may be opened several times
            n = run(model)
        ctx.record(output_tokens=n, input_tokens=512)

Windows add up: their durations and energies are summed. If the workload never opens one,
the worker measures the whole call instead. Inside a window, `for _ in ctx.passes():` repeats
a pass over the work until the round has been measured for at least `min_window_s` (see
`ExperimentContext.min_window_s`), so short workloads still give a window long enough to
trust. `ctx.phase("loading model")` tells the pytest process what the workload does
meanwhile; rounds and windows report `measuring` themselves.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_llem.config import ExperimentConfig
from pytest_llem.energy import host_load, quality
from pytest_llem.energy.devices import thin_timeline
from pytest_llem.energy.meter import EnergyMeter
from pytest_llem.errors import InvalidRecord
from pytest_llem.progress import MEASURING, ProgressEvent
from pytest_llem.results import (
    MAX_TOKEN_COUNT,
    DeviceEnergy,
    PowerSample,
    QualityWarning,
    ServingSummary,
    WindowMeasurement,
    sum_or_none,
)


@dataclass
class RoundRecord:
    windows: list[WindowMeasurement] = field(default_factory=list)
    output_tokens: int | None = None
    input_tokens: int | None = None
    batch_latencies_s: list[float] = field(default_factory=list)
    serving: dict[str, float | None] = field(default_factory=dict)
    #: Passes over the work run by `ctx.passes()` in this round.
    passes: int = 0


def passes_until(min_window_s: float, elapsed_s: Callable[[], float]) -> Iterator[int]:
    """Yield pass numbers 0, 1, ... until `elapsed_s()` reaches `min_window_s` (at least one pass).

    The one loop behind `ExperimentContext.passes` and accelerate's ranks: a pass is never cut
    short, so the tokens counted are the tokens really produced.
    """
    index = 0
    while True:
        yield index
        index += 1
        if elapsed_s() >= min_window_s:
            return


class ExperimentContext:
    def __init__(
        self,
        config: ExperimentConfig,
        meter: EnergyMeter,
        on_first_window: Callable[[], None] = lambda: None,
        state_dir: Path | None = None,
        on_phase: Callable[[ProgressEvent], None] = lambda event: None,
    ) -> None:
        self.config = config
        #: The run's state dir, where files kept with the run go (a server's log, say).
        self.state_dir = state_dir
        self._meter = meter
        self._on_first_window = on_first_window
        self._on_phase = on_phase
        #: Every phase reported so far, in order (the worker derives their durations).
        self.progress: list[ProgressEvent] = []
        self._window_open = False
        self.windows: list[WindowMeasurement] = []
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.extra: dict[str, Any] = {}
        self.batch_latencies_s: list[float] = []
        self.first_token_latencies_s: list[float] = []
        self.inter_token_latencies_s: list[float] = []
        self.peak_memory: tuple[int, str] | None = None
        self.flops_estimate: float | None = None
        #: One record per round, when the workload iterates `ctx.rounds()`.
        self.round_records: list[RoundRecord] = []
        self._round: RoundRecord | None = None
        #: Set by the serving workload (scenario="serving").
        self.serving: ServingSummary | None = None
        self._open_parts: set[str] = set()
        self._window_started_s: float | None = None
        #: Passes run by `passes()`, over every round.
        self.passes_run = 0

    @property
    def min_window_s(self) -> float:
        """The shortest measured time per round (per experiment without rounds) that `passes()`
        keeps the work running for: the config's `min_window_s`, else `quality.MIN_WINDOW_S` when
        the meter reads a GPU (a GPU's power reading needs seconds to be trusted), else
        `quality.MIN_CPU_WINDOW_S` (shorter rounds time scheduling noise as much as the work)."""
        if self.config.min_window_s is not None:
            return self.config.min_window_s
        return quality.default_min_window_s(self._meter.measures_gpus)

    def measured_s(self) -> float:
        """Time measured so far in this round (in the experiment, outside rounds), open window included."""
        windows = self._round.windows if self._round is not None else self.windows
        open_s = time.perf_counter() - self._window_started_s if self._window_started_s is not None else 0.0
        return sum(w.duration_s for w in windows) + open_s

    def passes(self) -> Iterator[int]:
        """Inside an open window: yield once per pass over the work until the round has been
        measured for `min_window_s`; the result's `extra['passes']` says how many ran."""
        if not self._window_open:
            raise RuntimeError("ctx.passes() needs an open ctx.window(): the passes are what it measures")
        minimum = self.min_window_s
        for index in passes_until(minimum, self.measured_s):
            self.passes_run += 1
            if self._round is not None:
                self._round.passes += 1
            yield index
        self.extra.update(passes=self.passes_run, min_window_s=minimum)

    @property
    def params(self) -> dict[str, Any]:
        return self.config.params

    def phase(self, name: str, detail: str | None = None) -> None:
        """Say what the workload does from now on ("loading model", "warm-up", ...): shown live
        by pytest, and the result's `phase_durations_s` says how long each phase took."""
        self._report(ProgressEvent.now(name, detail=detail))

    def _report(self, event: ProgressEvent) -> None:
        self.progress.append(event)
        self._on_phase(event)

    @property
    def current_phase(self) -> str | None:
        return self.progress[-1].phase if self.progress else None

    def rounds(self) -> Iterator[int]:
        """Yield once per configured round; windows and tokens inside one round form its figures.

        Load and warm up before the loop, measure inside it: the model loads once for all rounds.
        """
        if self.round_records or self._round is not None:
            raise RuntimeError("ctx.rounds() can be iterated only once per experiment")
        total = self.config.rounds
        for index in range(total):
            self._round = RoundRecord()
            numbered = {"round": index + 1, "rounds": total} if total > 1 else {}
            self._report(ProgressEvent.now(MEASURING, **numbered))
            yield index
            self.round_records.append(self._round)
        self._round = None

    @contextmanager
    def window(self) -> Iterator[None]:
        """Measure the code inside the `with` block; energy and time add up across windows."""
        if self._window_open:
            raise RuntimeError("ctx.window() is already open; windows cannot be nested")
        if not self.windows:
            self._on_first_window()
        if self.current_phase != MEASURING:
            self._report(ProgressEvent.now(MEASURING))
        self._window_open = True
        self._meter.begin_window("llem.window")
        self._window_started_s = time.perf_counter()
        try:
            yield
        finally:
            self._window_started_s = None
            measured = self._meter.end_window("llem.window")
            self.windows.append(measured)
            if self._round is not None:
                self._round.windows.append(measured)
            self._window_open = False

    def on_timeline(self) -> Callable[[float], float]:
        """Inside an open window: a function from a moment on `time.perf_counter` (the meter's
        clock) to seconds on the result's power timeline (`PowerSample.t_s`: the measured windows
        end to end), for a series timed alongside the meter's (a server's own metrics, say)."""
        if not self._window_open:
            raise RuntimeError("ctx.on_timeline() needs an open ctx.window(): the timeline is its")
        origin = self._meter.window_origin("llem.window")
        before_s = sum(w.duration_s for w in self.windows)
        return lambda moment: before_s + moment - origin

    def begin_part(self, name: str) -> None:
        """Start measuring a named part of the open window (a serving load's steady state, say).

        A part is measured alongside the window, by the same meter; it adds nothing to the
        window's figures. `end_part(name)` returns what it used.
        """
        if not self._window_open:
            raise RuntimeError("ctx.begin_part() needs an open ctx.window(): a part lies inside it")
        if name in self._open_parts:
            raise RuntimeError(f"part {name!r} is already open")
        self._meter.begin_window(f"llem.part.{name}")
        self._open_parts.add(name)

    def end_part(self, name: str) -> WindowMeasurement:
        if name not in self._open_parts:
            raise RuntimeError(f"part {name!r} was never begun")
        self._open_parts.discard(name)
        return self._meter.end_window(f"llem.part.{name}")

    def record_serving(self, summary: ServingSummary) -> None:
        """A serving load's figures; the latest is the result's, each round keeps its headline."""
        self.serving = summary
        if self._round is not None:
            self._round.serving = summary.headline()

    def record(
        self,
        output_tokens: int | None = None,
        input_tokens: int | None = None,
        **extra: Any,
    ) -> None:
        """Report token counts (added up over calls) and any extra JSON-able figures.

        A count that is not a whole number of tokens from 0 to `MAX_TOKEN_COUNT` (on its own or
        added up) raises `InvalidRecord`, which fails the experiment with one line."""
        if output_tokens is not None:
            self.output_tokens = _count("output_tokens", output_tokens, self.output_tokens)
            if self._round is not None:
                self._round.output_tokens = _count("output_tokens", output_tokens, self._round.output_tokens)
        if input_tokens is not None:
            self.input_tokens = _count("input_tokens", input_tokens, self.input_tokens)
            if self._round is not None:
                self._round.input_tokens = _count("input_tokens", input_tokens, self._round.input_tokens)
        self.extra.update(extra)

    def record_latency(
        self,
        batch_s: float | None = None,
        first_token_s: float | None = None,
        inter_token_s: float | None = None,
    ) -> None:
        """Add one batch's (or request's) latencies; the result reports their percentiles.

        Each is a finite number of seconds >= 0; anything else raises `InvalidRecord` (one line)
        before any of them is kept."""
        checked = [
            (values, _seconds(name, value))
            for values, name, value in (
                (self.batch_latencies_s, "batch_s", batch_s),
                (self.first_token_latencies_s, "first_token_s", first_token_s),
                (self.inter_token_latencies_s, "inter_token_s", inter_token_s),
            )
            if value is not None
        ]
        for values, value in checked:
            values.append(value)
        if batch_s is not None and self._round is not None:
            self._round.batch_latencies_s.append(float(batch_s))

    def record_resources(
        self, peak_memory_bytes: int | None = None, memory_kind: str = "peak_rss", flops: float | None = None
    ) -> None:
        """Peak memory (with what it counts) and a FLOPs estimate for the measured work."""
        if peak_memory_bytes is not None:
            self.peak_memory = (_count("peak_memory_bytes", peak_memory_bytes, unit="bytes"), memory_kind)
        if flops is not None:
            self.flops_estimate = _non_negative("record_resources", "flops", flops, "a finite number")


def _count(name: str, value: Any, total: int | None = None, unit: str = "tokens") -> int:
    """`value` added to `total`, both whole numbers from 0 to `MAX_TOKEN_COUNT`."""
    call = "record_resources" if unit == "bytes" else "record"
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole or not 0 <= value <= MAX_TOKEN_COUNT:
        raise InvalidRecord(
            f"ctx.{call}({name}=...) takes a whole number of {unit} >= 0 (at most {MAX_TOKEN_COUNT}), "
            f"got {value!r}"
        )
    summed = (total or 0) + int(value)
    if summed > MAX_TOKEN_COUNT:
        raise InvalidRecord(
            f"ctx.{call}({name}=...): the counts recorded add up to {summed}, over {MAX_TOKEN_COUNT}; "
            f"record each count once, in {unit}"
        )
    return summed


def _seconds(name: str, value: Any) -> float:
    return _non_negative("record_latency", name, value, "a finite number of seconds")


def _non_negative(call: str, name: str, value: Any, what: str) -> float:
    """`value` as a float when it is a real number, finite and >= 0; else one line naming the field."""
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    if not (math.isfinite(number) and number >= 0):
        raise InvalidRecord(f"ctx.{call}({name}=...) takes {what} >= 0, got {value!r}")
    return number


def combine_windows(windows: list[WindowMeasurement]) -> WindowMeasurement:
    """Add windows up: durations and per-device energies sum, warnings and notes are kept once."""
    by_device: dict[str, list[DeviceEnergy]] = {}
    for window in windows:
        for device in window.devices:
            by_device.setdefault(device.baseline_key, []).append(device)
    warnings: list[QualityWarning] = []
    notes: list[str] = []
    for window in windows:
        warnings.extend(w for w in window.warnings if w not in warnings)
        notes.extend(n for n in window.notes if n not in notes)
    estimates = [w.estimated_energy_j for w in windows]
    return WindowMeasurement(
        duration_s=sum(w.duration_s for w in windows),
        devices=[combine_device(parts) for parts in by_device.values()],
        warnings=quality.merge_flags(warnings),
        notes=notes,
        estimated_energy_j=sum_or_none(estimates) if any(e is not None for e in estimates) else None,
        host_other_cpu_share=host_load.combined_share(
            [(w.host_other_cpu_share, w.duration_s) for w in windows]
        ),
    )


def combine_device(parts: list[DeviceEnergy]) -> DeviceEnergy:
    """One device over several windows; its energy is None if any window lacks it."""
    first, last = parts[0], parts[-1]
    energies = [p.energy_j for p in parts]
    energy_j = sum_or_none(energies)
    duration_s = sum(p.duration_s for p in parts)
    timeline: list[PowerSample] = []
    offset_s = 0.0
    for part in parts:
        timeline.extend(s.model_copy(update={"t_s": s.t_s + offset_s}) for s in part.timeline)
        offset_s += part.duration_s
    peaks = [p.peak_power_w for p in parts if p.peak_power_w is not None]
    sources = sorted({p.energy_source for p in parts if p.energy_source})
    return first.model_copy(
        update={
            "energy_j": energy_j,
            "energy_source": "+".join(sources) or None,
            "duration_s": duration_s,
            "avg_power_w": energy_j / duration_s if energy_j is not None and duration_s > 0 else None,
            "peak_power_w": max(peaks) if peaks else None,
            "temperature_end_c": last.temperature_end_c,
            "throttle_reasons": sorted({r for p in parts for r in p.throttle_reasons}),
            "power_samples": sum(p.power_samples for p in parts),
            "timeline": thin_timeline(timeline),
        }
    )
