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
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_llem.base.redaction import redact_json, redact_secrets
from pytest_llem.errors import StorageError

if TYPE_CHECKING:
    from pydantic import BaseModel

PRIVATE_DIR_MODE = 0o700
#: Space kept in the state dir for the states and report written after the disk fills up.
RESERVE_NAME = ".reserve"
RESERVE_BYTES = 1 << 20
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(StorageError):
    def __init__(self, path: Path, reason: str, written: bool) -> None:
        kept = f"{path.name} was still written" if written else f"{path.name} could not be written"
        super().__init__(
            errno.ENOSPC,
            f"the disk of {path.parent} is full ({reason}); {kept}; results written before are "
            "kept. Free space there or choose another --llem-state-dir",
        )
        self.written = written

    def __str__(self) -> str:
        return str(self.strerror)


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) readable by the current user only.

    An existing folder is tightened to 0700 too: benchmark states can name private models.
    """
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    if path.stat().st_mode & 0o777 != PRIVATE_DIR_MODE:
        os.chmod(path, PRIVATE_DIR_MODE)
    return path


def atomic_write_text(path: Path, text: str, use_reserve: bool = True, durable: bool = True) -> None:
    """Write `path` atomically. On a full disk the state dir's reserve is given up and the write
    tried once more, so the file that records a finished result still lands; either way
    `DiskFull` says so, for the session to stop with one line. Files that are not results (the
    GPU lease table) pass `use_reserve=False`: the reserve is kept for the states and report.
    `durable=False` skips the fsyncs, for files in an experiment's temporary work folder: a
    live process reads them back at once and the folder does not outlive the experiment, so
    only the atomic rename matters there (the result is made durable where it is stored)."""
    try:
        _write_once(path, text, durable)
    except OSError as exc:
        if exc.errno not in _DISK_FULL_ERRNOS:
            raise
        written = False
        if use_reserve and release_reserve(path.parent):
            try:
                _write_once(path, text, durable)
                written = True
            except OSError:
                pass
        raise DiskFull(path, exc.strerror or str(exc), written) from None


def _write_once(path: Path, text: str, durable: bool = True) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            if durable:
                os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        # The temp name is unique to this writer, so removing it cannot hurt anyone else.
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    if durable:
        _fsync_dir(path.parent)


def make_reserve(state_dir: Path) -> None:
    """Keep `RESERVE_BYTES` of the state dir's disk for the writes that follow a full disk.
    Best effort: on a disk already too full for it, there is simply no reserve."""
    reserve = state_dir / RESERVE_NAME
    try:
        if reserve.stat().st_size >= RESERVE_BYTES:
            return
    except FileNotFoundError:
        pass
    try:
        fd = os.open(reserve, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        os.posix_fallocate(fd, 0, RESERVE_BYTES)
    except OSError:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def release_reserve(folder: Path) -> bool:
    """Delete the reserve of the state dir that holds `folder` (it or up to two levels up)."""
    for candidate in (folder, *list(folder.parents)[:2]):
        try:
            os.unlink(candidate / RESERVE_NAME)
            return True
        except OSError:
            continue
    return False


#: The largest state or report file read (a session of hundreds of experiments with long
#: power timelines stays well below it); a larger one is skipped with the reason, unread.
MAX_READ_BYTES = 256 << 20


def read_regular_file(path: Path, max_bytes: int = MAX_READ_BYTES) -> bytes:
    """The bytes of `path` if it is a regular file of its own of at most `max_bytes`: a symlink
    is not followed, a FIFO or device is never opened for reading (it could block or never
    end), and a larger file is not read at all. Raises OSError with a reason a person can act on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link, not followed") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, device, socket or folder)")
        if info.st_size > max_bytes:
            size = f"{info.st_size >> 20} MiB"
            raise OSError(errno.EFBIG, f"{size}, larger than the {max_bytes >> 20} MiB limit, not read")
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


def redact_file(path: Path, environ: Mapping[str, str] | None = None) -> None:
    """Blank the secrets in a file another process wrote into the state dir (a server's log),
    in place; a file that is not there, or not a regular file of its own, is left alone."""
    try:
        text = read_regular_file(path).decode("utf-8", errors="replace")
    except OSError:
        return
    redacted = redact_secrets(text, environ)
    if redacted != text:
        atomic_write_text(path, redacted)


def disk_is_full(path: Path) -> bool:
    """True if the disk that holds `path` (or its nearest existing folder) has less free space
    than a reserve, or no free inode, for this user: what a write there would fail on."""
    for candidate in (path, *path.parents):
        try:
            usage = os.statvfs(candidate)
        except OSError:
            continue
        no_inodes = usage.f_files > 0 and usage.f_favail == 0
        return usage.f_bavail * usage.f_frsize < RESERVE_BYTES or no_inodes
    return False
