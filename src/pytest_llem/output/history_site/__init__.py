"""The history site (`pytest-llem publish DIR`): a static site of the saved runs, asv-publish
style, with the steps in each case's figures found and marked.

Owns turning saved runs (oldest first) into a folder of pages: `index.html` (the regressions
found: each case and metric whose latest confirmed step made it worse; every case) and
`cases/<case>.html` (a chart per metric that has figures: each run's figure by commit, its
spread, flagged figures, the steps found by `gating.changepoints` and where the machine
changed). Pages are self-contained HTML with matplotlib's SVG charts inlined, as the HTML
report is; matplotlib is the optional 'html' extra, imported only here.

Only the site's own files are written (over earlier copies of themselves); nothing else in
the folder is touched, so a folder that holds other files keeps them.

`series` turns runs into what is plotted, `plots` draws a metric's history, `pages` writes
the HTML.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_llem.base.atomic import atomic_write_text
from pytest_llem.errors import LlemError
from pytest_llem.extras import import_extra
from pytest_llem.output.history_site.pages import CASES_FOLDER, INDEX_PAGE, case_page, case_path, index_page
from pytest_llem.output.history_site.series import CaseHistory, MarkedStep, case_histories, regressions
from pytest_llem.store.report import SessionReport

#: Pages are for reading by anyone the folder is served to, unlike the state dir's files.
PAGE_MODE = 0o644


@dataclass(frozen=True)
class PublishedSite:
    index: Path
    cases: list[CaseHistory]
    pages: list[Path]

    @property
    def regressions(self) -> list[tuple[CaseHistory, str, MarkedStep]]:
        """Each case, metric and latest step that made the metric worse (per machine)."""
        return regressions(self.cases)


def publish_site(
    reports: Sequence[SessionReport], target: Path, metric_names: Sequence[str] = ()
) -> PublishedSite:
    """Write the site of `reports` (oldest run first) into `target`; only `metric_names` when
    given. A folder that cannot be written is one line (`LlemError`)."""
    figure_class = import_extra("matplotlib.figure", "html", "pytest-llem publish").Figure
    import matplotlib

    from pytest_llem.output.html.charts import CHART_STYLE

    cases = case_histories(reports, metric_names)
    with matplotlib.rc_context(CHART_STYLE):
        pages = {INDEX_PAGE: index_page(cases, len(reports))}
        for case in cases:
            pages[case_path(case)] = case_page(figure_class, case)
    written = []
    try:
        (target / CASES_FOLDER).mkdir(parents=True, exist_ok=True)
        for name, html in pages.items():
            path = target / name
            atomic_write_text(path, html, use_reserve=False, durable=False)
            os.chmod(path, PAGE_MODE)
            written.append(path)
    except OSError as exc:
        where = exc.filename or target
        raise LlemError(
            f"publish: cannot write the site to {target} ({where}: {exc.strerror or exc}); "
            "give a folder you can write"
        ) from None
    return PublishedSite(target / INDEX_PAGE, cases, written)
