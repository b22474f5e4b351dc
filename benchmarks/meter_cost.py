"""What energy metering costs the measured process, measured side by side in one run.

    python benchmarks/meter_cost.py [--seconds S] [--interval I] [--repeats N]

Prints, for a sampled meter with no devices (the floor: a thread that wakes and reads
nothing), for 1 and 4 simulated GPUs (tests/support/fake_nvml) and for this machine's GPUs when NVML
starts:
- the CPU time of the sampling thread over an S-second window, as a share of one core, and
  per pass over the devices (every I seconds);
- the time taken by the readings at a window's edges (`begin_window` + `end_window` around an
  empty body, median of N), against `NoEnergyMeter`, which reads nothing;
- for each NVML row, how often each NVML function was called per sampling pass and device
  (edges left out): what the sampler reads every pass and what it reads less often.
The simulated NVML answers from Python, so its rows show pytest-llem's own cost; the real
driver's calls add theirs (on a virtualised H200 a pass of five calls cost 4.0 ms, about
0.8 ms a call). Absolute times depend on the machine; read the shares, ratios and counts.

A pass reads the energy counter and power in one `nvmlDeviceGetFieldValues` call; the slow
fields (temperature, SM clock, clock-limiting reasons) once a second, and the process list
once a second: at 10 Hz, 1 + 3/10 + 1/10 = 1.4 calls per pass and GPU, against 5.1 before
(5 calls a pass plus the process list). `--seconds 3` on a 2-core machine (Python 3.11) printed:

    meter            devices  thread CPU   per pass      edges  edges/none
    nvml, simulated        1     0.296%    296.8us    129.5us        41.6
      nvml calls per pass and device: nvmlDeviceGetFieldValues 0.97, nvmlDeviceGetTemperature
      0.07, nvmlDeviceGetClockInfo 0.07, nvmlDeviceGetCurrentClocksEventReasons 0.07,
      nvmlDeviceGetComputeRunningProcesses 0.07

(a 3 s window holds two slow reads in its ~31 passes, hence 0.07 rather than 0.10; the
counts are what the code does, the times depend on the machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from fake_nvml import load_fake_nvml  # noqa: E402

from pytest_llem.energy.devices import MeasuredDevice
from pytest_llem.energy.meter import (
    PROCESS_CHECK_INTERVAL_S,
    SLOW_READ_INTERVAL_S,
    EnergyMeter,
    MeterOptions,
    NoEnergyMeter,
    SampledMeter,
)
from pytest_llem.energy.nvml import NvmlSession
from pytest_llem.errors import MeterUnavailable


class CountingNvml:
    """An NVML module whose device calls are counted (the simulated or the real one)."""

    def __init__(self, nvml: ModuleType) -> None:
        self._nvml = nvml
        self.calls: Counter[str] = Counter()
        self.counting = False

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._nvml, name)
        if not (callable(target) and name.startswith("nvmlDevice")):
            return target

        def counted(*args: Any) -> Any:
            if self.counting:
                self.calls[name] += 1
            return target(*args)

        return counted


class ThreadTimedMeter(SampledMeter):
    """A `SampledMeter` that records the CPU time its sampling thread used.

    `time.thread_time` read inside the thread counts that thread alone, so the window edges
    on the main thread and the interpreter's other work stay out of the figure; subtracting
    an idle run's process CPU time would only approximate that, with the noise of both runs.
    """

    thread_cpu_s = 0.0

    def _sample_loop(self) -> None:
        started = time.thread_time()
        try:
            super()._sample_loop()
        finally:
            self.thread_cpu_s = time.thread_time() - started


def sampling_cost(
    devices: list[MeasuredDevice], options: MeterOptions, seconds: float, counter: CountingNvml | None
) -> tuple[float, float, dict[str, float]]:
    """The sampling thread's share of one core, its CPU seconds per pass over the devices, and
    the NVML calls per pass and device that the thread made (the edges' calls left out)."""
    meter = ThreadTimedMeter(devices, options)
    started = time.perf_counter()
    meter.begin_window("sampled")
    if counter is not None:
        counter.counting = True
    time.sleep(seconds)
    if counter is not None:
        counter.counting = False
    meter.end_window("sampled")
    meter.close()
    lifetime_s = time.perf_counter() - started
    passes = max(1, round(lifetime_s / options.sample_interval_s))
    per_pass = {}
    if counter is not None and devices:
        per_pass = {name: n / passes / len(devices) for name, n in counter.calls.most_common()}
    return meter.thread_cpu_s / lifetime_s, meter.thread_cpu_s / passes, per_pass


def edge_cost(meter: EnergyMeter, repeats: int) -> float:
    """Median seconds for an empty window: the readings at both edges and their arithmetic."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        meter.begin_window("empty")
        meter.end_window("empty")
        times.append(time.perf_counter() - started)
    meter.close()
    return statistics.median(times)


Opened = tuple[list[MeasuredDevice], Callable[[], None], CountingNvml | None]


def no_devices() -> Opened:
    return [], lambda: None, None


def simulated_gpus(fake: ModuleType, count: int) -> Callable[[], Opened]:
    def open_gpus() -> Opened:
        fake.configure([fake.FakeGpu(uuid=f"GPU-{i:04d}-sim") for i in range(count)])
        counter = CountingNvml(fake)
        session = NvmlSession.open(counter)  # type: ignore[arg-type]
        return session.visible_gpus(None), session.close, counter

    return open_gpus


def real_gpus() -> Opened:
    try:
        import pynvml
    except ImportError as exc:
        raise MeterUnavailable(f"pynvml is not installed ({exc})") from None
    counter = CountingNvml(pynvml)
    session = NvmlSession.open(counter)  # type: ignore[arg-type]
    try:
        return session.visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES")), session.close, counter
    except MeterUnavailable:
        session.close()
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the sampled window")
    parser.add_argument("--interval", type=float, default=0.1, help="sampling interval in seconds")
    parser.add_argument("--repeats", type=int, default=200, help="empty windows timed per row")
    args = parser.parse_args()
    options = MeterOptions(sample_interval_s=args.interval)
    fake = load_fake_nvml()
    rows: list[tuple[str, Callable[[], Opened]]] = [
        ("sampled, empty", no_devices),
        ("nvml, simulated", simulated_gpus(fake, 1)),
        ("nvml, simulated", simulated_gpus(fake, 4)),
        ("nvml, real", real_gpus),
    ]
    reference = edge_cost(NoEnergyMeter(), args.repeats)
    print(f"{'meter':16} {'devices':>7} {'thread CPU':>11} {'per pass':>10} {'edges':>10} {'edges/none':>11}")
    print(f"{'none':16} {0:7} {'-':>11} {'-':>10} {reference * 1e6:8.1f}us {1.0:11.1f}")
    for label, open_devices in rows:
        try:
            devices, close, counter = open_devices()
        except MeterUnavailable as exc:
            print(f"{label:16} skipped: {exc}")
            continue
        try:
            share, per_pass, calls = sampling_cost(devices, options, args.seconds, counter)
            edges = edge_cost(SampledMeter(devices, options), args.repeats)
        finally:
            close()
        print(
            f"{label:16} {len(devices):7} {share:10.3%} {per_pass * 1e6:8.1f}us"
            f" {edges * 1e6:8.1f}us {edges / reference:11.1f}"
        )
        if calls:
            listed = ", ".join(f"{name} {n:.2f}" for name, n in calls.items())
            print(f"  nvml calls per pass and device: {listed}")
    print(
        f"(thread CPU over a {args.seconds:g} s window sampled every {args.interval:g} s; slow fields"
        f" every {SLOW_READ_INTERVAL_S:g} s, processes every {PROCESS_CHECK_INTERVAL_S:g} s; edges:"
        f" median of {args.repeats}; python {sys.version.split()[0]})"
    )


if __name__ == "__main__":
    main()
