"""CPU package (and optionally DRAM) energy from the Linux powercap RAPL interface.

Each `intel-rapl:N` zone named `package-N` is one CPU socket; its `energy_uj` counter
wraps at `max_energy_range_uj`. The `psys` zone overlaps the packages and core/uncore
sub-zones are inside them, so they are never added up. On most kernels since
CVE-2020-8694 `energy_uj` is readable only by root, and containers often lack the
folder: the meter is then unavailable with that reason, never a zero.
"""

from __future__ import annotations

import re
from pathlib import Path

from pytest_llem.energy.devices import DeviceReadError, MeasuredDevice
from pytest_llem.errors import MeterUnavailable

POWERCAP_ROOT = Path("/sys/class/powercap")
_PACKAGE_ZONE = re.compile(r"^intel-rapl:(\d+)$")
_SUB_ZONE = re.compile(r"^intel-rapl:(\d+):(\d+)$")


def read_text(path: Path) -> str:
    """The one place powercap files are read (tests swap it to simulate a locked-down kernel)."""
    return path.read_text()


class RaplZone(MeasuredDevice):
    counter_source = "rapl"

    def __init__(self, path: Path, kind: str, label: str) -> None:
        self.path = path
        self.kind = kind  # type: ignore[assignment]
        self.label = label
        self.name = read_text(path / "name").strip()
        self.counter_range_j = int(read_text(path / "max_energy_range_uj")) / 1e6

    def __repr__(self) -> str:
        return f"RaplZone({self.label})"

    def read_energy_j(self) -> float:
        try:
            return int(read_text(self.path / "energy_uj")) / 1e6
        except (OSError, ValueError) as exc:
            raise DeviceReadError(f"cannot read energy_uj: {exc}") from None


def find_rapl_zones(root: Path | None = None, include_dram: bool = False) -> list[RaplZone]:
    """The package zones (and DRAM zones if asked) whose counters can be read."""
    root = root or POWERCAP_ROOT
    if not root.is_dir():
        raise MeterUnavailable(
            f"RAPL is not available: no powercap interface (not Linux, or a container without {root})"
        )
    zones: list[RaplZone] = []
    try:
        for path in sorted(root.iterdir()):
            package = _PACKAGE_ZONE.match(path.name)
            if package and read_text(path / "name").strip().startswith("package"):
                zones.append(RaplZone(path, "cpu", f"cpu-package-{package.group(1)}"))
                continue
            sub = _SUB_ZONE.match(path.name)
            if include_dram and sub and read_text(path / "name").strip() == "dram":
                zones.append(RaplZone(path, "dram", f"dram-{sub.group(1)}"))
        for zone in zones:
            int(read_text(zone.path / "energy_uj"))
    except PermissionError:
        raise MeterUnavailable(
            "RAPL counters are readable only by root on this kernel (since CVE-2020-8694); "
            "run as root or grant read access to energy_uj under the powercap folder"
        ) from None
    except (OSError, ValueError) as exc:
        raise MeterUnavailable(f"RAPL counters cannot be read: {exc}") from None
    if not zones:
        raise MeterUnavailable("RAPL is not available: the powercap interface has no CPU package zone")
    return zones
