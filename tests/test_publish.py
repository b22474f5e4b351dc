"""The session's optional outputs: each one written is a line naming where it went, each one
that could not be written a problem, never a crash."""

from __future__ import annotations

from pathlib import Path

from sample_reports import GPT2, make_entry, make_report, make_result

from pytest_llem.publish import publish
from pytest_llem.settings import LlemSettings


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
