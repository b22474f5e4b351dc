"""Quality flags: what a window is flagged for, and how flags from several windows merge."""

from __future__ import annotations

from pathlib import Path

from pytest_llem.energy import quality
from pytest_llem.results import DeviceEnergy

# --- quality flags -----------------------------------------------------------------------------


def test_a_clean_long_window_has_no_flags():
    device = DeviceEnergy(
        device="gpu0",
        energy_j=600.0,
        duration_s=6.0,
        power_samples=60,
        temperature_start_c=50,
        temperature_end_c=53,
        throttle_reasons=["gpu_idle"],
    )
    assert quality.assess_window(6.0, [device]) == []


def test_the_energy_page_documents_every_flag():
    # Settings are documented by the generated reference (tests/docs/test_site.py checks it).
    page = (Path(__file__).parents[2] / "docs" / "guides" / "energy.md").read_text()
    flags = page[page.index("## Quality flags") :]
    codes = [v for k, v in vars(quality).items() if k.isupper() and isinstance(v, str)]
    assert len(codes) >= 9
    for code in codes:
        assert f"`{code}`" in flags, code


def test_a_flag_raised_by_several_windows_or_devices_is_listed_once():
    from pytest_llem.context import combine_windows
    from pytest_llem.results import WindowMeasurement

    def short(duration_s: float) -> WindowMeasurement:
        device = DeviceEnergy(device="gpu0", energy_j=100.0, duration_s=duration_s, power_samples=20)
        return WindowMeasurement(
            duration_s=duration_s, devices=[device], warnings=quality.assess_window(duration_s, [device])
        )

    combined = combine_windows([short(1.0), short(2.0), short(1.0)])
    assert [w.code for w in combined.warnings] == [quality.SHORT_WINDOW]
    assert "1.00 s" in combined.warnings[0].message and "2.00 s" in combined.warnings[0].message
    both = [
        DeviceEnergy(
            device=f"gpu{i}",
            energy_j=600.0,
            duration_s=6.0,
            power_samples=60,
            throttle_reasons=["sw_power_cap"],
        )
        for i in range(2)
    ]
    (throttled,) = quality.assess_window(6.0, both)
    assert throttled.code == quality.THROTTLED and "gpu0" in throttled.message and "gpu1" in throttled.message


def test_merged_flags_quote_a_few_sentences_then_count_the_rest():
    many = [quality.flag(quality.SHORT_WINDOW, f"window {i}") for i in range(5)]
    (merged,) = quality.merge_flags(many)
    assert merged.message == "window 0; window 1; window 2; and 2 more like these"
