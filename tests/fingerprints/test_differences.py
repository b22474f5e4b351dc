"""Fingerprint differences: hardware refuses a gate unless asked, software is shown and gated."""

from __future__ import annotations

from sample_reports import EPYC, GPT2, H100, make_entry, make_report, make_result

from pytest_llem.fingerprints.differences import fingerprint_differences
from pytest_llem.fingerprints.machine import GpuInfo
from pytest_llem.gating.gate import run_gate
from pytest_llem.gating.limits import parse_limit
from pytest_llem.output.terminal import format_comparison

LIMIT = [parse_limit("energy_per_token_j:5%")]


def machine(power_limit_w=700.0, name="NVIDIA H100", torch="2.5.0", count=1):
    gpus = [GpuInfo(name=name, power_limit_w=power_limit_w, uuid=f"GPU-{i}") for i in range(count)]
    return H100.model_copy(update={"gpus": gpus, "software": {"torch": torch, "vllm": None}})


def gate(before_machine, after_machine, across=False):
    baseline = make_report("base", [make_entry(GPT2, make_result([1.0]))], machine=before_machine)
    current = make_report("now", [make_entry(GPT2, make_result([1.5]))], machine=after_machine)
    return run_gate(current, baseline, LIMIT, across_machines=across)


def test_a_different_power_limit_or_gpu_model_refuses_to_gate_unless_asked():
    for after in (machine(power_limit_w=500.0), machine(name="NVIDIA A100"), machine(count=2)):
        refused = gate(machine(), after)
        assert refused.failed and not refused.failures
        assert refused.refusal.startswith(
            "pytest-llem: GATE FAILED: the baseline ran on different hardware ("
        )
        assert "--llem-compare-across-machines" in refused.refusal
    limit = gate(machine(), machine(power_limit_w=500.0))
    assert "GPU power limits (W) 700 -> 500" in limit.refusal
    across = gate(machine(), machine(power_limit_w=500.0), across=True)
    assert across.refusal is None and [c.status for c in across.failures] == ["regression"]


def test_a_library_upgrade_is_shown_at_the_top_and_gated():
    outcome = gate(machine(torch="2.5.0"), machine(torch="2.6.0"))
    assert outcome.refusal is None and [c.status for c in outcome.failures] == ["regression"]
    lines = format_comparison(outcome.comparison)
    assert lines[1] == "differs from the baseline: software and settings: torch 2.5.0 -> 2.6.0"


def test_cpu_only_runs_compare_cpu_models_as_hardware_and_unknown_parts_are_skipped():
    other_cpu = EPYC.model_copy(update={"cpu_model": "Intel Xeon"})
    assert fingerprint_differences(EPYC, other_cpu).hardware == ["CPU model AMD EPYC 7763 -> Intel Xeon"]
    old_report = H100.model_copy(update={"gpus": [GpuInfo(name="NVIDIA H100", power_limit_w=700.0)]})
    found = fingerprint_differences(old_report, machine())  # saved before UUIDs were recorded
    assert found.hardware == [] and found.other == []
    assert fingerprint_differences(None, machine()).lines() == []
