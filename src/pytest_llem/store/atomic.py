"""Crash-safe file writes: a reader sees the old file or the new one, never half of either.

Every file pytest-llem persists goes through `atomic_write_text`: a uniquely named temporary
file in the destination folder (so that concurrent writers never share one), fsync, then
`os.replace`, which is atomic on POSIX. States and reports, which outlive the session, go
through `write_model_redacted` on the way.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_llem.store.redaction import redact_json

if TYPE_CHECKING:
    from pydantic import BaseModel

PRIVATE_DIR_MODE = 0o700


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) readable by the current user only.

    An existing folder is tightened to 0700 too: benchmark states can name private models.
    """
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    if path.stat().st_mode & 0o777 != PRIVATE_DIR_MODE:
        os.chmod(path, PRIVATE_DIR_MODE)
    return path


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        # The temp name is unique to this writer, so removing it cannot hurt anyone else.
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def read_regular_file(path: Path) -> bytes:
    """The bytes of `path` if it is a regular file of its own: a symlink is not followed, and a
    FIFO or device is never opened for reading (it could block or never end). Raises OSError
    with a reason a person can act on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link, not followed") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, device, socket or folder)")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)


def write_model_redacted(path: Path, model: BaseModel, root: Path | None = None) -> None:
    """Persist a model as JSON with secret values and machine paths scrubbed (see redaction)."""
    atomic_write_text(path, redact_json(model.model_dump_json(), root=root))


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself, so a power cut cannot resurrect the old file."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
