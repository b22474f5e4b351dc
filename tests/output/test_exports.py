from __future__ import annotations

import csv
import io
import json

import pytest
from sample_reports import (
    EPYC,
    GPT2,
    NOT_MEASURED,
    OPT,
    SHORT_WINDOW,
    make_entry,
    make_report,
    make_result,
)

from pytest_llem.gating.compare import compare_reports
from pytest_llem.gating.limits import parse_limit
from pytest_llem.gating.metrics import METRICS
from pytest_llem.output.exports import benchmark_action_json, csv_text, markdown_summary, write_benchmark_json
from pytest_llem.store.report import SessionReport


@pytest.fixture
def report() -> SessionReport:
    return make_report(
        "run-1",
        [
            make_entry(GPT2, make_result([4.9, 4.95, 5.0, 5.05, 5.1])),
            make_entry(OPT, make_result([3.0], warnings=[SHORT_WINDOW])),
            make_entry("tests/test_bench.py::test_broken", None, error="workload raised"),
        ],
        name="nightly",
    )


def test_csv_has_one_row_per_experiment_with_config_n_and_every_metric_some_row_has(report):
    rows = list(csv.DictReader(io.StringIO(csv_text(report))))

    assert [r["nodeid"] for r in rows] == [GPT2, OPT, "tests/test_bench.py::test_broken"]
    assert list(rows[0])[:8] == "nodeid status config_hash batch_size precision backend model n".split()
    measured = [name for name, metric in METRICS.items() if metric.of_result(report.experiments[0].result)]
    # Every metric some row has a figure for, in the table's order; those no row has are left out.
    assert list(rows[0])[8:] == measured
    assert "ttft_p50_s" not in rows[0] and "requests_per_s" not in rows[0] and "backend" in rows[0]
    gpt2 = rows[0]
    assert (gpt2["status"], gpt2["config_hash"], gpt2["batch_size"], gpt2["precision"], gpt2["n"]) == (
        "passed",
        "c0ffee0123456789",
        "4",
        "fp16",
        "5",
    )
    # The rounds' median, as the results table shows and the gate compares: not the pooled sum.
    assert float(gpt2["energy_j"]) == pytest.approx(5.0) != report.experiments[0].result.energy_j
    assert float(gpt2["duration_s"]) == pytest.approx(2.0)
    assert float(gpt2["energy_per_token_j"]) == pytest.approx(0.5)
    assert float(gpt2["tokens_per_s"]) == pytest.approx(5.0)
    assert float(gpt2["batch_latency_p50_s"]) == pytest.approx(0.5)
    assert rows[1]["n"] == "1"


def test_csv_keeps_the_config_of_a_failed_experiment_and_leaves_its_metrics_empty(report):
    broken = list(csv.DictReader(io.StringIO(csv_text(report))))[2]

    assert broken["status"] == "failed" and broken["model"] == "tiny-gpt2"
    assert broken["config_hash"] == "badc0ffee0123456"
    assert broken["n"] == "" and all(broken[name] == "" for name in METRICS if name in broken)


def test_markdown_summary_has_a_heading_a_row_per_test_and_marks_flagged_rows(report):
    text = markdown_summary(report)
    lines = text.splitlines()

    assert lines[0] == "## pytest-llem: nightly (run-1)"
    assert "Machine: 1 x NVIDIA H100 (driver 550.54), id `h100x1`." in lines[2]
    assert "| test | n | duration_s | tokens/s | energy_j | J/token | status |" in lines
    assert "| --- | ---: | ---: | ---: | ---: | ---: | --- |" in lines
    # Five rounds: each figure is their median with the interquartile range, n says how many.
    row = (
        f"| `{GPT2}` | 5 | 2.00 [2.00, 2.00] | 5.00 [5.00, 5.00] | 5.00 [4.95, 5.05] "
        "| 0.500 [0.495, 0.505] | passed |"
    )
    assert row in lines
    assert f"| `{OPT}` | 1 | 2.00 | 5.00 | 3.00 | 0.300 | passed ⚠ short_window |" in lines
    assert "| `tests/test_bench.py::test_broken` | - | - | - | - | - | failed |" in lines
    assert any(line.startswith("- n > 1: each figure is the median [interquartile range]") for line in lines)


def test_markdown_notes_say_what_energy_covers_and_why_it_is_missing():
    unmeasured = make_result(
        [4.0], energy_j=None, energy_scope=[], energy_source=None, warnings=[NOT_MEASURED]
    )
    report = make_report(
        "run-2",
        [
            make_entry(GPT2, make_result([4.0])),
            make_entry(OPT, unmeasured),
            make_entry("tests/test_bench.py::test_flaky", make_result([2.0], warnings=[SHORT_WINDOW])),
        ],
    )
    lines = markdown_summary(report).splitlines()

    assert lines[0] == "## pytest-llem: run-2"
    assert "- energy_j covers: gpu (nvml-counter) in 2 experiment(s)" in lines
    assert "- no energy meter could read this host [1 experiment(s)]" in lines
    assert "- ⚠ = measurement-quality flags: short_window (1); see `warnings` in the report" in lines
    # A missing figure is not a doubtful one: the row says "-", not a flag.
    assert f"| `{OPT}` | 1 | 2.00 | 5.00 | - | - | passed |" in lines


def test_markdown_shows_the_gates_refusal_with_the_failure_lines(report):
    refusal = "pytest-llem: GATE FAILED: limits were set but there is no baseline to compare with"
    lines = markdown_summary(report, refusal=refusal).splitlines()
    assert lines[-3:] == ["```", refusal, "```"]
    assert "GATE FAILED" not in markdown_summary(report)


def test_markdown_escapes_a_pipe_in_a_test_id():
    nodeid = "tests/test_bench.py::test_prompt[a|b]"
    lines = markdown_summary(make_report("r", [make_entry(nodeid, make_result([4.0]))])).splitlines()

    assert "| `tests/test_bench.py::test_prompt[a\\|b]` | 1 | 2.00 | 5.00 | 4.00 | 0.400 | passed |" in lines


def test_markdown_with_a_comparison_shows_changes_regressions_and_the_machine_warning(report):
    baseline = make_report(
        "run-0", [make_entry(GPT2, make_result([3.9, 3.95, 4.0, 4.05, 4.1]))], name="main", machine=EPYC
    )
    # Another machine: gated only when asked to compare across machines.
    comparison = compare_reports(
        baseline, report, [parse_limit("energy_per_token_j:5%")], across_machines=True
    )
    lines = markdown_summary(report, comparison).splitlines()

    assert "### Compared with main" in lines
    assert "| test | metric | baseline | current | change | limit | p | status |" in lines
    assert (
        f"| `{GPT2}` | `energy_per_token_j` | 0.400 J | 0.500 J | +25.0% | 5% | 0.00397 | regression |"
        in lines
    )
    # No limit on tokens/s: the rank test decides nothing there, so no p is shown.
    assert f"| `{GPT2}` | `tokens_per_s` | 5.00 tokens/s | 5.00 tokens/s | +0.0% | - | - | ok |" in lines
    assert any(line.startswith("> ⚠ baseline main ran on another machine (AMD EPYC 7763") for line in lines)
    assert f"Only in this run: `{OPT}`" in lines
    regression = comparison.failures[0].line()
    assert lines[lines.index(regression) - 1] == "```" and lines[lines.index(regression) + 1] == "```"
    assert regression == (
        f"pytest-llem: REGRESSION {GPT2} energy_per_token_j 0.400 -> 0.500 J (+25.0%, limit 5%, p=0.00397)"
    )


def test_benchmark_entries_split_by_direction_with_range_and_round_count(report):
    smaller, bigger = benchmark_action_json(report)

    assert [p["name"] for p in smaller] == [
        f"{GPT2} energy_per_token_j",
        f"{GPT2} energy_j",
        f"{GPT2} batch_latency_p50_s",
        f"{OPT} energy_per_token_j",
        f"{OPT} energy_j",
        f"{OPT} batch_latency_p50_s",
    ]
    assert [p["name"] for p in bigger] == [f"{GPT2} tokens_per_s", f"{OPT} tokens_per_s"]
    per_token = smaller[0]
    assert per_token["unit"] == "J" and per_token["value"] == pytest.approx(0.5)
    # stdev of 0.490, 0.495, 0.500, 0.505, 0.510 J/token
    assert per_token["range"] == "± 0.00791" and per_token["extra"] == "rounds: 5"
    assert bigger[0]["unit"] == "tokens/s" and bigger[0]["value"] == pytest.approx(5.0)
    # One round: no spread to report.
    assert "range" not in smaller[3] and smaller[3]["extra"] == "rounds: 1"


def test_write_benchmark_json_writes_both_files_the_action_reads(report, tmp_path):
    paths = write_benchmark_json(report, tmp_path / "out" / "bench.json")

    assert paths == [tmp_path / "out" / "bench.json", tmp_path / "out" / "bench-bigger.json"]
    smaller, bigger = (json.loads(p.read_text(encoding="utf-8")) for p in paths)
    assert (smaller, bigger) == benchmark_action_json(report)
    for point in smaller + bigger:
        assert set(point) <= {"name", "unit", "value", "range", "extra"}
        assert isinstance(point["value"], float)
