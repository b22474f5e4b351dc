"""`publish_site`: the folder it writes (an index and a page per case, readable by a web
server), files it does not own left alone, its own pages rewritten, and a folder it cannot
write as one line. Needs the html extra (matplotlib)."""

from __future__ import annotations

import importlib.util
import stat
from pathlib import Path

import pytest
from sample_reports import OPT, sample_history

from pytest_llem.errors import LlemError
from pytest_llem.output.history_site import PAGE_MODE, publish_site

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="the html extra (matplotlib) is not installed"
)


def runs(step_j: float = 0.0):
    energies = [[5.0 + (step_j if i >= 6 else 0.0) + 0.01 * (i % 3), 5.0, 5.02] for i in range(12)]
    return sample_history(energies)


def test_the_site_is_an_index_and_a_page_per_case_readable_by_anyone(tmp_path: Path):
    reports = runs() + sample_history([[2.0, 2.1]] * 2, nodeid=OPT)

    site = publish_site(reports, tmp_path / "site")

    assert site.index == tmp_path / "site" / "index.html"
    assert sorted(p.relative_to(tmp_path / "site").as_posix() for p in site.pages) == sorted(
        ["index.html", *(f"cases/{case.slug}.html" for case in site.cases)]
    )
    assert len(site.cases) == 2
    for page in site.pages:
        assert stat.S_IMODE(page.stat().st_mode) == PAGE_MODE
        assert page.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in (tmp_path / "site").iterdir() if p.name.startswith(".")] == []  # no temp files


def test_foreign_files_are_kept_and_its_own_pages_rewritten(tmp_path: Path):
    target = tmp_path / "site"
    (target / "cases").mkdir(parents=True)
    (target / "README.txt").write_text("notes\n")
    (target / "cases" / "by-hand.html").write_text("<p>mine</p>\n")

    first = publish_site(runs(), target)
    before = first.index.read_text()
    second = publish_site(runs(step_j=1.0), target)

    assert (target / "README.txt").read_text() == "notes\n"
    assert (target / "cases" / "by-hand.html").read_text() == "<p>mine</p>\n"
    assert second.index.read_text() != before
    assert len(second.regressions) == 2  # energy_j and energy_per_token_j stepped up at run 6
    assert {(case.key, metric) for case, metric, _ in second.regressions} == {
        (second.cases[0].key, "energy_j"),
        (second.cases[0].key, "energy_per_token_j"),
    }


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(LlemError) as refused:
        publish_site(runs(), blocker / "site")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"publish: cannot write the site to {blocker / 'site'} (")
    assert message.endswith("; give a folder you can write")


def test_the_same_runs_give_the_same_pages(tmp_path: Path):
    one = publish_site(runs(step_j=1.0), tmp_path / "one")
    two = publish_site(runs(step_j=1.0), tmp_path / "two")
    assert [p.read_bytes() for p in one.pages] == [p.read_bytes() for p in two.pages]
