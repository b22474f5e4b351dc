"""How the project's own tests share the machine when pytest-xdist runs them (`make test`).

Three rules, applied by tests/conftest.py to every test, so a new test follows them without
being listed anywhere:

- a test marked `alone` runs with no other test running: it takes the run's gate exclusively
  (waiting for the tests under way to finish, while no new one starts), every other test takes
  it shared. For tests whose timing or signals another test's load would disturb.
- a test using a module-scoped fixture runs on the same worker as the rest of its file
  (an xdist group named after the file), so the fixture is built once, not once per worker.
- a test using one of `GROUPED_FIXTURES` (a service that starts daemons) runs on the worker
  that has the service already up: one group per fixture.

Session-scoped fixtures that only build files (a tiny model) are built once for all workers
with `built_once`, in a folder the controller makes and removes (`SHARED_DIR_KEY` in each
worker's input). Without xdist none of this does anything: one process runs one test at a time.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ALONE_MARK = "alone"
#: The workerinput key of the folder every worker of one run shares.
SHARED_DIR_KEY = "llem_tests_shared_dir"
#: Fixtures that start services: the tests using one run on one worker, which starts it once.
GROUPED_FIXTURES = ("slurm_cluster",)
# Two lock files make the gate fair to an `alone` test: a shared holder passes the turnstile
# before it takes the gate, so once an `alone` test holds the turnstile no new test starts,
# and the tests under way drain. With the gate alone, shared holders on three other workers
# could keep it held for good.
_TURNSTILE, _GATE = "turnstile.lock", "gate.lock"


def make_shared_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="llem-tests-"))


def remove_shared_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def shared_dir(config: pytest.Config) -> Path | None:
    """The folder this xdist run's workers share; None outside an xdist worker."""
    workerinput = getattr(config, "workerinput", None)
    if not workerinput or SHARED_DIR_KEY not in workerinput:
        return None
    return Path(workerinput[SHARED_DIR_KEY])


@contextmanager
def _locked(path: Path, operation: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


@contextmanager
def run_gate(folder: Path, alone: bool) -> Iterator[None]:
    """Hold the run's gate for one test: exclusively for an `alone` test, else shared."""
    if alone:
        with _locked(folder / _TURNSTILE, fcntl.LOCK_EX), _locked(folder / _GATE, fcntl.LOCK_EX):
            yield
        return
    with _locked(folder / _TURNSTILE, fcntl.LOCK_EX):
        gate = os.open(folder / _GATE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(gate, fcntl.LOCK_SH)
        except BaseException:
            os.close(gate)
            raise
    try:
        yield
    finally:
        os.close(gate)


def xdist_group_of(item: pytest.Item) -> str | None:
    """The xdist group a test must run in (None: any worker)."""
    fixture_info = getattr(item, "_fixtureinfo", None)
    if fixture_info is None:
        return None
    names = set(fixture_info.names_closure)
    for name in GROUPED_FIXTURES:
        if name in names:
            return name
    for name in names:
        for definition in fixture_info.name2fixturedefs.get(name, ()):
            if definition.scope == "module":
                return item.nodeid.split("::")[0]
    return None


def built_once(config: pytest.Config, name: str, build: Callable[[Path], object], fallback: Path) -> Path:
    """`build(path)` run once for every worker of an xdist run, the others waiting for it;
    outside xdist, `build(fallback)`. Returns the path built. A build that raised (a skip,
    say) is tried again by the next worker to ask."""
    folder = shared_dir(config)
    if folder is None:
        build(fallback)
        return fallback
    target, done = folder / name, folder / f"{name}.done"
    with _locked(folder / f"{name}.lock", fcntl.LOCK_EX):
        if not done.exists():
            shutil.rmtree(target, ignore_errors=True)
            build(target)
            done.touch()
    return target
