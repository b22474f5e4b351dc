"""The git side of a bisection: GOOD and BAD resolved and checked, the commits between them,
and a worktree of the bisection's own to check them out in.

The user's checkout (its work tree, index, HEAD and branch) is never touched: every commit
is checked out in a detached worktree (`git worktree add --detach`) in a temporary folder,
removed at the end, on an error or a signal, and the repository's record of it pruned. A
dirty work tree is therefore no obstacle: only committed files are benchmarked.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pytest_llem.errors import LlemError
from pytest_llem.fingerprints.source import SHORT_COMMIT_LENGTH, git_output
from pytest_llem.store.names import printable

#: How long a checkout (`worktree add`, `checkout`, `clean`) may take: a large repository's
#: files are written, not only read.
CHECKOUT_TIMEOUT_S = 300.0


class BisectError(LlemError):
    """A bisection that cannot start: the message names the argument and the fix."""


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str

    @property
    def short(self) -> str:
        return self.sha[:SHORT_COMMIT_LENGTH]

    def __str__(self) -> str:
        return f"{self.short} {printable(self.subject)}"


def repository_top(cwd: Path) -> Path:
    """The top folder of the git work tree `cwd` lies in; `BisectError` outside one."""
    try:
        return Path(git_output(cwd, "rev-parse", "--show-toplevel")).resolve()
    except (OSError, subprocess.SubprocessError):
        raise BisectError(
            f"bisect: {cwd} is not inside a git checkout; run it in the repository whose commits it bisects"
        ) from None


def resolve_commit(top: Path, rev: str, role: str) -> Commit:
    """`rev` (a sha, branch, tag or `HEAD~3`) as a commit; `role` ("GOOD", "BAD") names it in
    the error."""
    try:
        sha = git_output(top, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    except (OSError, subprocess.SubprocessError):
        sha = ""
    if not sha:
        raise BisectError(
            f"bisect: {role} {printable(rev)!r} is not a commit of this repository; give a commit, branch "
            "or tag (`git log --oneline` lists them)"
        )
    return Commit(sha, git_output(top, "log", "-1", "--format=%s", sha))


def commits_between(top: Path, good: Commit, bad: Commit) -> list[Commit]:
    """Every commit after `good` up to `bad` (included) on a path between them, oldest first
    (topological order: a history with merges is searched as if it were a line)."""
    if good.sha == bad.sha:
        raise BisectError(f"bisect: GOOD and BAD are the same commit ({good.short}); give BAD a later one")
    try:
        git_output(top, "merge-base", "--is-ancestor", good.sha, bad.sha)
    except subprocess.CalledProcessError:
        raise BisectError(
            f"bisect: GOOD {good.short} is not an ancestor of BAD {bad.short}; GOOD must be an older "
            "commit that BAD's history contains (swapped?)"
        ) from None
    listed = git_output(
        top,
        "log",
        "--reverse",
        "--topo-order",
        "--ancestry-path",
        "--format=%H%x1f%s",
        f"{good.sha}..{bad.sha}",
    )
    return [Commit(*line.split("\x1f", 1)) for line in listed.splitlines()]


class Worktree:
    """A detached worktree of the repository at `top`, in a temporary folder of its own.

    Use as a context manager: whatever ends the block (an error, a signal turned into an
    exception), the worktree is removed and the repository's record of it pruned.
    """

    def __init__(self, top: Path, start: Commit) -> None:
        self.top = top
        self.start = start
        self.folder: Path | None = None
        self.path: Path | None = None

    def __enter__(self) -> Worktree:
        self.folder = Path(tempfile.mkdtemp(prefix="pytest-llem-bisect-"))
        self.path = self.folder / self.top.name
        try:
            self._git(self.top, "worktree", "add", "--detach", "--quiet", str(self.path), self.start.sha)
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def checkout(self, commit: Commit) -> Path:
        """Check `commit` out here, with nothing left of the last commit's run (untracked and
        ignored files removed); return the worktree's path."""
        assert self.path is not None, "checkout outside the context"
        self._git(self.path, "checkout", "--detach", "--force", "--quiet", commit.sha)
        self._git(self.path, "clean", "-ffdxq")
        return self.path

    def remove(self) -> None:
        """Remove the worktree and its folder, then prune the repository's record of it.
        Never raises: it runs while an error or a signal is on its way out."""
        if self.path is not None:
            try:
                self._git(self.top, "worktree", "remove", "--force", "--force", str(self.path))
            except (OSError, subprocess.SubprocessError):
                pass  # a half-made worktree: its folder goes below and prune drops the record
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self._git(self.top, "worktree", "prune")
        except (OSError, subprocess.SubprocessError):
            pass
        self.folder = self.path = None

    @staticmethod
    def _git(cwd: Path, *args: str) -> None:
        git_output(cwd, *args, timeout_s=CHECKOUT_TIMEOUT_S)
