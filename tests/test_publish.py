"""The session's optional outputs: each written where its option says, secrets and the
project's path kept out, the step summary appended to, and a failure to write one reported
in a sentence while the others are still written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sample_reports import GPT2, OPT, make_entry, make_report, make_result

from pytest_llem.publish import GITHUB_STEP_SUMMARY, publish
from pytest_llem.settings import LlemSettings
from pytest_llem.store.report import SessionReport, load_report


@pytest.fixture
def report(tmp_path: Path) -> SessionReport:
    gpt2 = make_result([10.0, 11.0, 12.0])
    gpt2.config = {**gpt2.config, "model": str(tmp_path / "models" / "tiny-gpt2")}
    return make_report("r1", [make_entry(GPT2, gpt2), make_entry(OPT, make_result([20.0]))], name="main")


def test_nothing_asked_for_writes_nothing(report: SessionReport, tmp_path: Path):
    before = sorted(tmp_path.rglob("*"))
    assert publish(report, None, [], LlemSettings(), root=tmp_path, environ={}).problems == []
    assert sorted(tmp_path.rglob("*")) == before


def test_every_output_is_written_where_its_option_says(report: SessionReport, tmp_path: Path):
    out = tmp_path / "out" / "nested"  # folders that do not exist yet are made
    settings = LlemSettings(
        json_path=out / "copy.json",
        markdown_path=out / "summary.md",
        html_path=out / "report.html",
        benchmark_json_path=out / "bench.json",
    )
    assert publish(report, None, [], settings, root=tmp_path, environ={}).problems == []

    copied = load_report(out / "copy.json")
    assert [e.nodeid for e in copied.experiments] == [GPT2, OPT]
    assert copied.experiments[0].result.energy_j == report.experiments[0].result.energy_j
    markdown = (out / "summary.md").read_text()
    assert GPT2 in markdown and OPT in markdown
    page = (out / "report.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html>") and "test_gpt2" in page
    names = {point["name"] for point in json.loads((out / "bench.json").read_text())}
    assert any(GPT2 in name for name in names)
    assert (out / "bench-bigger.json").is_file()


def test_the_projects_path_and_secrets_stay_out_of_every_written_file(
    report: SessionReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    secret = "hf_s3cr3t_value_9876"
    monkeypatch.setenv("HF_TOKEN", secret)
    report.experiments[1].result.config = {**report.experiments[1].result.config, "note": f"token {secret}"}
    report.experiments[1].config = report.experiments[1].result.config
    out = tmp_path / "out"
    settings = LlemSettings(json_path=out / "copy.json", markdown_path=out / "s.md", html_path=out / "r.html")
    assert publish(report, None, [], settings, root=tmp_path, environ={}).problems == []
    for written in out.iterdir():
        text = written.read_text()
        assert str(tmp_path) not in text, written.name
        assert secret not in text, written.name


def test_the_github_step_summary_is_appended_to_not_replaced(report: SessionReport, tmp_path: Path):
    step_summary = tmp_path / "step_summary.md"
    step_summary.write_text("earlier step\n")
    environ = {GITHUB_STEP_SUMMARY: str(step_summary)}
    assert publish(report, None, [], LlemSettings(), root=tmp_path, environ=environ).problems == []
    appended = step_summary.read_text().removeprefix("earlier step\n")
    assert GPT2 in appended and appended.endswith("\n")
    assert publish(report, None, [], LlemSettings(), root=tmp_path, environ=environ).problems == []
    assert step_summary.read_text() == "earlier step\n" + appended + appended


def test_a_refused_gate_reaches_the_markdown(report: SessionReport, tmp_path: Path):
    refusal = "pytest-llem: GATE FAILED: no test was compared with the baseline"
    markdown = tmp_path / "s.md"
    publish(
        report, None, [], LlemSettings(markdown_path=markdown), root=tmp_path, environ={}, refusal=refusal
    )
    assert "GATE FAILED: no test was compared with the baseline" in markdown.read_text()


def test_an_output_that_cannot_be_written_is_one_sentence_and_the_others_are_still_written(
    report: SessionReport, tmp_path: Path
):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a folder cannot be made where a file is
    markdown = tmp_path / "ok" / "s.md"
    settings = LlemSettings(
        json_path=blocker / "copy.json", markdown_path=markdown, html_path=blocker / "r.html"
    )
    problems = publish(report, None, [], settings, root=tmp_path, environ={}).problems
    # The OS's words for the failure vary; what is ours: the option, the path, one line each.
    assert len(problems) == 2
    for problem, option, path in zip(
        problems, ("--llem-json", "--llem-html"), ("copy.json", "r.html"), strict=True
    ):
        assert problem.startswith(f"could not write {option} {blocker / path}: ")
        assert "\n" not in problem and "Traceback" not in problem
    assert GPT2 in markdown.read_text()


def test_each_output_written_is_one_line_with_its_path_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    step_summary = tmp_path / "step-summary.md"
    settings = LlemSettings(
        enabled=True,
        state_dir=tmp_path / "state",
        json_path=Path("out/copy.json"),
        markdown_path=tmp_path / "out" / "summary.md",
        html_path=Path("out/report.html"),
        benchmark_json_path=Path("out/bench.json"),
    )
    report = make_report("now", [make_entry(GPT2, make_result([1.0]))])
    published = publish(report, None, [], settings, environ={"GITHUB_STEP_SUMMARY": str(step_summary)})
    assert published.problems == []
    assert published.written == [
        "report copy written to out/copy.json",
        "Markdown summary written to out/summary.md",
        "Markdown summary added to $GITHUB_STEP_SUMMARY",
        "HTML report written to out/report.html",
        "benchmark JSON written to out/bench.json and out/bench-bigger.json",
    ]
    written = ["copy.json", "summary.md", "report.html", "bench.json", "bench-bigger.json"]
    assert all((tmp_path / "out" / name).is_file() for name in written)
    assert step_summary.read_text().strip()


def test_an_output_that_cannot_be_written_is_a_problem_and_no_written_line(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    settings = LlemSettings(enabled=True, state_dir=tmp_path / "state", html_path=blocker / "report.html")
    published = publish(
        make_report("now", [make_entry(GPT2, make_result([1.0]))]), None, [], settings, environ={}
    )
    assert published.written == []
    (problem,) = published.problems
    assert problem.startswith(f"could not write --llem-html {blocker / 'report.html'}: ")
