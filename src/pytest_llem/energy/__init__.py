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
#: The same on the CPU, where RAPL's counters update every ~1 ms and what varies is the
#: timing: 2 s spans hundreds of scheduler ticks and, where `examples/tiny_cpu` runs a pass in
#: 0.05-0.4 s, 5 to 40 passes, for at most ~2 s more per case. Contention it cannot average
#: out: on a 2-core VM whose other jobs took 36-84% of the CPU, tokens/s over 6 rounds of that
#: model varied by 23-126% (coefficient of variation) at every minimum from 0 to 4 s; the
#: `host_busy` flag says so instead.
CPU_MIN_WINDOW_S = 2.0
#: Above this share of the host's CPU capacity taken by others during a measured round, a
#: result is flagged `host_busy` (`--llem-host-busy-share`). A case that uses every core loses
#: about the share others take, so beyond 10% the load alone moves tokens/s as much as a
#: typical regression limit (5-10%) allows.
DEFAULT_HOST_BUSY_SHARE = 0.1
