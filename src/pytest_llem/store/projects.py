"""Which project a run belongs to: the key its runs are saved under in a shared store.

Every project of a user shares the default state dir, and so one store; the project is what
keeps one suite's bare `--llem-compare` from choosing another suite's run. The key is
readable (a name) and stable (a short digest beside it), derived from the suite's folder
(`project_folder`): the one holding the pytest config file pytest read (where pytest's rootdir
usually is), else the nearest folder holding a project file above where pytest was started,
else that folder. Not pytest's rootdir itself: an option's path value given after a space
(`--llem-state-dir ../state`) counts among pytest's path arguments and moves the rootdir, and
the project must not move with it (as case keys do not, `store.cases`).

- In a git work tree with a remote (`origin`, else the first one): the remote's repository
  name, or the suite folder's name when it is a folder inside the repository, and a digest of
  the remote's URL (scheme, user, password, port and `.git` left out, so SSH and HTTPS clones
  agree) with the folder's path inside the repository. Every clone and worktree of a
  repository, wherever it lies (a CI runner's fresh checkout path, a repo moved on disk), is
  one project; two suites of a monorepo, each with its own config file, are two.
- Otherwise: the folder's name and a digest of its resolved path, so two checkouts of the
  same name do not collide; moving the folder starts a new project.

`--llem-project` / `llem_project` names the project outright (to share one across remotes,
or keep one when a repository without a remote moves). Runs saved before projects were
recorded have none (`None`): shown as legacy and never a default baseline. Git is called
through `fingerprints.source.git_output`.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pytest_llem.base.digests import json_digest
from pytest_llem.fingerprints.source import git_output
from pytest_llem.store.cases import nearest_project_folder

#: Hex digits of the digest beside a project's name: enough to tell a user's projects apart.
PROJECT_DIGEST_LENGTH = 8
#: How a run saved before runs recorded their project is shown.
LEGACY_PROJECT = "(legacy)"
_NOT_A_NAME = re.compile(r"[^\w.-]+")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?([^:/]+):(?!//)(.*)$")


def project_folder(config_file: Path | None, invocation_dir: Path) -> Path:
    """The suite's folder: the config file's (`config_file`, the one pytest read), else the
    nearest folder holding a project file from `invocation_dir` up, else `invocation_dir`."""
    if config_file is not None:
        return config_file.parent
    return nearest_project_folder(invocation_dir.resolve()) or invocation_dir


def project_key(folder: Path) -> str:
    """The project of the suite in `folder` (`project_folder`; see the module docstring)."""
    resolved = folder.resolve()
    from_git = _git_project(resolved)
    if from_git is not None:
        return from_git
    return _key(resolved.name, ["path", str(resolved)])


def _git_project(folder: Path) -> str | None:
    try:
        top = Path(git_output(folder, "rev-parse", "--show-toplevel")).resolve()
        urls = git_output(folder, "config", "--get-regexp", r"^remote\..*\.url$")
    except (OSError, subprocess.SubprocessError):  # no git, no work tree, no remote
        return None
    remotes = dict(line.split(" ", 1) for line in urls.splitlines() if " " in line)
    if not remotes:
        return None
    url = remotes.get("remote.origin.url") or remotes[min(remotes)]
    try:
        inside = folder.relative_to(top).as_posix()
    except ValueError:
        return None
    remote = normalised_remote(url)
    name = folder.name if inside != "." else remote.rsplit("/", 1)[-1]
    return _key(name, ["git", remote, inside])


def normalised_remote(url: str) -> str:
    """`host/owner/repo` of a remote's URL, whichever way it was cloned (HTTPS, SSH, scp-like
    `git@host:owner/repo.git`), without user, password or port; a local path as it is."""
    text = url.strip()
    if _SCHEME.match(text):
        rest = _SCHEME.sub("", text)
        authority, _, path = rest.partition("/")
        host = authority.rpartition("@")[2].split(":")[0].lower()
        text = f"{host}/{path}" if host else f"/{path}"  # file:///srv/repo.git
    elif (scp := _SCP_LIKE.match(text)) is not None and not text.startswith(("/", ".")):
        text = f"{scp.group(1).lower()}/{scp.group(2)}"
    text = text.rstrip("/")
    return text.removesuffix(".git").rstrip("/")


def _key(name: str, identity: list[str]) -> str:
    readable = _NOT_A_NAME.sub("-", name).strip("-.")[:80] or "project"
    return f"{readable}-{json_digest(identity)[:PROJECT_DIGEST_LENGTH]}"


def shown_project(project: str | None) -> str:
    """A run's project as a table or a line shows it."""
    return LEGACY_PROJECT if project is None else project
