from __future__ import annotations

import csv
import html
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sample_reports import CONFIG, EPYC, GPT2, OPT, SHORT_WINDOW, make_entry, make_report, make_result

from pytest_llem.fingerprints.source import SourceInfo
from pytest_llem.formatting import figure_or_missing
from pytest_llem.gating.metrics import METRICS
from pytest_llem.gating.stats import gated_figure
from pytest_llem.output.summary import SummaryView
from pytest_llem.output.terminal import format_summary
from pytest_llem.store.history import RunHistory
from pytest_llem.store.report import SessionReport, write_report
from pytest_llem.store.state import StateManager

BASELINE_ROUNDS_J = [4.9, 4.95, 5.0, 5.05, 5.1]
REGRESSED_ROUNDS_J = [5.9, 5.95, 6.0, 6.05, 6.1]
NOISY_ROUNDS_J = [4.92, 4.98, 5.01, 5.06, 5.12]


def llem(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, in its own process."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_LLEM_STATE_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "pytest_llem.cli", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def save(
    state_dir: Path,
    run_id: str,
    rounds_j: list[float],
    project: str | None = None,
    source: SourceInfo | None = None,
    **report_fields,
) -> SessionReport:
    report = make_report(run_id, [make_entry(GPT2, make_result(rounds_j))], **report_fields)
    report.project = project
    report.source = source
    write_report(report, state_dir)
    return report


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_list_shows_runs_oldest_first_with_their_project_and_machine(state_dir):
    save(state_dir, "run-b", BASELINE_ROUNDS_J, name="second", days_after_t0=1)
    save(state_dir, "run-a", BASELINE_ROUNDS_J, days_after_t0=0)
    save(state_dir, "run-c", BASELINE_ROUNDS_J, machine=EPYC, days_after_t0=2)
    save(
        state_dir,
        "run-d",
        BASELINE_ROUNDS_J,
        days_after_t0=3,
        project="acme/bench",
        source=SourceInfo(commit="c0ffee12" * 5, branch="main", dirty=True),
    )

    listed = llem(state_dir, "list")

    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["run", "project", "commit", "started", "outcome", "experiments", "machine"]
    assert [row.split()[0] for row in rows] == ["run-a", "second", "run-c", "run-d"]
    # Runs saved before runs recorded their project show as legacy, without a commit: as "-".
    assert rows[0].split()[1:8] == ["(legacy)", "-", "2026-01-01", "00:00:00", "UTC", "passed", "1"]
    assert rows[3].split()[1:3] == ["acme/bench", "c0ffee12c0+"]
    assert rows[0].endswith("h100x1 1 x NVIDIA H100 (driver 550.54)")
    assert rows[2].endswith("epyc AMD EPYC 7763")


def test_list_filters_by_machine_and_says_when_there_is_nothing(state_dir):
    save(state_dir, "run-a", BASELINE_ROUNDS_J)
    save(state_dir, "run-c", BASELINE_ROUNDS_J, machine=EPYC, days_after_t0=1)

    only_epyc = llem(state_dir, "list", "--machine", "epyc").stdout.splitlines()
    nothing = llem(state_dir, "list", "--machine", "nope")

    assert [row.split()[0] for row in only_epyc[1:]] == ["run-c"]
    assert nothing.returncode == 0 and nothing.stdout.startswith("no saved runs in ")


def test_list_filters_by_project_and_names_the_projects_when_none_matches(state_dir):
    save(state_dir, "run-a", BASELINE_ROUNDS_J, project="alpha-1234abcd")
    save(state_dir, "run-b", BASELINE_ROUNDS_J, days_after_t0=1, project="beta-5678abcd")
    save(state_dir, "run-old", BASELINE_ROUNDS_J, days_after_t0=2)

    only_beta = llem(state_dir, "list", "--project", "beta-5678abcd")
    nothing = llem(state_dir, "list", "--project", "gamma")

    assert only_beta.returncode == 0, only_beta.stderr
    assert [row.split()[:2] for row in only_beta.stdout.splitlines()[1:]] == [["run-b", "beta-5678abcd"]]
    assert nothing.returncode == 0
    assert nothing.stdout == (
        f"no saved runs in {state_dir} of project 'gamma' "
        "(projects with runs: alpha-1234abcd, beta-5678abcd)\n"
    )


def test_state_dir_comes_from_the_environment_when_not_given(state_dir):
    save(state_dir, "run-a", BASELINE_ROUNDS_J, name="from-env")

    listed = subprocess.run(
        [sys.executable, "-m", "pytest_llem.cli", "list"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTEST_LLEM_STATE_DIR=str(state_dir)),
        timeout=60,
    )

    assert listed.returncode == 0 and listed.stdout.splitlines()[1].startswith("from-env ")


def test_state_dir_may_come_before_the_command(state_dir):
    save(state_dir, "run-a", BASELINE_ROUNDS_J, name="first")

    listed = subprocess.run(
        [sys.executable, "-m", "pytest_llem.cli", "--state-dir", str(state_dir), "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert listed.returncode == 0 and listed.stdout.splitlines()[1].startswith("first ")


def test_show_prints_the_summary_table_by_name_and_by_report_path(state_dir):
    save(state_dir, "run-a", BASELINE_ROUNDS_J, name="nightly")
    by_path = str(state_dir / "runs" / "run-a" / "report.json")

    for ref in ("nightly", "run-a", by_path):
        shown = llem(state_dir, "show", ref)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0] == (
            "nightly: passed, started 2026-01-01 00:00:00 UTC, "
            "machine h100x1: 1 x NVIDIA H100 (driver 550.54)"
        )
        assert lines[1].split() == ["test", "n", "duration_s", "tokens/s", "energy_j", "J/token", "status"]
        # Five rounds: each figure is the rounds' median [interquartile range].
        assert lines[2].split("  ") == [
            GPT2,
            "5",
            "2.00 [2.00, 2.00]",
            "5.00 [5.00, 5.00]",
            "5.00 [4.95, 5.05]",
            "0.500 [0.495, 0.505]",
            "passed",
        ]


def save_two_models(state_dir: Path) -> None:
    """GPT2 cheaper per token than OPT, saved in the order GPT2, OPT."""
    opt = make_result([9.0, 9.5, 10.0], config={**CONFIG, "model": "/tmp/tmpab12/tiny-opt"})
    report = make_report("run-a", [make_entry(GPT2, make_result(BASELINE_ROUNDS_J)), make_entry(OPT, opt)])
    write_report(report, state_dir)


def test_show_takes_the_sessions_columns_sort_and_groups(state_dir):
    save_two_models(state_dir)

    shown = llem(
        state_dir, "show", "run-a", "--columns", "test,model,energy_per_token_j", "--sort=-energy_per_token_j"
    )
    grouped = llem(state_dir, "show", "run-a", "--columns", "test", "--group-by", "model")

    assert shown.returncode == 0, shown.stderr
    header, first, second = shown.stdout.splitlines()[1:4]
    assert header.split() == ["test", "model", "J/token"]
    # Descending: OPT (about 0.95 J/token) before GPT2 (0.5); a model directory by its name only.
    assert first.split()[:2] == [OPT, "tiny-opt"] and second.split()[:2] == [GPT2, "tiny-gpt2"]
    assert grouped.returncode == 0, grouped.stderr
    assert grouped.stdout.splitlines()[1:7] == [
        "model: tiny-gpt2:",
        "test",
        GPT2,
        "model: tiny-opt:",
        "test",
        OPT,
    ]


def test_export_markdown_html_and_csv_follow_the_chosen_view(state_dir):
    save_two_models(state_dir)
    view = ("--columns", "test,energy_per_token_j", "--sort=-energy_per_token_j")

    markdown = llem(state_dir, "export", "run-a", "--format", "markdown", *view)
    rows = llem(state_dir, "export", "run-a", "--format", "csv", *view)

    assert markdown.returncode == 0, markdown.stderr
    table = [line for line in markdown.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert table[0] == "| test | J/token |"
    assert [line.split(" | ")[0] for line in table[1:]] == [f"| `{OPT}`", f"| `{GPT2}`"]
    assert [row["nodeid"] for row in csv.DictReader(io.StringIO(rows.stdout))] == [OPT, GPT2]
    if importlib.util.find_spec("matplotlib") is not None:
        html = llem(state_dir, "export", "run-a", "--format", "html", *view).stdout
        table_html = html[html.index('<table id="results">') :]
        table_html = table_html[: table_html.index("</table>")]
        assert "J/token</th>" in table_html and "tokens/s</th>" not in table_html
        assert table_html.index(OPT) < table_html.index(GPT2)


def cells_of(row: str, separator: str) -> list[str]:
    return [cell.strip().strip("`") for cell in re.split(separator, row.strip().strip("|")) if cell.strip()]


def html_results(page: str) -> list[list[str]]:
    table = page[
        page.index('<table id="results">') : page.index("</table>", page.index('<table id="results">'))
    ]
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
    return [
        [html.unescape(re.sub(r"<[^>]+>", "", cell)) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        for row in rows
    ]


def test_every_output_prints_the_same_figure_for_the_same_case_and_metric(state_dir):
    # Five rounds of 0.26 s, 257 tokens each: the table's figure is the rounds' median, which
    # the gate compares; the pooled windows (1.3 s in all) must not show up anywhere.
    rounds = make_result([4.9, 4.95, 5.1, 5.0, 5.05], tokens_per_round=257, round_s=0.26)
    rounds.rounds[1].duration_s = 0.27  # one slower round: the median and the pooled rate part
    rounds.duration_s = sum(r.duration_s for r in rounds.rounds)
    report = make_report("run-a", [make_entry(GPT2, rounds), make_entry(OPT, make_result([3.0]))])
    write_report(report, state_dir)
    metrics = ("duration_s", "tokens_per_s", "energy_j", "energy_per_token_j")
    view = ("--columns", ",".join(("test", *metrics)))

    shown = llem(state_dir, "show", "run-a", *view)
    exported = {
        form: llem(state_dir, "export", "run-a", "--format", form, *view) for form in ("csv", "markdown")
    }
    terminal = format_summary(report.experiments, SummaryView(("test", *metrics)))

    assert shown.returncode == 0 and all(e.returncode == 0 for e in exported.values()), shown.stderr
    expected = {m: figure_or_missing(gated_figure(rounds, METRICS[m])) for m in metrics}
    assert expected["duration_s"] == "0.260" != figure_or_missing(rounds.duration_s)
    assert expected["tokens_per_s"] == "988" != figure_or_missing(rounds.tokens_per_s)  # pooled: 981
    row_of = {
        "show": next(
            cells_of(line, r"\s{2,}") for line in shown.stdout.splitlines() if line.startswith(GPT2)
        ),
        "terminal": next(cells_of(line, r"\s{2,}") for line in terminal if line.startswith(GPT2)),
        "markdown": next(
            cells_of(line, r" \| ") for line in exported["markdown"].stdout.splitlines() if GPT2 in line
        ),
    }
    if importlib.util.find_spec("matplotlib") is not None:
        page = llem(state_dir, "export", "run-a", "--format", "html", *view).stdout
        row_of["html"] = next(row for row in html_results(page) if row[:1] == [GPT2])
    for output, row in row_of.items():
        # A cell is the figure, then its [interquartile range] and the energy's ± uncertainty.
        shown_figures = {
            m: cell.split(" [")[0].split(" ±")[0] for m, cell in zip(metrics, row[1:], strict=False)
        }
        assert shown_figures == expected, output
    (gpt2,) = [r for r in csv.DictReader(io.StringIO(exported["csv"].stdout)) if r["nodeid"] == GPT2]
    # CSV keeps full precision, of the same figure.
    assert {m: figure_or_missing(float(gpt2[m])) for m in metrics} == expected
    assert float(gpt2["duration_s"]) == gated_figure(rounds, METRICS["duration_s"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "run-a", "--columns", "test,joules"), "pytest-llem: --columns: unknown column 'joules'"),
        (("export", "run-a", "--sort", "speed"), "pytest-llem: --sort: cannot sort by 'speed'"),
        (("show", "run-a", "--group-by", "colour"), "pytest-llem: --group-by: cannot group by 'colour'"),
        (
            ("export", "run-a", "--format", "html", "--power-chart", " "),
            "pytest-llem: --power-chart: give a test id",
        ),
    ],
)
def test_a_bad_view_choice_is_one_line_naming_the_flag(state_dir, args, message):
    save(state_dir, "run-a", BASELINE_ROUNDS_J)

    failed = llem(state_dir, *args)

    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.startswith(message) and len(failed.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [("show", "main"), ("compare", "main", "run-b"), ("export", "main", "--format", "csv")],
    ids=["show", "compare", "export"],
)
def test_unreadable_runs_are_named_one_line_each_and_the_rest_still_works(state_dir, args):
    save(state_dir, "run-a", BASELINE_ROUNDS_J, name="main")
    save(state_dir, "run-b", NOISY_ROUNDS_J, days_after_t0=1)
    truncated = state_dir / "runs" / "run-c" / "report.json"
    truncated.parent.mkdir()
    truncated.write_text('{"run_id": ')
    naive = state_dir / "runs" / "run-d" / "report.json"
    naive.parent.mkdir()
    naive.write_text("[]")
    os.mkfifo(state_dir / "runs" / "run-e")  # a FIFO where a run folder belongs is never opened

    done = llem(state_dir, *args)

    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"pytest-llem: skipped runs/{run}/report.json in the state dir: not a report: the document: {why}"
        for run, why in (
            ("run-c", "Invalid JSON: EOF while parsing a value at line 1 column 11"),
            ("run-d", "Input should be an object"),
        )
    ]
    assert GPT2 in done.stdout


def test_compare_exits_1_with_the_exact_regression_line(state_dir):
    save(state_dir, "run-a", BASELINE_ROUNDS_J, name="main")
    save(state_dir, "run-b", REGRESSED_ROUNDS_J, days_after_t0=1)

    compared = llem(state_dir, "compare", "main", "run-b", "--fail", "energy_per_token_j:5%")

    assert compared.returncode == 1, compared.stderr
    lines = compared.stdout.splitlines()
    assert lines[:2] == ["run run-b", "compared with main:"]
    assert lines[2].split() == ["test", "metric", "baseline", "current", "change", "limit", "p", "status"]
    assert lines[3].split() == [
        GPT2,
        "energy_per_token_j",
        "0.500",
        "J",
        "0.600",
        "J",
        "+20.0%",
        "5%",
        "0.00397",
        "regression",
    ]
    assert lines[4].split() == [
        GPT2,
        "tokens_per_s",
        "5.00",
        "tokens/s",
        "5.00",
        "tokens/s",
        "+0.0%",
        "-",
        "-",
        "ok",
    ]
    assert lines[-2:] == [
        f"pytest-llem: REGRESSION {GPT2} energy_per_token_j 0.500 -> 0.600 J (+20.0%, limit 5%, p=0.00397)",
        "pytest-llem: gate failed: 1 regression (each named above)",
    ]
    assert compared.stderr == ""


def test_compare_exits_0_on_noise_within_the_limit(state_dir):
    save(state_dir, "run-a", BASELINE_ROUNDS_J)
    save(state_dir, "run-b", NOISY_ROUNDS_J, days_after_t0=1)

    compared = llem(state_dir, "compare", "run-a", "run-b", "--fail", "energy_per_token_j:5%")

    assert compared.returncode == 0, compared.stdout
    assert "REGRESSION" not in compared.stdout
    row = next(line for line in compared.stdout.splitlines() if "energy_per_token_j" in line)
    # Within the limit: the rank test decides nothing, so its p is not shown.
    assert row.split()[-4:] == ["+0.2%", "5%", "-", "ok"]


def test_compare_warns_across_machines_instead_of_failing(state_dir):
    save(state_dir, "run-a", BASELINE_ROUNDS_J)
    save(state_dir, "run-b", NOISY_ROUNDS_J, machine=EPYC, days_after_t0=1)

    compared = llem(state_dir, "compare", "run-a", "run-b")

    assert compared.returncode == 0, compared.stderr
    warning = compared.stdout.splitlines()[2]
    assert warning.startswith("warning: baseline run-a ran on another machine")
    assert "id h100x1" in warning and "id epyc" in warning


def test_compare_gates_flagged_results_only_when_asked(state_dir):
    save(state_dir, "run-a", BASELINE_ROUNDS_J)
    flagged = make_report(
        "run-b", [make_entry(GPT2, make_result(REGRESSED_ROUNDS_J, warnings=[SHORT_WINDOW]))], days_after_t0=1
    )
    write_report(flagged, state_dir)
    limit = ("--fail", "energy_per_token_j:5%")

    shown = llem(state_dir, "compare", "run-a", "run-b", *limit)
    gated = llem(state_dir, "compare", "run-a", "run-b", *limit, "--gate-flagged")

    assert shown.returncode == 0 and "REGRESSION" not in shown.stdout
    assert "flagged (beyond the limit, but a measurement-quality flag is set: not gated)" in shown.stdout
    assert gated.returncode == 1 and gated.stdout.splitlines()[-2].startswith("pytest-llem: REGRESSION")
    assert gated.stdout.splitlines()[-1] == "pytest-llem: gate failed: 1 regression (each named above)"


def test_compare_fails_on_an_exceeded_budget_without_any_limit(state_dir):
    save(state_dir, "run-a", BASELINE_ROUNDS_J)
    over = make_result(NOISY_ROUNDS_J, config={"budget": {"energy_per_token_j": 0.45}})
    write_report(make_report("run-b", [make_entry(GPT2, over)], days_after_t0=1), state_dir)

    compared = llem(state_dir, "compare", "run-a", "run-b")

    assert compared.returncode == 1
    # The rounds' median (0.501 J; pooled, 0.502 J), as the comparison's row above shows it.
    assert compared.stdout.splitlines()[-2:] == [
        f"pytest-llem: OVER BUDGET {GPT2} energy_per_token_j 0.501 J (budget 0.450 J)",
        "pytest-llem: gate failed: 1 budget exceeded (each named above)",
    ]
    (row,) = [
        line
        for line in compared.stdout.splitlines()
        if line.startswith(GPT2) and "energy_per_token_j" in line
    ]
    assert row.split()[2:6] == ["0.500", "J", "0.501", "J"]


def test_compare_lists_tests_found_in_one_run_only(state_dir):
    save(state_dir, "run-a", BASELINE_ROUNDS_J)
    write_report(make_report("run-b", [make_entry(OPT, make_result([3.0]))], days_after_t0=1), state_dir)

    compared = llem(state_dir, "compare", "run-a", "run-b")

    assert compared.returncode == 0
    lines = compared.stdout.splitlines()
    assert lines[2].split() == ["test", "metric", "baseline", "current", "change", "limit", "p", "status"]
    assert lines[3:] == [f"new (no baseline): {OPT}", f"missing from this run: {GPT2}"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "nope"), "pytest-llem: no saved run named 'nope' (latest: run-a)"),
        (
            ("compare", "run-a", "run-a", "--fail", "energy_per_token_j:five"),
            "pytest-llem: --fail: limit 'five'",
        ),
        (
            ("compare", "run-a", "run-a", "--fail", "joules:5%"),
            "pytest-llem: --fail: unknown metric 'joules'",
        ),
        (("export", str(Path("missing") / "report.json")), "pytest-llem: cannot read report"),
        (("clean", "--older-than", "2026-13-01"), "pytest-llem: --older-than: '2026-13-01' is not a date"),
        (("clean",), "pytest-llem: clean needs --older-than YYYY-MM-DD, --keep N, --stale, or some of them"),
        (("export", "run-a", "-o", str(Path("missing") / "out.json")), "pytest-llem: cannot write missing"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(state_dir, args, message):
    save(state_dir, "run-a", BASELINE_ROUNDS_J)

    failed = llem(state_dir, *args)

    assert failed.returncode == 2
    assert failed.stderr.startswith(message)
    assert len(failed.stderr.splitlines()) == 1 and "Traceback" not in failed.stderr
    assert failed.stdout == ""


def test_export_csv_parses_back(state_dir):
    save(state_dir, "run-a", BASELINE_ROUNDS_J)

    exported = llem(state_dir, "export", "run-a", "--format", "csv")

    assert exported.returncode == 0, exported.stderr
    (row,) = csv.DictReader(io.StringIO(exported.stdout))
    assert row["nodeid"] == GPT2 and row["model"] == "tiny-gpt2"
    assert float(row["energy_per_token_j"]) == pytest.approx(0.5)


def test_export_markdown_contains_the_table_rows(state_dir):
    save(state_dir, "run-a", BASELINE_ROUNDS_J, name="nightly")

    exported = llem(state_dir, "export", "nightly", "--format", "markdown")

    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    assert lines[0] == "## pytest-llem: nightly (run-a)"
    row = (
        f"| `{GPT2}` | 5 | 2.00 [2.00, 2.00] | 5.00 [5.00, 5.00] | 5.00 [4.95, 5.05] | 0.500 [0.495, 0.505] |"
    )
    assert row + " passed |" in lines


def test_export_json_to_a_file_loads_back_as_the_same_report(state_dir, tmp_path):
    report = save(state_dir, "run-a", BASELINE_ROUNDS_J)
    target = tmp_path / "out.json"

    exported = llem(state_dir, "export", "run-a", "--format", "json", "-o", str(target))

    assert exported.returncode == 0 and exported.stdout == ""
    assert exported.stderr.strip() == f"pytest-llem: wrote {target}"
    again = SessionReport.model_validate_json(target.read_text(encoding="utf-8"))
    assert again == report


def test_export_html_renders_when_the_renderer_is_installed(state_dir):
    if any(importlib.util.find_spec(name) is None for name in ("pytest_llem.output.html", "matplotlib")):
        pytest.skip("the HTML renderer or its matplotlib extra is not installed")
    save(state_dir, "run-a", BASELINE_ROUNDS_J)

    exported = llem(state_dir, "export", "run-a", "--format", "html")

    assert exported.returncode == 0, exported.stderr
    assert "<html" in exported.stdout.lower() and GPT2 in exported.stdout


def test_clean_removes_old_unnamed_runs_and_keeps_named_ones(state_dir):
    save(state_dir, "old-unnamed", BASELINE_ROUNDS_J)
    save(state_dir, "old-named", BASELINE_ROUNDS_J, name="release-1.0")
    save(state_dir, "recent", BASELINE_ROUNDS_J, days_after_t0=30)

    cleaned = llem(state_dir, "clean", "--older-than", "2026-01-15")

    assert cleaned.returncode == 0, cleaned.stderr
    assert cleaned.stdout.splitlines() == [
        "removed old-unnamed (started 2026-01-01 00:00:00 UTC)",
        "removed 1 run(s) started before 2026-01-15",
        "kept 1 named run(s) started before 2026-01-15; --include-named deletes them",
    ]
    assert sorted(p.name for p in (state_dir / "runs").iterdir()) == ["old-named", "recent"]

    cleaned = llem(state_dir, "clean", "--older-than", "2026-01-15", "--include-named")

    assert cleaned.stdout.splitlines()[0] == "removed release-1.0 (started 2026-01-01 00:00:00 UTC)"
    assert [p.name for p in (state_dir / "runs").iterdir()] == ["recent"]


def test_clean_stale_marks_abandoned_experiments_failed(state_dir):
    manager = StateManager(state_dir)
    abandoned = manager.create("abandoned", "0" * 16)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    abandoned.owner_pid, abandoned.owner_start_time = int(gone.stdout), None
    manager.save(abandoned)
    manager.create("alive", "1" * 16)  # owned by this test process, which is running

    cleaned = llem(state_dir, "clean", "--stale")

    assert cleaned.returncode == 0, cleaned.stderr
    assert cleaned.stdout.splitlines() == [
        "marked 1 stale experiment(s) failed",
        "  abandoned (left in phase initialising)",
    ]
    assert manager.load("abandoned").failed and not manager.load("alive").failed


def write_foreign_report(folder: Path, **fields) -> Path:
    """A report file as another tool (or someone's hand) wrote it: any field, no validation."""
    report = make_report("run-x", [make_entry(GPT2, make_result(BASELINE_ROUNDS_J))])
    document = json.loads(report.model_dump_json())
    document.update(fields)
    path = folder / "report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize("how", ["first use", "import"])
def test_a_report_whose_run_id_climbs_out_of_runs_is_skipped_and_clean_deletes_nothing_outside(
    tmp_path, state_dir, how
):
    victim = tmp_path / "victim"
    (victim / "keep").mkdir(parents=True)
    source = state_dir if how == "first use" else tmp_path / "other"
    write_foreign_report(source / "runs" / "evil", run_id="../../victim")

    if how == "import":
        imported = llem(state_dir, "import", str(source))
        assert imported.returncode == 0, imported.stderr
        assert "runs/evil/report.json" in imported.stderr and "not a plain name" in imported.stderr
    cleaned = llem(state_dir, "clean", "--older-than", "2100-01-01", "--include-named")

    assert cleaned.returncode == 0, cleaned.stderr
    assert (victim / "keep").is_dir()
    assert "victim" not in cleaned.stdout
    assert cleaned.stdout.splitlines()[-1] == "removed 0 run(s) started before 2100-01-01"


def test_a_store_row_with_a_path_for_a_run_id_is_never_deleted_on_disk(tmp_path, state_dir, store_url):
    # Rows another machine wrote to the shared store, bypassing this version's checks: an
    # absolute path (short enough for the run id column) and one that climbs out of runs/.
    victim = tmp_path / "victim"
    (victim / "keep").mkdir(parents=True)
    absolute = Path(tempfile.mkdtemp(prefix="llem-victim-"))
    (absolute / "keep").mkdir()
    history = RunHistory(state_dir, store_url)
    for run_id in (str(absolute), "../../victim"):
        report = make_report("placeholder", [make_entry(GPT2, make_result(BASELINE_ROUNDS_J))])
        history.save(report.model_copy(update={"run_id": run_id, "name": "shared"}))
    fine = make_report("fine", [make_entry(GPT2, make_result(BASELINE_ROUNDS_J))])
    write_report(fine, state_dir, store=history.store)

    cleaned = llem(state_dir, "--store", store_url, "clean", "--keep", "0", "--include-named")
    listed = llem(state_dir, "--store", store_url, "list")

    kept = (victim / "keep").is_dir(), (absolute / "keep").is_dir()
    shutil.rmtree(absolute, ignore_errors=True)
    assert cleaned.returncode == 0, cleaned.stderr
    assert kept == (True, True)
    assert cleaned.stdout.splitlines() == [
        "removed fine (started 2026-01-01 00:00:00 UTC)",
        "removed 1 run(s) beyond the newest 0 per project and machine",
    ]
    assert not (state_dir / "runs" / "fine").exists()
    assert "its run id is not a plain name" in cleaned.stderr
    assert listed.returncode == 0 and "shared" not in listed.stdout


@pytest.mark.parametrize(
    ("setup", "args", "says"),
    [
        ("random bytes", ("list",), "cannot open the store"),
        ("malformed", ("list",), "database disk image is malformed"),
        (None, ("--store", "postgresql://u:hunter2secret@[::1/db", "list"), "is not a database URL"),
        (None, ("--store", "sqlite://", "list"), "a SQLite store needs a file"),
        (None, ("--store", "mysql://u:hunter2secret@db/llem", "list"), "--store: a store URL starts with"),
        (None, ("show", "/etc/passwd"), "'/etc/passwd' is not a report: the document: Invalid JSON"),
        (None, ("list", "--limit", "0"), "--limit: 0 is not a number of runs to show; give 1 or more"),
    ],
    ids=[
        "random-bytes",
        "malformed",
        "bad-url",
        "sqlite-memory",
        "other-scheme",
        "show-etc-passwd",
        "limit-0",
    ],
)
def test_what_used_to_crash_the_command_is_one_line_with_exit_code_2(state_dir, setup, args, says):
    if setup == "random bytes":
        state_dir.mkdir()
        (state_dir / "llem.sqlite3").write_bytes(os.urandom(20_000))
    elif setup == "malformed":
        save(state_dir, "run-a", BASELINE_ROUNDS_J)
        import sqlite3

        database = state_dir / "llem.sqlite3"
        conn = sqlite3.connect(database)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = [page for (page,) in conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'")]
        conn.close()
        with database.open("r+b") as handle:
            for page in pages:
                handle.seek((page - 1) * 4096)
                handle.write(b"\xee" * 4096)
    else:
        save(state_dir, "run-a", BASELINE_ROUNDS_J)

    done = llem(state_dir, *args)

    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("pytest-llem: "), done.stderr
    assert says in done.stderr
    assert "hunter2secret" not in done.stderr and "root:" not in done.stderr


def test_names_from_a_shared_store_are_shown_with_control_characters_escaped(state_dir):
    report = make_report("run-a", [make_entry(GPT2, make_result(BASELINE_ROUNDS_J))])
    # Written by another machine's pytest-llem that did not check names.
    RunHistory(state_dir).save(report.model_copy(update={"name": "evil\x1b[2J\nfake line"}))

    listed = llem(state_dir, "list")
    shown = llem(state_dir, "show", "run-a")

    assert listed.returncode == 0, listed.stderr
    assert "\x1b" not in listed.stdout and "evil\\x1b[2J\\x0afake line" in listed.stdout
    assert len(listed.stdout.splitlines()) == 2
    # The whole report is refused where it enters: its name cannot name a run.
    assert shown.returncode == 2 and "\x1b" not in shown.stdout + shown.stderr
    assert "skipped the store's row of run run-a: the store's row is not a report: name: " in shown.stderr
