"""A full disk: the reserve is given up so the write that records a finished result lands."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from pytest_llem.base import atomic
from pytest_llem.base.atomic import RESERVE_NAME, DiskFull, atomic_write_text, make_reserve


def _full_once(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The first write finds the disk full; later ones succeed (as after freeing space)."""
    real = atomic._write_once
    calls: list[Path] = []

    def write(path: Path, text: str, durable: bool = True) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text, durable)

    monkeypatch.setattr(atomic, "_write_once", write)
    return calls


def test_a_full_disk_gives_up_the_reserve_writes_anyway_and_says_so(tmp_path: Path, monkeypatch):
    make_reserve(tmp_path)
    assert (tmp_path / RESERVE_NAME).stat().st_size == atomic.RESERVE_BYTES
    (tmp_path / "experiments").mkdir()
    target = tmp_path / "experiments" / "x.json"
    _full_once(monkeypatch)
    with pytest.raises(DiskFull) as excinfo:
        atomic_write_text(target, '{"phase": "done"}')
    assert excinfo.value.written and target.read_text() == '{"phase": "done"}'
    assert not (tmp_path / RESERVE_NAME).exists()
    message = str(excinfo.value)
    assert message.startswith(f"the disk of {target.parent} is full (No space left on device); x.json")
    assert "\n" not in message


def test_without_a_reserve_the_write_is_lost_and_said_to_be(tmp_path: Path, monkeypatch):
    calls = _full_once(monkeypatch)
    with pytest.raises(DiskFull, match="x.json could not be written") as excinfo:
        atomic_write_text(tmp_path / "x.json", "{}")
    assert not excinfo.value.written and len(calls) == 1
    assert not (tmp_path / "x.json").exists()


def test_other_write_errors_are_not_taken_for_a_full_disk(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "missing" / "x.json", "{}")


@pytest.mark.parametrize("durable", [True, False])
def test_fsync_only_when_durable_and_the_write_is_atomic_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
):
    synced: list[int] = []
    real_fsync = atomic.os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    path = tmp_path / "outcome.json"
    path.write_text("old")
    atomic_write_text(path, "new", durable=durable)
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["outcome.json"]  # no temporary left behind
    assert len(synced) == (2 if durable else 0)  # the file and its folder
