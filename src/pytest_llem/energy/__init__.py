"""Energy measurement: meters, the devices they read, idle baselines and quality flags.

`meter` owns the window interface and the sampled meter; `factory` chooses a meter by name
and opens its devices; `devices` the device interface and its arithmetic; `nvml` and `rapl`
the hardware behind that interface; `adapters` the Zeus and CodeCarbon meters; `idle` the
parent's baseline and cool-down; `quality` the flags and their thresholds.

Meters run in the experiment's child; the idle baseline runs in the pytest process (NVML and
powercap only). This module holds only the names and defaults that settings need, so that
registering pytest options imports nothing else.
"""

from typing import Literal, get_args

MeterName = Literal["auto", "nvml", "rapl", "zeus", "codecarbon", "none"]
METER_NAMES: tuple[str, ...] = get_args(MeterName)
DEFAULT_SAMPLE_INTERVAL_S = 0.1
DEFAULT_BASELINE_S = 5.0
#: The shortest measured round, by default, when the meter reads a GPU: NVML's counters
#: update every ~10-100 ms and GPU windows under ~5 s vary widely.
GPU_MIN_WINDOW_S = 5.0
#: The same on the CPU (RAPL's counters update every ~1 ms; what varies is the timing):
#: measured on `examples/tiny_cpu`, see `quality.CPU_MIN_WINDOW_S`.
CPU_MIN_WINDOW_S = 2.0
#: Above this share of the host's CPU capacity taken by others during the measured window,
#: a result is flagged `host_busy` (`--llem-host-busy-share`; see `quality.HOST_BUSY`).
DEFAULT_HOST_BUSY_SHARE = 0.1
