"""Energy measurement: meters, the devices they read, idle baselines and quality flags.

`meter` owns the window interface and chooses a meter by name; `devices` the device
interface and its arithmetic; `nvml` and `rapl` the hardware behind that interface;
`adapters` the Zeus and CodeCarbon meters; `idle` the parent's baseline and cool-down;
`quality` the flags and their thresholds.
"""

from pytest_llem.energy.meter import METER_NAMES, EnergyMeter, MeterOptions, NoEnergyMeter, create_meter

__all__ = ["METER_NAMES", "EnergyMeter", "MeterOptions", "NoEnergyMeter", "create_meter"]
