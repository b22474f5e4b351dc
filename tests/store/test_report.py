from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pytest_llem.base.redaction import redact_text
from pytest_llem.context import ExperimentContext, combine_windows
from pytest_llem.energy.factory import create_meter
from pytest_llem.energy.meter import EnergyMeter, NoEnergyMeter
from pytest_llem.errors import MeterUnavailable
from pytest_llem.output.terminal import format_summary
from pytest_llem.results import DeviceEnergy, ExperimentResult, QualityWarning, WindowMeasurement
from pytest_llem.store.report import (
    ReportEntry,
    SessionReport,
    load_report,
    merge_reports,
    repair_run,
    take_in_workers,
    write_report,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def make_result(**overrides) -> ExperimentResult:
    fields = dict(
        experiment_id="e",
        config_hash="0" * 16,
        config={},
        duration_s=2.0,
        window_count=1,
        output_tokens=100,
        energy_j=50.0,
        started_at=T0,
        finished_at=T0,
    )
    return ExperimentResult(**(fields | overrides))


def make_report(
    run_id: str, worker: str, outcome: str, start_offset_s: int, finished: bool = True
) -> SessionReport:
    start = T0 + timedelta(seconds=start_offset_s)
    return SessionReport(
        run_id=run_id,
        started_at=start,
        finished_at=start + timedelta(seconds=10) if finished else None,
        outcome=outcome,
        plugin_version="0",
        experiments=[ReportEntry(nodeid=f"t::{worker}", worker_id=worker)],
    )


def test_rates_are_derived_and_survive_a_round_trip():
    result = make_result()
    assert (result.tokens_per_s, result.energy_per_token_j) == (50.0, 0.5)
    again = ExperimentResult.model_validate_json(result.model_dump_json())
    assert again == result and again.energy_per_token_j == 0.5


@pytest.mark.parametrize("overrides", [{"output_tokens": 0}, {"output_tokens": None}, {"energy_j": None}])
def test_no_rate_is_invented_from_missing_figures(overrides):
    result = make_result(**overrides)
    assert result.energy_per_token_j is None


def test_merge_reports_keeps_every_worker_entry_and_the_worst_outcome():
    merged = merge_reports(
        "merged",
        [
            make_report("a", "gw0", "passed", 0),
            make_report("b", "gw1", "interrupted", 5),
            make_report("c", "gw2", "failed", 2),
        ],
    )
    assert merged.run_id == "merged" and merged.outcome == "interrupted"
    assert [e.worker_id for e in merged.experiments] == ["gw0", "gw1", "gw2"]
    assert merged.started_at == T0 and merged.finished_at == T0 + timedelta(seconds=15)


def test_merge_reports_is_unfinished_while_any_worker_is():
    merged = merge_reports(
        "m", [make_report("a", "gw0", "passed", 0), make_report("b", "gw1", "running", 0, False)]
    )
    assert merged.finished_at is None and merged.outcome == "running"


def test_summary_has_one_aligned_row_per_entry_and_marks_flagged_rows():
    flagged = make_result(warnings=[QualityWarning(code="short_window", message="window under 5 s")])
    plain = make_result(warnings=[NoEnergyMeter.NOT_MEASURED], energy_j=None)
    lines = format_summary(
        [
            ReportEntry(nodeid="t::flagged", result=flagged),
            ReportEntry(nodeid="t::plain", result=plain),
            ReportEntry(nodeid="t::broken", failed=True, error="boom"),
            ReportEntry(nodeid="t::again", result=plain, resumed=True),
        ]
    )
    assert lines[0].split() == ["test", "n", "duration_s", "tokens/s", "energy_j", "J/token", "status"]
    assert lines[1].split() == ["t::flagged", "1", "2.00", "50.0", "50.0", "0.500", "passed", "!"]
    assert lines[2].split() == ["t::plain", "1", "2.00", "50.0", "-", "-", "passed"]
    assert lines[3].split() == ["t::broken", "-", "-", "-", "-", "-", "failed"]
    assert lines[4].split()[-1] == "resumed"
    # Aligned: the status column starts at the same place in the header and every row.
    words = ["status", "passed", "passed", "failed"]
    assert len({line.index(word) for line, word in zip(lines[:4], words, strict=True)}) == 1
    assert lines[5:] == [
        "no energy meter was selected (energy='none'); time and tokens only [2 experiment(s)]",
        "! = measurement-quality flags: short_window (1); see `warnings` in the report",
    ]


def test_summary_says_what_energy_j_covers():
    both = make_result(energy_scope=["gpu", "cpu"], energy_source="nvml-counter+rapl")
    gpu = make_result(energy_scope=["gpu"], energy_source="nvml-counter")
    lines = format_summary([ReportEntry(nodeid=f"t::{i}", result=r) for i, r in enumerate([both, gpu, gpu])])
    assert lines[4:] == [
        "energy_j covers: gpu (nvml-counter) in 2 experiment(s)",
        "energy_j covers: gpu + cpu (nvml-counter+rapl) in 1 experiment(s)",
    ]


def test_redaction_scrubs_secret_values_root_and_home():
    home = str(Path.home())
    text = f"token hf_abcdef123 in /proj/tests/x.py and {home}/models/m"
    out = redact_text(text, root=Path("/proj"), environ={"HF_TOKEN": "hf_abcdef123", "PATH": "/bin"})
    assert out == "token *** in ./tests/x.py and ~/models/m"


def test_paths_are_replaced_only_as_whole_prefixes():
    out = redact_text("/proj/a /project/b /proj", root=Path("/proj"), environ={})
    assert out == "./a /project/b ."
    assert redact_text("/usr/lib", root=Path("/"), environ={}) == "/usr/lib"


def test_short_secret_values_are_not_scrubbed_from_ordinary_text():
    assert redact_text("a b c", environ={"API_KEY": "a"}) == "a b c"


class FakeEnergyMeter(EnergyMeter):
    """A meter that reports a fixed power on two devices, to check the window arithmetic."""

    def _begin_readings(self, name: str) -> None:
        return None

    def _end_readings(self, name: str, duration_s: float) -> WindowMeasurement:
        devices = [DeviceEnergy(device="gpu0", energy_j=2.0), DeviceEnergy(device="gpu1", energy_j=3.0)]
        return WindowMeasurement(duration_s=duration_s, devices=devices)


def test_windows_sum_energy_per_device():
    ctx = ExperimentContext(config=None, meter=FakeEnergyMeter())  # type: ignore[arg-type]
    for _ in range(3):
        with ctx.window():
            pass
    total = combine_windows(ctx.windows)
    assert total.energy_j == 15.0
    assert {d.device: d.energy_j for d in total.devices} == {"gpu0": 6.0, "gpu1": 9.0}


def test_energy_is_missing_if_any_window_lacks_it():
    windows = [
        WindowMeasurement(duration_s=1, devices=[DeviceEnergy(device="gpu0", energy_j=3.0)]),
        WindowMeasurement(duration_s=1, devices=[DeviceEnergy(device="gpu0", energy_j=None)]),
    ]
    assert combine_windows(windows).energy_j is None
    assert combine_windows(windows).duration_s == 2


def test_windows_cannot_nest_and_first_window_is_announced_once():
    opened = []
    ctx = ExperimentContext(config=None, meter=NoEnergyMeter(), on_first_window=lambda: opened.append(1))  # type: ignore[arg-type]
    with ctx.window():
        with pytest.raises(RuntimeError, match="cannot be nested"):
            with ctx.window():
                pass
    with ctx.window():
        pass
    assert opened == [1] and len(ctx.windows) == 2


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_record_rejects_token_counts_that_are_not_whole_numbers(bad):
    ctx = ExperimentContext(config=None, meter=NoEnergyMeter())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="whole number of tokens"):
        ctx.record(output_tokens=bad)


def test_meter_windows_are_named_and_checked():
    meter = NoEnergyMeter()
    meter.begin_window("a")
    with pytest.raises(ValueError, match="already open"):
        meter.begin_window("a")
    with pytest.raises(ValueError, match="never opened"):
        meter.end_window("b")
    measurement = meter.end_window("a")
    assert measurement.energy_j is None and measurement.warnings == [NoEnergyMeter.NOT_MEASURED]


def test_unknown_meter_names_the_available_ones():
    with pytest.raises(MeterUnavailable, match=r"unknown energy meter 'nvlm' \(available: auto, nvml, rapl"):
        create_meter("nvlm")


def _with_entries(report: SessionReport, worker: str, n: int) -> SessionReport:
    report.experiments = [ReportEntry(nodeid=f"t::{worker}{i}", worker_id=worker) for i in range(n)]
    return report


def _checkpoint(state_dir, run_id: str, worker: str, n: int) -> None:
    report = _with_entries(make_report(run_id, worker, "running", 0, finished=False), worker, n)
    write_report(report, state_dir, name=f"report-{worker}.json")


def test_a_run_whose_controller_died_gets_its_report_from_the_workers_checkpoints(tmp_path):
    state_dir = tmp_path / "state"
    _checkpoint(state_dir, "run1", "gw0", 2)
    _checkpoint(state_dir, "run1", "gw1", 1)
    run_dir = state_dir / "runs" / "run1"
    repaired = repair_run(run_dir)
    assert repaired is not None and repaired.run_id == "run1"
    on_disk = load_report(run_dir / "report.json")
    assert [e.worker_id for e in on_disk.experiments] == ["gw0", "gw0", "gw1"]
    assert repair_run(run_dir) is None  # nothing more to take in


def test_a_half_merged_report_is_completed_and_a_finished_one_left_alone(tmp_path):
    state_dir = tmp_path / "state"
    _checkpoint(state_dir, "run2", "gw0", 2)
    controller = _with_entries(make_report("run2", "main", "running", 0, finished=False), "main", 0)
    write_report(controller, state_dir)
    run_dir = state_dir / "runs" / "run2"
    assert len(repair_run(run_dir).experiments) == 2
    finished = _with_entries(make_report("run2", "main", "interrupted", 0), "main", 0)
    write_report(finished, state_dir)
    assert repair_run(run_dir) is None
    assert load_report(run_dir / "report.json").experiments == []


def test_taking_in_a_worker_twice_never_duplicates_its_entries():
    controller = _with_entries(make_report("c", "main", "running", 0, finished=False), "main", 1)
    workers = {"gw0": _with_entries(make_report("w", "gw0", "running", 0, finished=False), "gw0", 2)}
    take_in_workers(controller, workers)
    take_in_workers(controller, workers)
    assert [e.worker_id for e in controller.experiments] == ["main", "gw0", "gw0"]
