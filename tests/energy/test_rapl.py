"""CPU energy from RAPL, against a powercap folder built in tmp_path.

The folder mirrors a one-socket Linux machine: a package zone with its core and DRAM
sub-zones, and a psys zone that overlaps the package. Tests write the counters themselves,
so every figure has an exact right answer. One test, marked `rapl`, reads the real counters
where this machine lets it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pytest_llem.energy import quality, rapl
from pytest_llem.energy.devices import DeviceTally, take_reading
from pytest_llem.energy.factory import create_meter
from pytest_llem.energy.meter import MeterOptions, NoEnergyMeter, SampledMeter
from pytest_llem.errors import MeterUnavailable

ZONES = {
    "intel-rapl:0": "package-0",
    "intel-rapl:0:0": "core",
    "intel-rapl:0:1": "dram",
    "intel-rapl:1": "psys",
}
# A typical package range: the counter restarts from zero after ~262 kJ.
RANGE_UJ = 262_143_328_850
START_UJ = 1_000_000
# Long enough that the sampling thread never reads: only the window's edges count.
EDGES_ONLY = MeterOptions(sample_interval_s=60)


def set_counter(root: Path, zone: str, microjoules: int) -> None:
    # Replaced, not rewritten in place, so a sampling thread never reads a half-written file.
    scratch = root / zone / "energy_uj.new"
    scratch.write_text(f"{microjoules}\n")
    os.replace(scratch, root / zone / "energy_uj")


@pytest.fixture
def powercap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A readable powercap folder, also installed as the one `create_meter` reads."""
    root = tmp_path / "powercap"
    for zone, name in ZONES.items():
        (root / zone).mkdir(parents=True)
        (root / zone / "name").write_text(f"{name}\n")
        (root / zone / "max_energy_range_uj").write_text(f"{RANGE_UJ}\n")
        set_counter(root, zone, START_UJ)
    monkeypatch.setattr(rapl, "POWERCAP_ROOT", root)
    return root


@pytest.fixture
def locked_counters(monkeypatch: pytest.MonkeyPatch) -> None:
    """energy_uj readable only by root, as on kernels patched for CVE-2020-8694.

    The tests run as root, where file modes do not stop a read, so the read itself fails.
    """
    read_text = rapl.read_text

    def refuse_counters(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return read_text(path)

    monkeypatch.setattr(rapl, "read_text", refuse_counters)


@pytest.fixture
def no_gpu(fake_nvml) -> None:
    fake_nvml.configure([], driver_loaded=False)


# --- which zones ----------------------------------------------------------------------------------


def test_only_package_zones_are_measured_since_psys_and_core_overlap_them(powercap):
    zones = rapl.find_rapl_zones(root=powercap)
    assert [(z.label, z.kind, z.name) for z in zones] == [("cpu-package-0", "cpu", "package-0")]
    assert zones[0].counter_range_j == RANGE_UJ / 1e6
    assert zones[0].read_energy_j() == 1.0


def test_dram_is_measured_only_when_asked(powercap):
    zones = rapl.find_rapl_zones(root=powercap, include_dram=True)
    assert [(z.label, z.kind, z.name) for z in zones] == [
        ("cpu-package-0", "cpu", "package-0"),
        ("dram-0", "dram", "dram"),
    ]


def test_a_folder_without_a_package_zone_is_unavailable(powercap):
    for zone in ("intel-rapl:0", "intel-rapl:0:0", "intel-rapl:0:1"):
        (powercap / zone / "name").write_text("psys\n")
    with pytest.raises(MeterUnavailable, match="no CPU package zone"):
        rapl.find_rapl_zones(root=powercap, include_dram=True)


def test_a_missing_powercap_folder_is_unavailable(tmp_path):
    with pytest.raises(MeterUnavailable, match="no powercap interface"):
        rapl.find_rapl_zones(root=tmp_path / "absent")


# --- energy from the counters --------------------------------------------------------------------


def test_a_window_measures_the_exact_counter_difference(powercap):
    meter = SampledMeter(rapl.find_rapl_zones(root=powercap), MeterOptions(sample_interval_s=0.01))
    meter.begin_window("w")
    set_counter(powercap, "intel-rapl:0", 3_500_000)
    time.sleep(0.05)  # the sampling thread reads the middle value too
    set_counter(powercap, "intel-rapl:0", 6_000_000)
    window = meter.end_window("w")
    meter.close()
    (package,) = window.devices
    assert (package.device, package.kind, package.energy_source) == ("cpu-package-0", "cpu", "rapl")
    assert package.energy_j == 5.0
    assert window.totals.cpu_energy_j == 5.0 and window.totals.energy_scope == ["cpu"]
    assert window.notes == []


def test_dram_energy_is_kept_apart_from_the_package(powercap):
    meter = SampledMeter(rapl.find_rapl_zones(root=powercap, include_dram=True), EDGES_ONLY)
    meter.begin_window("w")
    set_counter(powercap, "intel-rapl:0", 9_000_000)
    set_counter(powercap, "intel-rapl:0:1", 3_000_000)
    window = meter.end_window("w")
    meter.close()
    assert [(d.device, d.energy_j) for d in window.devices] == [("cpu-package-0", 8.0), ("dram-0", 2.0)]
    totals = window.totals
    assert (totals.energy_j, totals.cpu_energy_j, totals.energy_scope) == (10.0, 8.0, ["cpu", "dram"])


def test_a_counter_that_wraps_between_the_edges_is_measured_across_the_wrap(powercap):
    set_counter(powercap, "intel-rapl:0", RANGE_UJ - 2_000_000)
    meter = SampledMeter(rapl.find_rapl_zones(root=powercap), EDGES_ONLY)
    meter.begin_window("w")
    set_counter(powercap, "intel-rapl:0", 1_000_000)
    window = meter.end_window("w")
    meter.close()
    assert window.devices[0].energy_j == pytest.approx(3.0, abs=1e-6)
    assert window.notes == []


def test_a_window_longer_than_one_wrap_is_measured_when_read_between_wraps(powercap):
    # Each read advances 0.6 of the range, so the counter wraps three times in all, but never
    # twice between two reads: that is what the sampling thread's frequent reads guarantee.
    (zone,) = rapl.find_rapl_zones(root=powercap)
    tally = DeviceTally(zone)
    step_uj = RANGE_UJ * 6 // 10
    for i in range(6):
        set_counter(powercap, "intel-rapl:0", (START_UJ + i * step_uj) % RANGE_UJ)
        tally.add(float(i), take_reading(zone))
    energy, notes = tally.result(5.0)
    assert energy.energy_j == pytest.approx(5 * step_uj / 1e6, abs=1e-6)
    assert energy.energy_source == "rapl" and notes == []


# --- unreadable counters: never a zero ------------------------------------------------------------


def test_root_only_counters_make_rapl_unavailable_and_say_why(powercap, locked_counters):
    with pytest.raises(MeterUnavailable, match="readable only by root") as info:
        rapl.find_rapl_zones(root=powercap)
    assert "CVE-2020-8694" in str(info.value)
    with pytest.raises(MeterUnavailable, match="CVE-2020-8694"):
        create_meter("rapl")


def test_counters_that_turn_unreadable_mid_window_give_no_energy_rather_than_zero(
    powercap, request: pytest.FixtureRequest
):
    meter = SampledMeter(rapl.find_rapl_zones(root=powercap), EDGES_ONLY)
    meter.begin_window("w")
    request.getfixturevalue("locked_counters")
    window = meter.end_window("w")
    meter.close()
    assert window.devices[0].energy_j is None and window.energy_j is None
    assert any("cpu-package-0: energy counter read failed" in n for n in window.notes)


# --- choosing the meter by name --------------------------------------------------------------------


def test_rapl_meter_reads_the_installed_powercap_folder(powercap):
    meter = create_meter("rapl", MeterOptions(rapl_dram=True))
    assert isinstance(meter, SampledMeter)
    assert [d.label for d in meter.devices] == ["cpu-package-0", "dram-0"]
    meter.close()


def test_rapl_meter_without_a_powercap_folder_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(rapl, "POWERCAP_ROOT", tmp_path / "absent")
    with pytest.raises(MeterUnavailable, match="RAPL is not available"):
        create_meter("rapl")


def test_auto_without_a_gpu_measures_the_cpu_and_notes_the_missing_gpu(powercap, no_gpu):
    meter = create_meter("auto")
    meter.begin_window("w")
    set_counter(powercap, "intel-rapl:0", 4_000_000)
    window = meter.end_window("w")
    meter.close()
    assert [(d.device, d.energy_j) for d in window.devices] == [("cpu-package-0", 3.0)]
    assert window.energy_j == 3.0
    assert window.notes == [
        "gpu: not measured (NVML could not start: Driver Not Loaded (no NVIDIA driver or GPU here?))"
    ]


def test_auto_with_root_only_rapl_and_no_gpu_measures_nothing_and_says_why(powercap, locked_counters, no_gpu):
    meter = create_meter("auto")
    assert isinstance(meter, NoEnergyMeter)
    meter.begin_window("w")
    window = meter.end_window("w")
    assert window.energy_j is None and window.devices == []
    (warning,) = window.warnings
    assert warning.code == quality.ENERGY_NOT_MEASURED
    assert "NVML could not start" in warning.message and "CVE-2020-8694" in warning.message
    assert [n.split(" (")[0] for n in window.notes] == ["gpu: not measured", "cpu: not measured"]


# --- the real counters --------------------------------------------------------------------------------


@pytest.mark.rapl
def test_real_rapl_counts_the_energy_of_a_busy_second():
    try:
        zones = rapl.find_rapl_zones()
    except MeterUnavailable as exc:
        pytest.skip(str(exc))
    meter = SampledMeter(zones, MeterOptions(sample_interval_s=0.1))
    meter.begin_window("busy")
    deadline = time.perf_counter() + 1.0
    spins = 0
    while time.perf_counter() < deadline:
        spins += 1
    window = meter.end_window("busy")
    meter.close()
    assert spins > 0
    assert [d.energy_source for d in window.devices] == ["rapl"] * len(zones)
    assert all(d.energy_j is not None and d.energy_j > 0 for d in window.devices), window.devices
