"""A simulated NVML, shaped like nvidia-ml-py's `pynvml`, for machines without an NVIDIA GPU.

Only the calls pytest-llem makes exist here. Each GPU follows a scenario: a power profile
(so figures are checkable), and what a real GPU does with it. As on an A100/H100, the energy
counter advances in steps (`counter_step_s`, 0.1 s: it holds the profile's exact integral up
to the last step), `nvmlDeviceGetPowerUsage` and the average-power field are a moving
average over `power_average_s` (1 s), and only the instant-power field is the power now. The
ideal mode (`ideal=True` in `configure`/`write_scenario`, the scenario's "ideal" key, or
`FAKE_NVML_IDEAL=1`) makes the counter exact at every instant and every power reading
instantaneous, for a test that genuinely needs exact figures. Faults that a real GPU shows:
no energy counter (pre-Volta), a counter that starts failing, a GPU that falls off the bus,
MIG mode, throttling, other processes, persistence mode off.

Scenarios come from `configure(...)` in-process, or from the JSON file named by
`FAKE_NVML_SCENARIO` in another process (put this folder first on PYTHONPATH). Times are
seconds since the scenario's `epoch` (wall clock), so parent and child agree on them.

The driver, like a real one, may lack calls that the binding offers; calling one raises
`NVMLError_FunctionNotFound`, as nvidia-ml-py does when the library has no such symbol:
- "current": every call and field below (today's drivers still export the deprecated
  `nvmlDeviceGetCurrentClocksThrottleReasons`);
- "new": without `nvmlDeviceGetCurrentClocksThrottleReasons` (removed with CUDA 14);
- "old": without `nvmlDeviceGetCurrentClocksEventReasons` (added in CUDA 12.2's driver), and
  with no power fields among the field values (the energy field answers).
`calls_by_function` counts the calls made to each function, for tests and the cost benchmark.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_UNKNOWN = 999
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION = 83
NVML_FI_DEV_POWER_AVERAGE = 185
NVML_FI_DEV_POWER_INSTANT = 186
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3
DRIVERS = ("current", "new", "old")
NVML_CLOCK_MEM = 2

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    def __new__(cls, value: int) -> NVMLError:
        # As nvidia-ml-py: NVMLError(code) is an instance of that code's subclass.
        subclass = _SUBCLASSES.get(value, cls) if cls is NVMLError else cls
        return super().__new__(subclass)

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")


class NVMLError_FunctionNotFound(NVMLError):  # noqa: N801 - nvidia-ml-py's name
    pass


_SUBCLASSES = {NVML_ERROR_FUNCTION_NOT_FOUND: NVMLError_FunctionNotFound}


@dataclass
class FakeGpu:
    uuid: str
    name: str = "Simulated GPU"
    #: [[t_s, watts], ...]: power from t_s on, until the next step.
    power_profile: list[list[float]] = field(default_factory=lambda: [[0.0, 100.0]])
    has_energy_counter: bool = True
    counter_fails_after_s: float | None = None
    lost_after_s: float | None = None
    temperature_c: float = 40.0
    temperature_rise_c_per_s: float = 0.0
    sm_clock_mhz: float = 1500.0
    throttle_mask: int = 0
    persistence_mode: int = 1
    mig_mode: int = 0
    other_pids: list[int] = field(default_factory=list)
    power_limit_w: float = 700.0
    applications_clocks_mhz: list[int] = field(default_factory=lambda: [1980, 2619])  # SM, memory
    ecc_mode: int = 1
    initial_energy_mj: int = 123_456_789
    #: A file of "t_s watts" lines that extends `power_profile`: `log_power` appends to it, so a
    #: workload in one process can change the power that another process's NVML sees.
    power_log: str | None = None
    #: The energy counter advances every this many seconds (since the epoch); 0: continuously.
    counter_step_s: float = 0.1
    #: Average power (`nvmlDeviceGetPowerUsage`, the average field) covers this many seconds; 0: now.
    power_average_s: float = 1.0


#: Set (to anything but "0" or "") for the ideal mode in every process that loads the scenario.
IDEAL_ENV = "FAKE_NVML_IDEAL"

_state: dict[str, Any] = {
    "gpus": [],
    "epoch": None,
    "initialised": False,
    "driver_loaded": True,
    "driver": "current",
    "ideal": False,
    "calls": 0,
}
#: Calls made per NVML function since the last `configure`.
calls_by_function: Counter[str] = Counter()


def configure(
    gpus: list[FakeGpu],
    epoch: float | None = None,
    driver_loaded: bool = True,
    driver: str = "current",
    ideal: bool = False,
) -> None:
    if driver not in DRIVERS:
        raise ValueError(f"driver: {driver!r} is not one of {', '.join(DRIVERS)}")
    _state.update(
        gpus=list(gpus),
        epoch=time.time() if epoch is None else epoch,
        driver_loaded=driver_loaded,
        driver=driver,
        ideal=ideal or os.environ.get(IDEAL_ENV, "") not in ("", "0"),
    )
    _state["calls"] = 0
    calls_by_function.clear()


def write_scenario(
    path: str, gpus: list[FakeGpu], driver_loaded: bool = True, driver: str = "current", ideal: bool = False
) -> None:
    """A scenario file for other processes; its epoch is now."""
    payload = {
        "epoch": time.time(),
        "driver_loaded": driver_loaded,
        "driver": driver,
        "ideal": ideal,
        "gpus": [g.__dict__ for g in gpus],
    }
    with open(path, "w") as f:
        json.dump(payload, f)


def _load_scenario_from_env() -> None:
    path = os.environ.get("FAKE_NVML_SCENARIO")
    if path and not _state["gpus"]:
        with open(path) as f:
            payload = json.load(f)
        configure(
            [FakeGpu(**g) for g in payload["gpus"]],
            payload["epoch"],
            payload["driver_loaded"],
            payload.get("driver", "current"),
            payload.get("ideal", False),
        )


def _now_s() -> float:
    return time.time() - _state["epoch"]


def log_power(watts: float) -> None:
    """From now on, every simulated GPU with a power log draws `watts`."""
    _load_scenario_from_env()
    for gpu in _state["gpus"]:
        if gpu.power_log:
            with open(gpu.power_log, "a") as f:
                f.write(f"{_now_s()} {watts}\n")


def _steps(gpu: FakeGpu) -> list[list[float]]:
    steps = [list(step) for step in gpu.power_profile]
    if gpu.power_log and os.path.exists(gpu.power_log):
        with open(gpu.power_log) as f:
            steps += [[float(v) for v in line.split()] for line in f if line.strip()]
    return sorted(steps)


def _joules_until(steps: list[list[float]], t_s: float) -> float:
    """The profile's exact integral from its first step to `t_s` (negative before it: the first
    step's power is taken to have run since ever, so a moving average near the epoch is defined)."""
    first_start, first_watts = steps[0]
    if t_s <= first_start:
        return (t_s - first_start) * first_watts
    joules = 0.0
    for i, (start, watts) in enumerate(steps):
        end = steps[i + 1][0] if i + 1 < len(steps) else float("inf")
        if t_s <= start:
            break
        joules += (min(t_s, end) - start) * watts
    return joules


def _counter_step_s(gpu: FakeGpu) -> float:
    return 0.0 if _state["ideal"] else gpu.counter_step_s


def _energy_mj(gpu: FakeGpu, t_s: float) -> float:
    """The counter: the exact integral as of its last update (every `counter_step_s`)."""
    step_s = _counter_step_s(gpu)
    updated_s = math.floor(t_s / step_s) * step_s if step_s > 0 else t_s
    return gpu.initial_energy_mj + max(0.0, _joules_until(_steps(gpu), updated_s)) * 1000.0


def _power_w(gpu: FakeGpu, t_s: float) -> float:
    """The power now (the instant field)."""
    steps = _steps(gpu)
    current = steps[0][1]
    for start, watts in steps:
        if t_s >= start:
            current = watts
    return current


def _average_power_w(gpu: FakeGpu, t_s: float) -> float:
    """What `nvmlDeviceGetPowerUsage` and the average field report: the mean over the last
    `power_average_s` (the power now in the ideal mode)."""
    span_s = 0.0 if _state["ideal"] else gpu.power_average_s
    if span_s <= 0:
        return _power_w(gpu, t_s)
    steps = _steps(gpu)
    return (_joules_until(steps, t_s) - _joules_until(steps, t_s - span_s)) / span_s


def _gpu(handle: FakeGpu, function: str) -> FakeGpu:
    _state["calls"] += 1
    calls_by_function[function] += 1
    if not _state["initialised"]:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    if handle.lost_after_s is not None and _now_s() >= handle.lost_after_s:
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)
    return handle


def nvmlInit() -> None:
    _load_scenario_from_env()
    if not _state["driver_loaded"]:
        raise NVMLError(NVML_ERROR_DRIVER_NOT_LOADED)
    _state["initialised"] = True


def nvmlShutdown() -> None:
    _state["initialised"] = False


def nvmlSystemGetDriverVersion() -> str:
    return "000.00-simulated"


def nvmlSystemGetCudaDriverVersion() -> int:
    return 12040


def nvmlDeviceGetApplicationsClock(handle: FakeGpu, clock: int) -> int:
    return _gpu(handle, "ApplicationsClock").applications_clocks_mhz[0 if clock == NVML_CLOCK_SM else 1]


def nvmlDeviceGetEccMode(handle: FakeGpu) -> list[int]:
    mode = _gpu(handle, "EccMode").ecc_mode
    return [mode, mode]


def nvmlDeviceGetCount() -> int:
    return len(_state["gpus"])


def nvmlDeviceGetHandleByIndex(index: int) -> FakeGpu:
    try:
        return _state["gpus"][index]
    except IndexError:
        raise NVMLError(NVML_ERROR_NOT_FOUND) from None


def nvmlDeviceGetUUID(handle: FakeGpu) -> str:
    return _gpu(handle, "nvmlDeviceGetUUID").uuid


def nvmlDeviceGetName(handle: FakeGpu) -> str:
    return _gpu(handle, "nvmlDeviceGetName").name


def nvmlDeviceGetMigMode(handle: FakeGpu) -> list[int]:
    mode = _gpu(handle, "nvmlDeviceGetMigMode").mig_mode
    return [mode, mode]


def nvmlDeviceGetTotalEnergyConsumption(handle: FakeGpu) -> int:
    gpu = _gpu(handle, "nvmlDeviceGetTotalEnergyConsumption")
    if not gpu.has_energy_counter:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    t_s = _now_s()
    if gpu.counter_fails_after_s is not None and t_s >= gpu.counter_fails_after_s:
        raise NVMLError(NVML_ERROR_UNKNOWN)
    return int(_energy_mj(gpu, t_s))


def nvmlDeviceGetPowerUsage(handle: FakeGpu) -> int:
    return int(_average_power_w(_gpu(handle, "nvmlDeviceGetPowerUsage"), _now_s()) * 1000)


def nvmlDeviceGetTemperature(handle: FakeGpu, sensor: int) -> int:
    gpu = _gpu(handle, "nvmlDeviceGetTemperature")
    return round(gpu.temperature_c + gpu.temperature_rise_c_per_s * _now_s())


def nvmlDeviceGetClockInfo(handle: FakeGpu, clock: int) -> int:
    return int(_gpu(handle, "nvmlDeviceGetClockInfo").sm_clock_mhz)


def _driver_lacks(function: str, driver: str) -> None:
    if _state["driver"] == driver:
        calls_by_function[function] += 1
        raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)


def nvmlDeviceGetCurrentClocksEventReasons(handle: FakeGpu) -> int:
    _driver_lacks("nvmlDeviceGetCurrentClocksEventReasons", "old")
    return _gpu(handle, "nvmlDeviceGetCurrentClocksEventReasons").throttle_mask


def nvmlDeviceGetCurrentClocksThrottleReasons(handle: FakeGpu) -> int:
    _driver_lacks("nvmlDeviceGetCurrentClocksThrottleReasons", "new")
    return _gpu(handle, "nvmlDeviceGetCurrentClocksThrottleReasons").throttle_mask


@dataclass
class _Value:
    """c_nvmlValue_t: one number seen through each member (only the one for its type is read)."""

    number: float

    def __getattr__(self, member: str) -> float:
        if member in ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal"):
            return self.number if member == "dVal" else int(self.number)
        raise AttributeError(member)


@dataclass
class _FieldValue:
    fieldId: int
    scopeId: int = 0
    timestamp: int = 0
    latencyUsec: int = 0
    valueType: int = NVML_VALUE_TYPE_UNSIGNED_INT
    nvmlReturn: int = NVML_SUCCESS
    value: _Value = field(default_factory=lambda: _Value(0))


def _field_value(gpu: FakeGpu, field_id: int, t_s: float) -> _FieldValue:
    if field_id == NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION:
        if not gpu.has_energy_counter:
            return _FieldValue(field_id, nvmlReturn=NVML_ERROR_NOT_SUPPORTED)
        if gpu.counter_fails_after_s is not None and t_s >= gpu.counter_fails_after_s:
            return _FieldValue(field_id, nvmlReturn=NVML_ERROR_UNKNOWN)
        return _FieldValue(
            field_id, valueType=NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, value=_Value(int(_energy_mj(gpu, t_s)))
        )
    if field_id == NVML_FI_DEV_POWER_AVERAGE and _state["driver"] != "old":
        return _FieldValue(field_id, value=_Value(int(_average_power_w(gpu, t_s) * 1000)))
    if field_id == NVML_FI_DEV_POWER_INSTANT and _state["driver"] != "old":
        return _FieldValue(field_id, value=_Value(int(_power_w(gpu, t_s) * 1000)))
    return _FieldValue(field_id, nvmlReturn=NVML_ERROR_NOT_SUPPORTED)


def nvmlDeviceGetFieldValues(handle: FakeGpu, fieldIds: list) -> list[_FieldValue]:  # noqa: N803
    gpu = _gpu(handle, "nvmlDeviceGetFieldValues")
    t_s = _now_s()
    answers = []
    for entry in fieldIds:
        field_id, scope = entry if isinstance(entry, tuple) else (entry, 0)
        answer = _field_value(gpu, field_id, t_s)
        answer.scopeId = scope
        answers.append(answer)
    return answers


def nvmlDeviceGetEnforcedPowerLimit(handle: FakeGpu) -> int:
    return int(_gpu(handle, "nvmlDeviceGetEnforcedPowerLimit").power_limit_w * 1000)


def nvmlDeviceGetPersistenceMode(handle: FakeGpu) -> int:
    return _gpu(handle, "nvmlDeviceGetPersistenceMode").persistence_mode


@dataclass
class _Process:
    pid: int
    usedGpuMemory: int = 0


def nvmlDeviceGetComputeRunningProcesses(handle: FakeGpu) -> list[_Process]:
    return [_Process(pid) for pid in _gpu(handle, "nvmlDeviceGetComputeRunningProcesses").other_pids]
