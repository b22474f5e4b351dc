"""The git facts of a run's checkout, read from real scratch repositories: commit, branch (None
when detached), dirty work tree, author time; and nothing at all, never an error, where git
has nothing to say."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pytest_llem.fingerprints import source
from pytest_llem.fingerprints.source import SHORT_COMMIT_LENGTH, SourceInfo, source_info

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

AUTHORED = "2026-03-04T05:06:07+02:00"


def git(cwd: Path, *args: str, **env: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env={**os.environ, **env}
    )
    return done.stdout.strip()


def repository(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "trunk")
    git(path, "config", "user.email", "bench@example.com")
    git(path, "config", "user.name", "Bench")
    (path / "bench.py").write_text("x = 1\n")
    git(path, "add", "bench.py")
    git(path, "commit", "-q", "-m", "first", GIT_AUTHOR_DATE=AUTHORED)
    return path


def test_a_clean_checkout_gives_its_commit_branch_and_author_time(tmp_path: Path):
    repo = repository(tmp_path / "repo")

    info = source_info(repo)

    assert info is not None
    assert info.commit == git(repo, "rev-parse", "HEAD") and len(info.commit) == 40
    assert info.branch == "trunk"
    assert info.dirty is False
    assert info.commit_time == datetime(2026, 3, 4, 3, 6, 7, tzinfo=timezone.utc)
    assert info.label == info.commit[:SHORT_COMMIT_LENGTH]


def test_a_folder_inside_the_checkout_reads_the_same_commit(tmp_path: Path):
    repo = repository(tmp_path / "repo")
    inner = repo / "tests" / "deep"
    inner.mkdir(parents=True)

    assert source_info(inner) == source_info(repo)


def test_changed_tracked_files_make_it_dirty_untracked_ones_do_not(tmp_path: Path):
    repo = repository(tmp_path / "repo")
    (repo / "notes.txt").write_text("untracked\n")
    assert source_info(repo).dirty is False

    (repo / "bench.py").write_text("x = 2\n")
    info = source_info(repo)

    assert info.dirty is True
    assert info.label == info.short_commit + "+"


def test_a_detached_head_has_no_branch(tmp_path: Path):
    repo = repository(tmp_path / "repo")
    first = git(repo, "rev-parse", "HEAD")
    (repo / "bench.py").write_text("x = 3\n")
    git(repo, "commit", "-q", "-am", "second")
    git(repo, "checkout", "-q", "--detach", first)

    info = source_info(repo)

    assert (info.commit, info.branch, info.dirty) == (first, None, False)


def test_a_repository_without_a_commit_gives_nothing(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")

    assert source_info(empty) is None


def test_a_folder_outside_any_checkout_gives_nothing(tmp_path: Path):
    plain = tmp_path / "plain"
    plain.mkdir()
    # GIT_CEILING_DIRECTORIES: git must not find a checkout above the temp dir either.
    os.environ["GIT_CEILING_DIRECTORIES"] = str(tmp_path)
    try:
        assert source_info(plain) is None
    finally:
        del os.environ["GIT_CEILING_DIRECTORIES"]


def test_a_missing_folder_or_missing_git_gives_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    repo = repository(tmp_path / "repo")
    assert source_info(tmp_path / "gone") is None

    monkeypatch.setenv("PATH", str(tmp_path / "no-binaries-here"))
    assert source_info(repo) is None


def test_git_that_hangs_is_given_up_after_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    repo = repository(tmp_path / "repo")
    binaries = tmp_path / "bin"
    binaries.mkdir()
    slow_git = binaries / "git"
    slow_git.write_text("#!/bin/sh\nexec sleep 30\n")
    slow_git.chmod(0o755)
    monkeypatch.setenv("PATH", str(binaries))
    monkeypatch.setattr(source, "GIT_TIMEOUT_S", 0.3)

    assert source_info(repo) is None


def test_git_that_fails_or_prints_nonsense_gives_nothing_and_never_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    binaries = tmp_path / "bin"
    binaries.mkdir()
    fake = binaries / "git"
    monkeypatch.setenv("PATH", str(binaries))
    fake.write_text("#!/bin/sh\necho 'fatal: broken' >&2\nexit 128\n")
    fake.chmod(0o755)
    assert source_info(tmp_path) is None

    # A commit but an author time that is no date, and a status that fails: the commit is kept.
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  log) printf 'abc123\\nnot-a-date\\n' ;;\n"
        "  symbolic-ref) echo main ;;\n"
        "  *) exit 128 ;;\n"
        "esac\n"
    )
    info = source_info(tmp_path)
    assert info == SourceInfo(commit="abc123", branch="main", dirty=None, commit_time=None)
