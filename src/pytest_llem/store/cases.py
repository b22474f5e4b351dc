"""How a case is known across runs: a key that does not move with pytest's rootdir.

pytest's node ids are relative to the rootdir, which pytest derives from the command line's
path arguments (an option's value given after a space counts among them). The case key is
the test file's path relative to an anchor found from the file itself: the enclosing git
repository's root, else the nearest folder holding a project file (`pytest.ini`,
`pyproject.toml`, `tox.ini`, `setup.cfg`), else the folder pytest was started from; then
the rest of the node id (class, function, parameters).
"""

from __future__ import annotations

from pathlib import Path

INI_FILES = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")


def project_anchor(test_file: Path) -> Path | None:
    """The git root above `test_file`, else the nearest folder with a project file; None if neither."""
    folders = list(test_file.resolve().parents)
    for folder in folders:
        if (folder / ".git").exists():
            return folder
    return nearest_project_folder(folders[0])


def nearest_project_folder(start: Path) -> Path | None:
    """`start` or the nearest folder above it that holds a project file (`INI_FILES`); None if none."""
    for folder in [start, *start.parents]:
        if any((folder / name).is_file() for name in INI_FILES):
            return folder
    return None


def case_key(nodeid: str, test_file: Path, invocation_dir: Path) -> str:
    """`<file relative to its anchor>::<rest of the node id>`; the node id when no anchor holds the file."""
    anchor = project_anchor(test_file) or invocation_dir.resolve()
    try:
        relative = test_file.resolve().relative_to(anchor).as_posix()
    except ValueError:
        return nodeid
    _, separator, inside = nodeid.partition("::")
    return f"{relative}{separator}{inside}"
