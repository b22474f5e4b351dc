"""Quality flags: what a window is flagged for, and how flags from several windows merge."""

from __future__ import annotations

from pathlib import Path

from pytest_llem.energy import quality
from pytest_llem.results import DeviceEnergy, ServerMetrics

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


def test_the_default_minimum_window_is_the_gpus_with_a_gpu_else_the_cpus():
    assert quality.default_min_window_s(measures_gpus=True) == quality.MIN_WINDOW_S
    assert quality.default_min_window_s(measures_gpus=False) == quality.MIN_CPU_WINDOW_S
    assert 0 < quality.MIN_CPU_WINDOW_S < quality.MIN_WINDOW_S


def test_a_cpu_only_window_is_short_under_the_cpus_minimum_a_gpu_window_under_the_gpus():
    between_s = (quality.MIN_CPU_WINDOW_S + quality.MIN_WINDOW_S) / 2
    cpu = DeviceEnergy(device="cpu0", kind="cpu", energy_j=50.0, duration_s=between_s)
    gpu = DeviceEnergy(device="gpu0", energy_j=600.0, duration_s=between_s, power_samples=60)
    assert quality.assess_window(between_s, [cpu]) == []
    (short,) = quality.assess_window(between_s, [cpu, gpu])
    assert short.code == quality.SHORT_WINDOW and f"under {quality.MIN_WINDOW_S:g} s" in short.message
    below_s = quality.MIN_CPU_WINDOW_S / 2
    (short,) = quality.assess_window(below_s, [cpu.model_copy(update={"duration_s": below_s})])
    assert short.code == quality.SHORT_WINDOW and f"under {quality.MIN_CPU_WINDOW_S:g} s" in short.message


def test_host_busy_names_the_share_others_took_and_the_limit():
    (busy,) = quality.assess_host_load([0.43], limit=0.1)
    assert busy.code == quality.HOST_BUSY
    assert busy.message.startswith(
        "other processes took 43% of the host's CPU time during the measured window"
    )
    assert "(limit 10%, --llem-host-busy-share)" in busy.message
    # At the limit, unknown, or below it: no flag.
    assert quality.assess_host_load([0.1, None, 0.02], limit=0.1) == []


def test_host_busy_says_which_rounds_were_measured_on_a_busy_host():
    (busy,) = quality.assess_host_load([0.05, 0.6, 0.3], limit=0.25)
    assert "during round 2 " in busy.message and "during round 3 " in busy.message
    assert "round 1 " not in busy.message


def _server(**figures) -> ServerMetrics:
    return ServerMetrics(exposed=True, judged_over="steady", judged_samples=10, **figures)


def test_a_server_is_saturated_when_requests_wait_in_most_of_the_steady_state_or_its_kv_cache_is_full():
    assert quality.SATURATED_SHARE == 0.5 and quality.KV_CACHE_FULL == 0.95
    assert quality.assess_server_metrics(_server(waiting_share=0.5, kv_cache_full_share=0.5)) == []
    (waiting,) = quality.assess_server_metrics(_server(waiting_share=0.6, kv_cache_full_share=0.1))
    assert waiting.code == quality.SERVER_SATURATED
    assert waiting.message.startswith(
        "the server was saturated: requests waited in its queue in 60% of the 10 scrapes of the steady "
        "state (limit 50%); "
    )
    (full,) = quality.assess_server_metrics(_server(waiting_share=None, kv_cache_full_share=0.7))
    assert "its KV cache was at least 95% full in 70% of the 10 scrapes of the steady state" in full.message
    both = quality.assess_server_metrics(_server(waiting_share=1.0, kv_cache_full_share=1.0))
    assert [w.code for w in both] == [quality.SERVER_SATURATED] and " and its KV cache" in both[0].message


def test_saturation_needs_enough_scrapes_and_says_which_span_it_was_judged_over():
    few = ServerMetrics(exposed=True, judged_over="steady", judged_samples=2, waiting_share=1.0)
    assert quality.assess_server_metrics(few) == []
    whole = ServerMetrics(exposed=True, judged_over="whole", judged_samples=3, waiting_share=1.0)
    (flag,) = quality.assess_server_metrics(whole)
    assert "of the 3 scrapes of the load" in flag.message


def test_any_preemption_during_the_load_flags_it_and_none_or_no_counter_does_not():
    (preempted,) = quality.assess_server_metrics(_server(preemptions=3.0))
    assert preempted.code == quality.SERVER_PREEMPTED and preempted.doubts_a_figure
    assert preempted.message.startswith("the server preempted requests 3 times during the load")
    assert quality.assess_server_metrics(_server(preemptions=0.0)) == []
    assert quality.assess_server_metrics(_server(preemptions=None)) == []
    assert quality.assess_server_metrics(ServerMetrics(exposed=False, note="server exposes no metrics")) == []
