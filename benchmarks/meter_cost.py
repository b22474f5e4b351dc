"""What energy metering costs the measured process, measured side by side in one run.

    python benchmarks/meter_cost.py [--seconds S] [--interval I] [--repeats N]

Prints, for a sampled meter with no devices (the floor: a thread that wakes and reads
nothing), for 1 and 4 simulated GPUs (tests/support/fake_nvml) and for this machine's GPUs when NVML
starts:
- the CPU time of the sampling thread over an S-second window, as a share of one core, and
  per pass over the devices (every I seconds);
- the time taken by the readings at a window's edges (`begin_window` + `end_window` around an
  empty body, median of N), against `NoEnergyMeter`, which reads nothing.
The simulated NVML answers from Python, so its rows show pytest-llem's own cost; the real
driver's calls add theirs. Absolute times depend on the machine; read the shares and ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from fake_nvml import load_fake_nvml  # noqa: E402

from pytest_llem.energy.devices import MeasuredDevice
from pytest_llem.energy.meter import EnergyMeter, MeterOptions, NoEnergyMeter, SampledMeter
from pytest_llem.energy.nvml import NvmlSession
from pytest_llem.errors import MeterUnavailable


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
    devices: list[MeasuredDevice], options: MeterOptions, seconds: float
) -> tuple[float, float]:
    """The sampling thread's share of one core, and its CPU seconds per pass over the devices."""
    meter = ThreadTimedMeter(devices, options)
    started = time.perf_counter()
    meter.begin_window("sampled")
    time.sleep(seconds)
    meter.end_window("sampled")
    meter.close()
    lifetime_s = time.perf_counter() - started
    passes = max(1, round(lifetime_s / options.sample_interval_s))
    return meter.thread_cpu_s / lifetime_s, meter.thread_cpu_s / passes


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


Opened = tuple[list[MeasuredDevice], Callable[[], None]]


def no_devices() -> Opened:
    return [], lambda: None


def simulated_gpus(fake: ModuleType, count: int) -> Callable[[], Opened]:
    def open_gpus() -> Opened:
        fake.configure([fake.FakeGpu(uuid=f"GPU-{i:04d}-sim") for i in range(count)])
        session = NvmlSession.open(fake)
        return session.visible_gpus(None), session.close

    return open_gpus


def real_gpus() -> Opened:
    try:
        import pynvml
    except ImportError as exc:
        raise MeterUnavailable(f"pynvml is not installed ({exc})") from None
    session = NvmlSession.open(pynvml)
    try:
        return session.visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES")), session.close
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
            devices, close = open_devices()
        except MeterUnavailable as exc:
            print(f"{label:16} skipped: {exc}")
            continue
        try:
            share, per_pass = sampling_cost(devices, options, args.seconds)
            edges = edge_cost(SampledMeter(devices, options), args.repeats)
        finally:
            close()
        print(
            f"{label:16} {len(devices):7} {share:10.3%} {per_pass * 1e6:8.1f}us"
            f" {edges * 1e6:8.1f}us {edges / reference:11.1f}"
        )
    print(
        f"(thread CPU over a {args.seconds:g} s window sampled every {args.interval:g} s; edges: median"
        f" of {args.repeats}; python {sys.version.split()[0]})"
    )


if __name__ == "__main__":
    main()
