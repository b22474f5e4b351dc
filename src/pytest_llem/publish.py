"""The session's optional outputs, written once it ends: a copy of the report (`--llem-json`),
a Markdown summary (`--llem-markdown`, and appended to `$GITHUB_STEP_SUMMARY` when set), a
self-contained HTML report (`--llem-html`) and the benchmark-action JSON
(`--llem-benchmark-json`). Each output written is one line saying where it went; a failure
to write one is a problem to report, never a crash: the report in the state dir is already safe.

Runs in the pytest process. A session-level module, beside `session`, rather than part of
`output`: it reads the session's `LlemSettings`, and `output` sits below `settings`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pytest_llem.base.redaction import redact_text
from pytest_llem.errors import LlemError
from pytest_llem.formatting import shown_path
from pytest_llem.gating.compare import Comparison, MetricChange
from pytest_llem.settings import LlemSettings
from pytest_llem.store.report import SessionReport, copy_report

GITHUB_STEP_SUMMARY = "GITHUB_STEP_SUMMARY"


@dataclass
class Published:
    #: One line per output written, naming it and where it went.
    written: list[str] = field(default_factory=list)
    #: One sentence per output that could not be written.
    problems: list[str] = field(default_factory=list)


def publish(
    report: SessionReport,
    comparison: Comparison | None,
    failures: list[MetricChange],
    settings: LlemSettings,
    root: Path | None = None,
    environ: Mapping[str, str] | None = None,
    refusal: str | None = None,
) -> Published:
    """Write every output asked for: what was written, and what could not be, a line each.

    `refusal`: the gate's `GATE FAILED` line, if it failed the run for comparing nothing."""
    from pytest_llem.output import exports

    environ = os.environ if environ is None else environ
    published = Published()
    view = settings.summary_view()

    def attempt(what: str, write: Callable[[], object], done: str) -> None:
        try:
            write()
        except (OSError, LlemError) as exc:
            published.problems.append(f"could not write {what}: {getattr(exc, 'strerror', None) or exc}")
        else:
            published.written.append(done)

    if settings.json_path is not None:
        json_path = settings.json_path
        attempt(
            f"--llem-json {json_path}",
            lambda: copy_report(report, json_path, root),
            f"report copy written to {shown_path(json_path)}",
        )
    markdown_path = settings.markdown_path
    step_summary = environ.get(GITHUB_STEP_SUMMARY)
    if markdown_path is not None or step_summary:
        markdown = redact_text(
            exports.markdown_summary(report, comparison, failures, view, refusal), root=root
        )
        if markdown_path is not None:
            attempt(
                f"--llem-markdown {markdown_path}",
                lambda: _write(markdown_path, markdown),
                f"Markdown summary written to {shown_path(markdown_path)}",
            )
        if step_summary:
            attempt(
                f"{GITHUB_STEP_SUMMARY}",
                lambda: _append(Path(step_summary), markdown),
                f"Markdown summary added to ${GITHUB_STEP_SUMMARY}",
            )
    if settings.html_path is not None:
        html_path = settings.html_path

        def write_html() -> None:
            from pytest_llem.output.html import render_html

            page = render_html(report, comparison, view, settings.power_chart, refusal)
            _write(html_path, redact_text(page, root=root))

        attempt(f"--llem-html {html_path}", write_html, f"HTML report written to {shown_path(html_path)}")
    if settings.benchmark_json_path is not None:
        path = settings.benchmark_json_path
        names = " and ".join(map(shown_path, exports.benchmark_json_paths(path)))
        attempt(
            f"--llem-benchmark-json {path}",
            lambda: exports.write_benchmark_json(report, path),
            f"benchmark JSON written to {names}",
        )
    return published


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text + "\n")
