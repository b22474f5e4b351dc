"""Identifiers that come from outside (report files, store rows, the command line): checked
where they enter, escaped where they are shown.

Run ids and experiment ids name folders and files under the state dir, so each must be a
*plain name*: letters, digits, '.', '_' and '-', no leading dot (so never `.` or `..`), at
most `MAX_ID_LENGTH` characters; a run folder is also checked to lie inside `runs/` right
before anything deletes it (`run_folder`). A run's name is never a path, so it may hold
spaces, but never a '/' or a control character (an ANSI escape or a newline read from a
shared store would otherwise reach a terminal as it is); a project's name may hold a '/',
never a control character. Whatever a store row holds is shown through `printable`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from pytest_llem.store.projects import LEGACY_PROJECT

MAX_ID_LENGTH = 128
MAX_NAME_LENGTH = 200
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def is_plain_name(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH and _PLAIN_NAME.fullmatch(value) is not None


def check_plain_name(value: str, field: str = "id") -> str:
    """`value` if it is a plain name (see the module docstring); ValueError naming `field` if not."""
    if not is_plain_name(value):
        raise ValueError(
            f"{field} '{printable(str(value))[:80]}' is not a plain name: use letters, digits, "
            f"'.', '_' and '-' only, no leading dot, at most {MAX_ID_LENGTH} characters"
        )
    return value


def _is_shown_name(value: str) -> bool:
    """Not blank, no control character, at most `MAX_NAME_LENGTH` characters: a name a table shows."""
    return bool(value.strip()) and not _CONTROL_CHARS.search(value) and len(value) <= MAX_NAME_LENGTH


def check_run_name(value: str, field: str = "name") -> str:
    """`value` if it can name a run: not blank, no '/', no control character, no .json ending."""
    if not _is_shown_name(value) or "/" in value or value.endswith(".json"):
        raise ValueError(
            f"{field} '{printable(value)[:80]}' cannot name a run: no '/', no control characters, "
            f"no .json ending, at most {MAX_NAME_LENGTH} characters"
        )
    return value


def check_project_name(value: str, field: str = "project") -> str:
    """`value` if it can name a project (`store.projects`): not blank, no control character,
    not the legacy runs' label; '/' is fine (a project is never a path)."""
    if not _is_shown_name(value) or value == LEGACY_PROJECT:
        raise ValueError(
            f"{field} '{printable(value)[:80]}' cannot name a project: give a non-blank name without "
            f"control characters, at most {MAX_NAME_LENGTH} characters, other than {LEGACY_PROJECT}"
        )
    return value


#: A pydantic field type for run ids and experiment ids read from files and store rows.
PlainName = Annotated[str, AfterValidator(lambda value: check_plain_name(value, "id"))]
#: A pydantic field type for run names.
RunName = Annotated[str, AfterValidator(lambda value: check_run_name(value, "name"))]
#: A pydantic field type for projects.
ProjectName = Annotated[str, AfterValidator(lambda value: check_project_name(value, "project"))]


def printable(text: str) -> str:
    """`text` with every control character (ANSI escapes, newlines) written as `\\xNN`."""
    return _CONTROL_CHARS.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def run_folder(runs_dir: Path, run_id: str) -> Path | None:
    """`runs_dir/run_id` if `run_id` is a plain name and the folder, resolved, is directly
    inside `runs_dir` (not a symbolic link out of it); None otherwise."""
    if not is_plain_name(run_id):
        return None
    folder = runs_dir / run_id
    if folder.is_symlink():
        return None
    try:
        resolved, parent = folder.resolve(), runs_dir.resolve()
    except (OSError, RuntimeError):
        return None
    return folder if resolved.parent == parent and resolved.name == run_id else None


def skipped_line(what: str, why: str) -> str:
    """The line naming a file of the state dir (`runs/...`, `experiments/...`) or a row of the
    store (`the store's row of ...`) that was skipped, and why."""
    where = "" if what.startswith("the store's row") else " in the state dir"
    return f"skipped {printable(what)}{where}: {printable(why)}"
