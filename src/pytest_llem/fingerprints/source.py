"""Which source a run measured: the git commit of the suite's checkout, its branch, whether the
work tree had uncommitted changes, and when the commit was authored.

Read once at a session's start from pytest's rootdir, so that a history of runs can be
ordered and labelled by commit (`pytest-llem publish`) and a step in a figure pinned to the
commit that made it. Git is asked through its command with a short timeout (`git_output`,
the one way the project calls git); git missing, a folder outside any checkout, a repository
without a commit, or git failing in any way gives no facts (None), never an error: the run is
measured all the same.
"""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pytest_llem.results import UtcDatetime

#: How long one git command may take before its facts are given up.
GIT_TIMEOUT_S = 10.0
#: Hex digits of a commit wherever one is shown short: tables, charts, run names, bisection
#: transcripts (one length, so a commit reads the same in each).
SHORT_COMMIT_LENGTH = 10


def git_output(cwd: Path | None, *args: str, timeout_s: float | None = None) -> str:
    """`git <args>`'s output in `cwd`, stripped; OSError or SubprocessError when it fails
    (`CalledProcessError` carries git's exit status and stderr). `timeout_s` defaults to
    `GIT_TIMEOUT_S`, read at each call."""
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=GIT_TIMEOUT_S if timeout_s is None else timeout_s,
    )
    return done.stdout.strip()


class SourceInfo(BaseModel):
    """The git facts of a run's checkout at the session's start."""

    model_config = ConfigDict(frozen=True)

    commit: str = Field(description="the checked-out commit's full hash")
    branch: str | None = Field(default=None, description="the branch checked out; None: a detached HEAD")
    dirty: bool | None = Field(
        default=None, description="tracked files differed from the commit (untracked ones do not count)"
    )
    commit_time: UtcDatetime | None = Field(default=None, description="the commit's author time")

    @property
    def short_commit(self) -> str:
        return self.commit[:SHORT_COMMIT_LENGTH]

    @property
    def label(self) -> str:
        """The commit as a chart's axis or a table names it: short, `+` when the tree was dirty."""
        return self.short_commit + ("+" if self.dirty else "")


def source_info(folder: Path) -> SourceInfo | None:
    """The git facts of the checkout `folder` lies in, or None where there are none to read."""
    try:
        commit, _, authored = git_output(folder, "log", "-1", "--format=%H%n%aI", "HEAD").partition("\n")
    except (OSError, subprocess.SubprocessError, ValueError):  # no git, no checkout, no commit yet
        return None
    if not commit:
        return None
    return SourceInfo(
        commit=commit,
        branch=_branch(folder),
        dirty=_dirty(folder),
        commit_time=_time(authored),
    )


def _branch(folder: Path) -> str | None:
    try:  # exits 1 on a detached HEAD
        return git_output(folder, "symbolic-ref", "--quiet", "--short", "HEAD") or None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _dirty(folder: Path) -> bool | None:
    try:
        # No optional locks: a status here must never hold the index lock a user's git waits on.
        changes = git_output(folder, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return bool(changes)


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return None
