"""The rules the project's tests follow under pytest-xdist: an `alone` test runs with no other
test beside it, even while other workers keep starting tests; a module-scoped fixture's tests
and a service's tests share one worker; a file built once is built once for every worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from parallel import GROUPED_FIXTURES, built_once, xdist_group_of

SUPPORT_DIR = Path(__file__).parent

# One process taking the gate ROUNDS times (shared) or once (alone), each hold HOLD_S long,
# writing each hold's start and end (monotonic clock: one per machine) to a JSON file.
HOLDER = """
import json, sys, time
from pathlib import Path
from parallel import run_gate

folder, alone, rounds, out = Path(sys.argv[1]), sys.argv[2] == "alone", int(sys.argv[3]), sys.argv[4]
holds = []
for _ in range(rounds):
    with run_gate(folder, alone=alone):
        start = time.monotonic()
        time.sleep(0.05)
        holds.append((start, time.monotonic()))
Path(out).write_text(json.dumps(holds))
"""


def start_holder(folder: Path, kind: str, rounds: int, out: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SUPPORT_DIR), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), kind, str(rounds), str(out)], env=env)


def test_an_alone_test_holds_the_gate_with_no_shared_holder_and_is_not_starved(tmp_path: Path):
    shared = [start_holder(tmp_path, "shared", 60, tmp_path / f"shared{i}.json") for i in range(3)]
    time.sleep(0.5)  # the shared holders take turns without a pause between their holds
    alone = start_holder(tmp_path, "alone", 1, tmp_path / "alone.json")
    for proc in [alone, *shared]:
        assert proc.wait(timeout=120) == 0
    ((alone_start, alone_end),) = json.loads((tmp_path / "alone.json").read_text())
    shared_holds = [hold for i in range(3) for hold in json.loads((tmp_path / f"shared{i}.json").read_text())]
    assert len(shared_holds) == 180
    overlapping = [(s, e) for s, e in shared_holds if s < alone_end and e > alone_start]
    assert overlapping == []
    # It went in while the shared holders still had holds to make: the turnstile let it in.
    assert any(start > alone_end for start, _ in shared_holds)


def test_shared_holders_hold_the_gate_at_once(tmp_path: Path):
    procs = [start_holder(tmp_path, "shared", 20, tmp_path / f"shared{i}.json") for i in range(2)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    first, second = (json.loads((tmp_path / f"shared{i}.json").read_text()) for i in range(2))
    assert any(s1 < e2 and s2 < e1 for s1, e1 in first for s2, e2 in second)


SUITE = """
import pytest

@pytest.fixture(scope="module")
def built_once_a_module():
    return 1

@pytest.fixture(scope="session")
def SERVICE():
    return 2

@pytest.fixture
def uses_the_module_fixture(built_once_a_module):
    return built_once_a_module

def test_plain():
    pass

def test_direct(built_once_a_module):
    pass

def test_through_another_fixture(uses_the_module_fixture):
    pass

def test_service(SERVICE, built_once_a_module):
    pass
"""


def test_groups_follow_module_fixtures_and_services(pytester: pytest.Pytester):
    (service,) = GROUPED_FIXTURES
    items = pytester.getitems(SUITE.replace("SERVICE", service))
    groups = {item.name: xdist_group_of(item) for item in items}
    path = items[0].nodeid.split("::")[0]
    assert groups == {
        "test_plain": None,
        "test_direct": path,
        "test_through_another_fixture": path,
        "test_service": service,
    }


# Tests of a module-scoped fixture, of a service and plain ones, each logging which worker ran
# it; every test sleeps a little, so both workers take plain tests.
GROUPED_SUITE = """
import json, os, time
import pytest

def log(kind):
    with open(os.environ["GROUPS_LOG"], "a") as f:
        f.write(json.dumps([kind, os.environ["PYTEST_XDIST_WORKER"]]) + "\\n")

@pytest.fixture(scope="module")
def built_once_a_module():
    log("built")

@pytest.fixture(scope="session")
def SERVICE():
    return None

@pytest.mark.parametrize("i", range(4))
def test_module_fixture(built_once_a_module, i):
    time.sleep(0.1)
    log("module")

@pytest.mark.parametrize("i", range(4))
def test_service(SERVICE, i):
    time.sleep(0.1)
    log("service")

@pytest.mark.parametrize("i", range(8))
def test_plain(i):
    time.sleep(0.1)
    log("plain")
"""


def test_xdist_runs_each_group_on_one_worker_and_builds_its_module_fixture_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    # What `make test` runs: --dist loadgroup, with this module as the plugin that says the groups.
    (service,) = GROUPED_FIXTURES
    pytester.makeconftest('pytest_plugins = ["parallel"]')
    pytester.makepyfile(test_grouped=GROUPED_SUITE.replace("SERVICE", service))
    log = pytester.path / "groups.log"
    monkeypatch.setenv("GROUPS_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(SUPPORT_DIR), os.environ.get("PYTHONPATH", "")]))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup")
    result.assert_outcomes(passed=16)
    workers: dict[str, list[str]] = {}
    for kind, worker in (json.loads(line) for line in log.read_text().splitlines()):
        workers.setdefault(kind, []).append(worker)
    assert len(workers["built"]) == 1
    assert len(set(workers["module"])) == 1 and len(workers["module"]) == 4
    assert len(set(workers["service"])) == 1 and len(workers["service"]) == 4
    assert set(workers["plain"]) == {"gw0", "gw1"}  # the run was shared: the groups could have split


BUILDER = """
import os, sys, time
from pathlib import Path
from types import SimpleNamespace
from parallel import SHARED_DIR_KEY, built_once

def build(path):
    path.mkdir()
    time.sleep(0.3)  # long enough for the other workers to ask meanwhile
    with open(path.parent / "builds.log", "a") as log:
        log.write(f"{os.getpid()}\\n")

config = SimpleNamespace(workerinput={SHARED_DIR_KEY: sys.argv[1]})
print(built_once(config, "model", build, Path("unused")))
"""


def test_built_once_builds_once_for_every_worker_and_each_gets_the_same_path(tmp_path: Path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SUPPORT_DIR), os.environ.get("PYTHONPATH", "")]))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILDER, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    paths = {proc.communicate(timeout=120)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert paths == {str(tmp_path / "model")}
    (builder,) = (tmp_path / "builds.log").read_text().split()
    assert int(builder) in {proc.pid for proc in procs}


def test_built_once_outside_xdist_builds_where_the_test_asks(tmp_path: Path):
    target = tmp_path / "model"
    no_worker = SimpleNamespace()  # a pytest config outside xdist has no workerinput
    assert built_once(no_worker, "model", Path.mkdir, target) == target  # type: ignore[arg-type]
    assert target.is_dir()
