"""NVIDIA GPUs through NVML (the `pynvml` module of nvidia-ml-py), as `MeasuredDevice`s.

NVML never initialises CUDA, so the pytest process may use it for the idle baseline. GPUs
are matched to the experiment by the UUIDs of its lease (`MeterOptions.gpu_uuids`; none
for a CPU-only case), else through `CUDA_VISIBLE_DEVICES`: the child is started
with `CUDA_DEVICE_ORDER=PCI_BUS_ID`, so CUDA's index *i* and NVML's index *i* are the same
GPU, and UUID entries are resolved to handles directly. MIG slices are refused: NVML
reports power and energy for the whole GPU only.

Each sampling pass reads the energy counter and power in one `nvmlDeviceGetFieldValues`
call (NVML calls serialise in the driver and cost about a millisecond each on a virtualised
GPU); where the driver lacks a field, the single-purpose call is used instead. Power is the
1 s average field where the GPU has one (what `nvmlDeviceGetPowerUsage` returns on Ampere and
newer, except GA100), else the instant field (what it returns on older GPUs).

A call that this driver lacks raises `FunctionNotFound` (the binding has every symbol; the
driver decides): the clock-limiting reasons fall back between the current name and the
deprecated one on that error, never on what the binding offers.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from pytest_llem.energy.devices import DeviceReadError, DeviceStatus, MeasuredDevice
from pytest_llem.errors import MeasurementRefused, MeterUnavailable

# nvmlClocksEventReason* bits (formerly ClocksThrottleReason*), named for reports.
THROTTLE_REASON_BITS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake",
    0x100: "display_clocks",
}
_FEATURE_DISABLED = 0
# The energy counter advances about every 100 ms on A100/H100 (every 10-100 ms on others):
# a window shorter than that reads 0 J or one update's worth.
NVML_COUNTER_UPDATE_S = 0.1
# NVML's field ids and error codes, as nvidia-ml-py names them (numbers in case a binding lacks one).
_FI_TOTAL_ENERGY = ("NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 83)  # mJ since the driver loaded
_FI_POWER_AVERAGE = ("NVML_FI_DEV_POWER_AVERAGE", 185)  # mW, 1 s average (Ampere+, not GA100)
_FI_POWER_INSTANT = ("NVML_FI_DEV_POWER_INSTANT", 186)  # mW
_ERROR_FUNCTION_NOT_FOUND = ("NVML_ERROR_FUNCTION_NOT_FOUND", 13)
_SUCCESS = ("NVML_SUCCESS", 0)
# c_nvmlValue_t's member for each NVML_VALUE_TYPE_*.
_VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")
# The clock-limiting reasons' call, newest name first (the other is deprecated, gone in CUDA 14).
REASON_FUNCTIONS = ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons")


class FunctionNotFound(Exception):
    """The driver (or binding) has no such NVML function."""


def _constant(nvml: ModuleType, named: tuple[str, int]) -> int:
    return int(getattr(nvml, named[0], named[1]))


def throttle_reason_names(mask: int) -> frozenset[str]:
    return frozenset(name for bit, name in THROTTLE_REASON_BITS.items() if mask & bit)


def _import_pynvml() -> ModuleType:
    import pynvml  # nvidia-ml-py, a core dependency; imported only when a GPU meter is used

    return pynvml


class NvmlSession:
    """One `nvmlInit` ... `nvmlShutdown` span, and the GPUs found in it."""

    def __init__(self, nvml: ModuleType) -> None:
        self.nvml = nvml

    @classmethod
    def open(cls, nvml: ModuleType | None = None) -> NvmlSession:
        nvml = nvml or _import_pynvml()
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise MeterUnavailable(f"NVML could not start: {exc} (no NVIDIA driver or GPU here?)") from None
        return cls(nvml)

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass  # shutting down a library that already lost its device changes nothing

    def driver_version(self) -> str | None:
        try:
            return str(self.nvml.nvmlSystemGetDriverVersion())
        except self.nvml.NVMLError:
            return None

    def cuda_driver_version(self) -> str | None:
        """The CUDA version the driver supports, as `12.4`."""
        try:
            version = int(self.nvml.nvmlSystemGetCudaDriverVersion())
        except (AttributeError, self.nvml.NVMLError, TypeError, ValueError):
            return None
        return f"{version // 1000}.{version % 1000 // 10}"

    def all_gpus(self) -> list[NvmlGpu]:
        count = self.nvml.nvmlDeviceGetCount()
        return [NvmlGpu(self.nvml, self.nvml.nvmlDeviceGetHandleByIndex(i), i) for i in range(count)]

    def visible_gpus(self, cuda_visible_devices: str | None) -> list[NvmlGpu]:
        """The GPUs a CUDA process with this `CUDA_VISIBLE_DEVICES` would see, in its order."""
        try:
            gpus = self.all_gpus()
            chosen = select_visible(gpus, cuda_visible_devices)
            for gpu in chosen:
                gpu.refuse_if_mig()
        except self.nvml.NVMLError as exc:
            raise MeterUnavailable(f"NVML could not list the GPUs: {exc}") from None
        if not chosen:
            raise MeterUnavailable(
                "no GPU is visible to the experiment"
                + (
                    f" (CUDA_VISIBLE_DEVICES={cuda_visible_devices!r})"
                    if cuda_visible_devices is not None
                    else ""
                )
            )
        return chosen

    def owned_gpus(self, uuids: list[str]) -> list[NvmlGpu]:
        """Exactly the GPUs leased to the experiment, in the lease's order; a leased GPU that
        NVML no longer lists is an error, never a smaller sum."""
        chosen = self.visible_gpus(",".join(uuids))
        missing = [u for u in uuids if u not in {gpu.uuid for gpu in chosen}]
        if missing:
            raise MeterUnavailable(f"NVML does not list the leased GPU(s) {', '.join(missing)}")
        return chosen


def select_visible(gpus: list[NvmlGpu], cuda_visible_devices: str | None) -> list[NvmlGpu]:
    """CUDA's rules: indices or (prefixes of) UUIDs; the list stops at the first unknown entry."""
    if cuda_visible_devices is None:
        return list(gpus)
    chosen: list[NvmlGpu] = []
    for entry in (e.strip() for e in cuda_visible_devices.split(",")):
        if entry.startswith("MIG-"):
            raise MeasurementRefused(
                f"CUDA_VISIBLE_DEVICES names a MIG slice ({entry}): NVML cannot attribute power or "
                "energy to a slice; measure a whole GPU, or choose energy='none'"
            )
        match: NvmlGpu | None = None
        if entry.isdigit():
            match = next((g for g in gpus if g.index == int(entry)), None)
        elif entry:
            candidates = [g for g in gpus if g.uuid is not None and g.uuid.startswith(entry)]
            match = candidates[0] if len(candidates) == 1 else None
        if match is None:
            break
        if match not in chosen:
            chosen.append(match)
    return chosen


class NvmlGpu(MeasuredDevice):
    kind = "gpu"
    counter_source = "nvml-counter"
    counter_update_s = NVML_COUNTER_UPDATE_S

    def __init__(self, nvml: ModuleType, handle: Any, index: int) -> None:
        self.nvml = nvml
        self.handle = handle
        self.index = index
        self.label = f"gpu{index}"
        self.uuid = str(nvml.nvmlDeviceGetUUID(handle))
        self.name = str(nvml.nvmlDeviceGetName(handle))
        self._has_counter = True
        self._reason_functions = list(REASON_FUNCTIONS)
        #: Field ids still asked for in the batched read; a field the GPU lacks is dropped.
        self._fields = [_constant(nvml, f) for f in (_FI_TOTAL_ENERGY, _FI_POWER_AVERAGE, _FI_POWER_INSTANT)]

    def __repr__(self) -> str:
        return f"NvmlGpu({self.label}, {self.uuid})"

    def _call(self, function: str, *args: Any) -> Any:
        """Call NVML; NotSupported becomes None, a lost GPU a `DeviceReadError(lost=True)`,
        a function this driver lacks `FunctionNotFound`."""
        nvml = self.nvml
        call = getattr(nvml, function, None)
        if call is None:
            raise FunctionNotFound(f"{function}: not in this NVML binding")
        try:
            return call(self.handle, *args)
        except nvml.NVMLError as exc:
            if exc.value == nvml.NVML_ERROR_NOT_SUPPORTED:
                return None
            if exc.value == _constant(nvml, _ERROR_FUNCTION_NOT_FOUND):
                raise FunctionNotFound(f"{function}: {exc}") from None
            raise DeviceReadError(f"{function}: {exc}", lost=self._is_lost(exc.value)) from None

    def _call_if_present(self, function: str, *args: Any) -> Any:
        """`_call`, with a function this driver lacks read as "not supported" (None)."""
        try:
            return self._call(function, *args)
        except FunctionNotFound:
            return None

    def _is_lost(self, code: int) -> bool:
        nvml = self.nvml
        return code in (nvml.NVML_ERROR_GPU_IS_LOST, getattr(nvml, "NVML_ERROR_RESET_REQUIRED", -1))

    def refuse_if_mig(self) -> None:
        try:
            mode = self._call_if_present("nvmlDeviceGetMigMode")
        except DeviceReadError:
            return
        if mode is not None and mode[0] == 1:
            raise MeasurementRefused(
                f"{self.label} ({self.name}) is in MIG mode: NVML cannot attribute power or energy to "
                "a MIG slice; measure a GPU without MIG, or choose energy='none'"
            )

    def read_energy_j(self) -> float | None:
        if not self._has_counter:
            return None
        millijoules = self._call_if_present("nvmlDeviceGetTotalEnergyConsumption")
        if millijoules is None:
            self._has_counter = False  # before Volta: power is integrated instead
            return None
        return millijoules / 1000.0

    def read_power_w(self) -> float | None:
        power_mw = self._call_if_present("nvmlDeviceGetPowerUsage")
        return power_mw / 1000.0 if power_mw is not None else None

    def read_energy_and_power(self) -> tuple[float | None, float | None]:
        """Counter and power in one call where the driver has the fields; each missing field
        falls back to its own call (which also words any error the field gave)."""
        values = self._read_fields()
        energy_id, average_id, instant_id = (
            _constant(self.nvml, f) for f in (_FI_TOTAL_ENERGY, _FI_POWER_AVERAGE, _FI_POWER_INSTANT)
        )
        if energy_id in values and self._has_counter:
            energy_j: float | None = values[energy_id] / 1000.0
        else:
            energy_j = self.read_energy_j()
        if average_id in values and instant_id in self._fields:
            self._fields.remove(instant_id)  # the average is what the power is read as
        power_mw = values.get(average_id, values.get(instant_id))
        power_w = power_mw / 1000.0 if power_mw is not None else self.read_power_w()
        return energy_j, power_w

    def _read_fields(self) -> dict[int, float]:
        """Field id -> value for the fields that answered; a field the GPU lacks is not asked again."""
        if not self._fields:
            return {}
        try:
            answers = self._call("nvmlDeviceGetFieldValues", list(self._fields))
        except FunctionNotFound:
            self._fields = []
            return {}
        if answers is None:  # not supported as a whole
            self._fields = []
            return {}
        values: dict[int, float] = {}
        not_supported = self.nvml.NVML_ERROR_NOT_SUPPORTED
        for answer in answers:
            code = int(answer.nvmlReturn)
            if code == _constant(self.nvml, _SUCCESS):
                values[int(answer.fieldId)] = float(
                    getattr(answer.value, _VALUE_MEMBERS[int(answer.valueType)])
                )
            elif code == not_supported or code == _constant(self.nvml, _ERROR_FUNCTION_NOT_FOUND):
                self._fields.remove(int(answer.fieldId))
            elif self._is_lost(code):
                raise DeviceReadError(f"nvmlDeviceGetFieldValues: {self.nvml.NVMLError(code)}", lost=True)
            # Any other error: that reading falls back to its own call, which words the error.
        return values

    def read_slow_status(self) -> DeviceStatus:
        temperature = self._call_if_present("nvmlDeviceGetTemperature", self.nvml.NVML_TEMPERATURE_GPU)
        clock = self._call_if_present("nvmlDeviceGetClockInfo", self.nvml.NVML_CLOCK_SM)
        mask = self._throttle_mask()
        return DeviceStatus(
            temperature_c=float(temperature) if temperature is not None else None,
            sm_clock_mhz=float(clock) if clock is not None else None,
            throttle_reasons=throttle_reason_names(mask) if mask is not None else frozenset(),
        )

    def _throttle_mask(self) -> int | None:
        """The clock-limiting reasons through whichever name this driver has (tried in turn)."""
        while self._reason_functions:
            try:
                return self._call(self._reason_functions[0])
            except FunctionNotFound:
                self._reason_functions.pop(0)
        return None

    def other_processes(self, process_group: int) -> set[int]:
        processes = self._call_if_present("nvmlDeviceGetComputeRunningProcesses") or []
        return {p.pid for p in processes if not _in_group(p.pid, process_group)}

    def persistence_mode_off(self) -> bool:
        return self._call_if_present("nvmlDeviceGetPersistenceMode") == _FEATURE_DISABLED

    def settings(self) -> dict[str, Any]:
        """What makes this GPU's figures comparable with another run's, as far as NVML says (None:
        not reported): power limit, application clocks, persistence, ECC and MIG modes."""
        nvml = self.nvml

        def read(function: str, *args: Any) -> Any:
            if not hasattr(nvml, function):  # an older pynvml
                return None
            try:
                return self._call(function, *args)
            except DeviceReadError:
                return None

        limit_mw = read("nvmlDeviceGetEnforcedPowerLimit")
        ecc = read("nvmlDeviceGetEccMode")
        mig = read("nvmlDeviceGetMigMode")
        persistence = read("nvmlDeviceGetPersistenceMode")
        return {
            "power_limit_w": None if limit_mw is None else limit_mw / 1000.0,
            "sm_clock_mhz": read("nvmlDeviceGetApplicationsClock", nvml.NVML_CLOCK_SM),
            "memory_clock_mhz": read("nvmlDeviceGetApplicationsClock", getattr(nvml, "NVML_CLOCK_MEM", 2)),
            "persistence_mode": None if persistence is None else persistence != _FEATURE_DISABLED,
            "ecc_mode": None if ecc is None else bool(ecc[0]),
            "mig_mode": None if mig is None else bool(mig[0]),
        }


def _in_group(pid: int, process_group: int) -> bool:
    try:
        return os.getpgid(pid) == process_group
    except (ProcessLookupError, PermissionError):
        return False  # not a process of ours: ours are all visible to us
