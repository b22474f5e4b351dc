"""The git side of a bisection, on real repositories: commits resolved and listed, and the
worktree that never touches the user's checkout and is gone whatever ends its block."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from pytest_llem.bisection.git import (
    BisectError,
    Commit,
    Worktree,
    commits_between,
    repository_top,
    resolve_commit,
)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Five commits on main (`c0`..`c4`), a branch `side` with a commit of its own after c1,
    and a dirty work tree."""
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    (tmp_path / "tmp").mkdir()
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Bisect Test")
    git(repo, "config", "user.email", "bisect@example.invalid")
    for number in range(5):
        (repo / "sub" / "file.txt").write_text(f"{number}\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"c{number}")
        if number == 1:
            git(repo, "branch", "side")
    git(repo, "checkout", "-q", "side")
    (repo / "other.txt").write_text("x")
    git(repo, "add", "other.txt")
    git(repo, "commit", "-q", "-m", "side work")
    git(repo, "checkout", "-q", "main")
    (repo / "sub" / "file.txt").write_text("dirty\n")
    return repo


def state(repo: Path) -> tuple[str, str, str]:
    return (
        git(repo, "rev-parse", "HEAD"),
        git(repo, "symbolic-ref", "HEAD"),
        git(repo, "status", "--porcelain"),
    )


def test_the_top_is_found_from_a_folder_inside(repo: Path):
    assert repository_top(repo / "sub") == repo.resolve()


def test_outside_a_checkout_is_one_line(tmp_path: Path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(BisectError, match=r"^bisect: .*plain is not inside a git checkout; run it in"):
        repository_top(tmp_path / "plain")


def test_commits_resolve_from_any_revision_and_carry_their_subject(repo: Path):
    head = resolve_commit(repo, "HEAD~3", "GOOD")
    assert head == Commit(git(repo, "rev-parse", "HEAD~3"), "c1")
    assert str(head) == f"{head.sha[:10]} c1" and head.short == head.sha[:10]
    assert resolve_commit(repo, "side~1", "GOOD").sha == head.sha


@pytest.mark.parametrize("rev", ["nope", "HEAD~40", "--all", "HEAD:sub"])
def test_an_unknown_commit_names_its_role_and_where_to_look(repo: Path, rev: str):
    with pytest.raises(BisectError, match=rf"^bisect: BAD '{rev}' is not a commit of this repository; "):
        resolve_commit(repo, rev, "BAD")


def test_the_commits_after_good_up_to_bad_come_oldest_first(repo: Path):
    good, bad = resolve_commit(repo, "HEAD~4", "GOOD"), resolve_commit(repo, "main", "BAD")
    assert [c.subject for c in commits_between(repo, good, bad)] == ["c1", "c2", "c3", "c4"]


def test_good_must_be_an_ancestor_of_bad_and_not_bad_itself(repo: Path):
    old, new = resolve_commit(repo, "HEAD~4", "GOOD"), resolve_commit(repo, "HEAD", "BAD")
    with pytest.raises(BisectError, match=r"is not an ancestor of BAD .*\(swapped\?\)$"):
        commits_between(repo, new, old)
    with pytest.raises(BisectError, match=r"^bisect: GOOD and BAD are the same commit"):
        commits_between(repo, new, new)
    side = resolve_commit(repo, "side", "GOOD")
    with pytest.raises(BisectError, match="is not an ancestor"):
        commits_between(repo, side, new)


def test_the_worktree_checks_out_each_commit_and_leaves_nothing_behind(repo: Path, tmp_path: Path):
    before = state(repo)
    commits = [resolve_commit(repo, f"HEAD~{n}", "GOOD") for n in (4, 2, 0)]
    with Worktree(repo, commits[0]) as tree:
        assert tree.path is not None and tree.path.parent.parent == tmp_path / "tmp"
        assert (tree.path / "sub" / "file.txt").read_text() == "0\n"
        (tree.path / "left-by-a-run.txt").write_text("x")
        for number, commit in zip((2, 4), commits[1:], strict=True):
            path = tree.checkout(commit)
            assert (path / "sub" / "file.txt").read_text() == f"{number}\n"
            assert not (path / "left-by-a-run.txt").exists()  # each run starts from the commit alone
        assert state(repo) == before
        assert git(repo, "worktree", "list").count("\n") == 1
    assert state(repo) == before
    assert git(repo, "worktree", "list").count("\n") == 0
    assert list((tmp_path / "tmp").iterdir()) == []


def test_the_worktree_is_removed_when_its_block_raises(repo: Path, tmp_path: Path):
    with pytest.raises(KeyboardInterrupt), Worktree(repo, resolve_commit(repo, "HEAD", "GOOD")):
        raise KeyboardInterrupt
    assert git(repo, "worktree", "list").count("\n") == 0
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_worktree_that_cannot_be_added_leaves_no_folder(repo: Path, tmp_path: Path):
    missing = Commit("0" * 40, "not a commit")
    with pytest.raises(subprocess.CalledProcessError), Worktree(repo, missing):
        pass
    assert list((tmp_path / "tmp").iterdir()) == []
