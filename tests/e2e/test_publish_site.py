"""`pytest-llem publish` over real `pytest --llem` runs, one per commit of a scratch git
repository whose suite halves its throughput at a known commit: the site marks that step at
that commit, and every page loads in headless Chromium with no broken link."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest
from browser import broken_links, file_doms, find_browser
from scratch_history import CASE_KEY, build_history

from pytest_llem.fingerprints.source import SHORT_COMMIT_LENGTH

from .test_cli import llem

BROWSER = find_browser()
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chromium (Debian: apt-get install chromium)")
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="matplotlib is not installed (the 'html' extra)"
)

#: Commits of the scratch suite, and the one that halves its throughput (0-based).
COMMITS = 8
STEP_AT = 4


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A state dir holding one real run per commit; the commits, oldest first."""
    return build_history(tmp_path_factory.mktemp("history"), COMMITS, STEP_AT)


@needs_git
@needs_matplotlib
@needs_browser
def test_the_site_marks_the_planted_step_at_its_commit_and_every_page_loads(history, tmp_path: Path):
    assert BROWSER is not None
    state_dir, commits = history
    step_label = commits[STEP_AT][:SHORT_COMMIT_LENGTH]
    site = tmp_path / "site"
    (site / "cases").mkdir(parents=True)
    foreign = {site / "notes.txt": "kept\n", site / "cases" / "older.html": "<p>mine</p>\n"}
    for path, text in foreign.items():
        path.write_text(text)

    listed = llem(state_dir, "list")
    published = llem(state_dir, "publish", str(site))

    # Every run recorded its commit, and list shows it.
    assert [row.split()[2] for row in listed.stdout.splitlines()[1:]] == [
        c[:SHORT_COMMIT_LENGTH] for c in commits
    ]
    assert published.returncode == 0, published.stderr
    assert published.stderr == ""
    assert f"worse since {step_label}: {CASE_KEY} tokens_per_s" in published.stdout
    assert published.stdout.splitlines()[-1].startswith(f"published 1 case(s) from {COMMITS} run(s) to ")
    for path, text in foreign.items():  # files the site does not own are left as they were
        assert path.read_text() == text

    index = site / "index.html"
    (case_page,) = [p for p in (site / "cases").glob("*.html") if p.name != "older.html"]
    doms = file_doms(BROWSER, [index.resolve(), case_page.resolve()])  # one Chromium for both
    for page, dom in doms.items():
        assert "<main>" in dom, page
        assert broken_links(page, dom, doms) == [], page

    index_dom = doms[index.resolve()]
    regressions = index_dom[index_dom.index('id="regressions"') : index_dom.index('id="cases"')]
    row = re.search(rf"<tr><td[^>]*><a href=\"([^\"]+)\">{re.escape(CASE_KEY)}</a>.*?</tr>", regressions)
    assert row is not None, regressions
    assert "<code>tokens_per_s</code>" in row.group(0) and f"<code>{step_label}</code>" in row.group(0)
    assert row.group(1).endswith("#metric-tokens_per_s")

    case_dom = doms[case_page.resolve()]
    steps = case_dom[case_dom.index('id="steps"') : case_dom.index('id="metric-')]
    throughput = [r for r in re.findall(r"<tr>.*?</tr>", steps, re.S) if "#metric-tokens_per_s" in r]
    assert len(throughput) == 1 and f"<code>{step_label}</code>" in throughput[0] and "worse" in throughput[0]
    # The chart is drawn (an inline SVG that survived the browser) and its caption names the step.
    chart = case_dom[case_dom.index('id="metric-tokens_per_s"') :]
    chart = chart[: chart.index("</section>")]
    assert "<svg" in chart
    assert f"a step at {step_label}" in chart


@needs_matplotlib
def test_publishing_an_empty_store_is_one_line_and_exit_2(tmp_path: Path):
    site = tmp_path / "site"
    done = llem(tmp_path / "state", "publish", str(site))
    assert done.returncode == 2
    where = tmp_path / "state"
    expected = f"pytest-llem: publish: no measured runs to publish in {where}; run pytest --llem first\n"
    assert done.stderr == expected
    assert not site.exists()


@needs_git
@needs_matplotlib
def test_a_folder_that_cannot_be_written_is_one_line(history, tmp_path: Path):
    state_dir, _ = history
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = llem(state_dir, "publish", str(blocker / "site"))
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"pytest-llem: publish: cannot write the site to {blocker / 'site'} (")
    assert line.endswith("give a folder you can write")
