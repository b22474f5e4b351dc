"""Choosing a meter by name, and opening the devices a sampled meter reads.

Separate from `meter` so that the Zeus and CodeCarbon adapters (which implement the meter
interface) and the sampled meter never import each other. Runs in the experiment's child,
and in the pytest process for the idle baseline (NVML and powercap only, never CUDA).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from pytest_llem.energy import METER_NAMES
from pytest_llem.energy.devices import MeasuredDevice
from pytest_llem.energy.meter import EnergyMeter, MeterOptions, NoEnergyMeter, SampledMeter
from pytest_llem.errors import MeasurementRefused, MeterUnavailable


def open_devices(
    name: str, options: MeterOptions, environ: Mapping[str, str] | None = None
) -> tuple[list[MeasuredDevice], list[str], list[Callable[[], None]]]:
    """The devices meter `name` reads, notes on parts it cannot read, and closers to call.

    GPUs: those the experiment owns (`options.gpu_uuids`, its lease; none for a CPU-only
    case), else those `CUDA_VISIBLE_DEVICES` in `environ` names.

    `nvml` and `rapl` raise `MeterUnavailable` when they cannot measure at all; `auto`
    takes whichever parts are readable and notes why the others are missing.
    """
    from pytest_llem.energy import nvml, rapl  # each imports its library only when used

    environ = os.environ if environ is None else environ
    devices: list[MeasuredDevice] = []
    notes: list[str] = []
    closers: list[Callable[[], None]] = []
    if name in ("nvml", "auto") and options.gpu_uuids == []:
        # Not all GPUs, and not 0 J: a case that owns no GPU has no GPU energy to measure.
        notes.append(f"gpu: not measured (the case owns no GPU: {options.no_gpu_reason or 'none leased'})")
    elif name in ("nvml", "auto"):
        try:
            session = nvml.NvmlSession.open()
        except MeterUnavailable as exc:
            if name == "nvml":
                raise
            notes.append(f"gpu: not measured ({exc})")
        else:
            try:
                gpus = (
                    session.visible_gpus(environ.get("CUDA_VISIBLE_DEVICES"))
                    if options.gpu_uuids is None
                    else session.owned_gpus(options.gpu_uuids)
                )
            except MeterUnavailable as exc:
                session.close()
                if name == "nvml" or isinstance(exc, MeasurementRefused):
                    raise
                notes.append(f"gpu: not measured ({exc})")
            else:
                devices.extend(gpus)
                closers.append(session.close)
    if name in ("rapl", "auto"):
        try:
            devices.extend(rapl.find_rapl_zones(include_dram=options.rapl_dram))
        except MeterUnavailable as exc:
            if name == "rapl":
                raise
            notes.append(f"cpu: not measured ({exc})")
    return devices, notes, closers


def create_meter(name: str, options: MeterOptions | None = None) -> EnergyMeter:
    """The meter called `name`, ready for windows; raises `MeterUnavailable` with the reason."""
    options = options or MeterOptions()
    if name == "none":
        return NoEnergyMeter()
    if name in ("zeus", "codecarbon"):
        from pytest_llem.energy import adapters

        return adapters.create_adapter(name, options)
    if name not in METER_NAMES:
        raise MeterUnavailable(f"unknown energy meter {name!r} (available: {', '.join(METER_NAMES)})")
    devices, notes, closers = open_devices(name, options)
    if not devices:
        return NoEnergyMeter(reasons=notes)
    return SampledMeter(devices, options, notes=notes, on_close=closers)
