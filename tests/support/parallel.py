"""How the project's own tests share the machine when pytest-xdist runs them (`make test`).

Three rules, applied by the hooks below to every test, so a new test follows them without
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

The hooks make this module a pytest plugin (tests/conftest.py names it in `pytest_plugins`),
so a suite the tests write can load the same rules. The groups do not travel as
`xdist_group` marks: xdist's loadgroup appends a mark's group to the test's node id, which
pytest 9.2 no longer lets a plugin change, so every test became a group of its own and
module fixtures were built once per worker, with nothing failing (pytest-xdist issue 1386).
Each worker writes its tests' groups to the shared folder when its collection is done, and
the controller's scheduler (`pytest_xdist_make_scheduler`, for `--dist loadgroup`) reads
them from there.
"""

from __future__ import annotations

import fcntl
import json
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
#: Each worker's {node id: group} for its grouped tests, in the run's shared folder.
_GROUPS_GLOB = "groups-*.json"
_SHARED_DIR = pytest.StashKey[Path]()


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


def write_groups(folder: Path, worker: str, groups: dict[str, str]) -> None:
    """This worker's grouped tests ({node id: group}), whole or not at all (renamed into place)."""
    part = folder / f"groups-{worker}.json.part"
    part.write_text(json.dumps(groups), encoding="utf-8")
    part.replace(folder / f"groups-{worker}.json")


def read_groups(folder: Path) -> dict[str, str]:
    """Every worker's grouped tests. Workers collect the same tests (xdist checks it), so they
    agree; a worker that replaced a crashed one wrote the same again."""
    groups: dict[str, str] = {}
    for path in sorted(folder.glob(_GROUPS_GLOB)):
        groups.update(json.loads(path.read_text(encoding="utf-8")))
    return groups


def group_scheduler(config: pytest.Config, log, folder: Path):  # noqa: ANN001, ANN201 - xdist's types
    """xdist's scope scheduling with a test's scope its group from `read_groups` (read once,
    when the scheduler first asks: by then every worker has sent its collection, which it
    does after writing its groups), or the test itself if it has none. Imported here: only
    an xdist controller asks for it."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:
                self.groups = read_groups(folder)
            return self.groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)


# The hooks: the controller makes the shared folder and schedules by group; each worker writes
# its groups and takes the gate around each test.


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # noqa: ANN001 - xdist's WorkerController
    """Each worker is told the folder the run's workers share (made here, in the controller)."""
    stash = node.config.stash
    if _SHARED_DIR not in stash:
        stash[_SHARED_DIR] = make_shared_dir()
    node.workerinput[SHARED_DIR_KEY] = str(stash[_SHARED_DIR])


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's own scheduler for loadgroup
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN001, ANN201
    if config.getvalue("dist") != "loadgroup" or _SHARED_DIR not in config.stash:
        return None
    return group_scheduler(config, log, config.stash[_SHARED_DIR])


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SHARED_DIR in config.stash:
        remove_shared_dir(config.stash[_SHARED_DIR])


@pytest.hookimpl(tryfirst=True)  # before the worker sends its collection to the controller
def pytest_collection_finish(session: pytest.Session) -> None:
    folder = shared_dir(session.config)
    if folder is None:
        return
    groups = {item.nodeid: group for item in session.items if (group := xdist_group_of(item)) is not None}
    write_groups(folder, session.config.workerinput["workerid"], groups)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):  # noqa: ANN201
    folder = shared_dir(item.config)
    if folder is None:
        return (yield)
    with run_gate(folder, alone=item.get_closest_marker(ALONE_MARK) is not None):
        return (yield)
