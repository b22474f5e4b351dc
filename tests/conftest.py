from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from fake_nvml import load_fake_nvml
from shared_preload import shared_preloaded_interpreter as start_shared_interpreter
from slurm_cluster import slurm_cluster  # noqa: F401 - the session's Slurm cluster, a fixture

from pytest_llem.config import build_config
from pytest_llem.isolation.preload import PRELOAD_AUTO
from pytest_llem.session import BenchmarkSession
from pytest_llem.settings import LlemSettings
from pytest_llem.store.database import close_stores, default_store_url
from pytest_llem.testing import build_tiny_model

# torch takes a thread per core by default. With four test workers on two cores its threads
# spin waiting for partners that are not running: under such load the README's first benchmark
# ran 13 times slower (50 tokens/s against 656 with one thread, twice the CPU time). The tests
# check what is computed and counted, not how fast, so every torch child they start gets one
# thread unless the environment says otherwise; a test that needs the default count must unset it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The pytest sessions the tests start (a few hundred `pytest --llem` runs) leave out the pytest
# plugins of anyio and typeguard, which dependencies install and no suite of ours uses: loading
# them took 55 ms of the 0.62 CPU-s of a one-case session's pytest process.
os.environ.setdefault("PYTEST_ADDOPTS", "-p no:anyio -p no:typeguard")

#: A real PostgreSQL server for the store's tests (started once, when first asked for), and
#: how the tests share the machine under pytest-xdist (`make test`).
pytest_plugins = ["postgres_server", "parallel"]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, state_dir: Path) -> Iterator[str]:
    """Each kind of results store, empty: the state dir's SQLite file, or a fresh database on
    the tests' PostgreSQL server (skipped, with the reason, where that cannot start)."""
    if request.param == "sqlite":
        yield default_store_url(state_dir)
    else:
        yield request.getfixturevalue("postgres_server").new_database()
    close_stores()  # each test's engine and its connections go with it


@pytest.fixture
def preload() -> str:
    """`--llem-preload` for `bench`; parametrise `preload` over helpers.START_METHODS to run both."""
    return "auto"


#: A test whose meaning depends on its `bench` owning a fresh preloaded interpreter (what it
#: imported, learnt or refused, how many started, its environment, its death, the processes it
#: leaves) is marked with it: its session starts its own instead of sharing this process's.
OWN_PRELOAD_MARK = "own_preloaded_interpreter"


@pytest.fixture(scope="session")
def shared_preloaded_interpreter() -> Iterator[str | None]:
    """The address of one preloaded interpreter for every `bench` session of this test process
    (so of each xdist worker; tests/support/shared_preload.py): what one test's children
    imported (torch, transformers) stays imported for the next test's forks."""
    with start_shared_interpreter() as address:
        yield address


@pytest.fixture
def bench(request: pytest.FixtureRequest, state_dir: Path, preload: str) -> Iterator[BenchmarkSession]:
    """A started benchmark session, as the plugin would create it, with no pytest around it.
    Under `preload="auto"` it forks from this test process's shared preloaded interpreter, as
    an xdist worker's session does from its controller's (unless the test is marked
    `own_preloaded_interpreter`)."""
    # energy="none": the spine's tests must not depend on which meters this machine can read;
    # no minimum window and no host_busy limit: nor on how long their workloads last or what
    # else runs on this machine (tests/isolation/test_worker.py checks both).
    session = BenchmarkSession(
        LlemSettings(
            enabled=True,
            state_dir=state_dir,
            energy="none",
            preload=preload,
            min_window_s=0.0,
            host_busy_share=1.0,
        )
    )
    if preload == PRELOAD_AUTO and request.node.get_closest_marker(OWN_PRELOAD_MARK) is None:
        session.launcher.attach_preloaded(request.getfixturevalue("shared_preloaded_interpreter"))
    session.start()
    yield session
    session.close_preloaded()


@pytest.fixture
def make_config():
    return build_config


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The simulated NVML, used by pytest-llem in this process instead of the real library."""
    module = load_fake_nvml()
    monkeypatch.setattr("pytest_llem.energy.nvml._import_pynvml", lambda: module)
    return module


@pytest.fixture(scope="session")
def tiny_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 built locally once per session (needs the torch extra; skips without it)."""
    if importlib.util.find_spec("transformers") is None:  # find, not import: keep torch out of here
        pytest.skip("the torch extra (torch, transformers) is not installed")
    # Built once for all of an xdist run's workers: a fresh interpreter importing torch is slow.
    # (Imported here: `parallel` is a plugin of this conftest's, loaded after it is imported.)
    from parallel import built_once

    return built_once(
        request.config,
        "tiny-gpt2",
        lambda path: build_tiny_model(path, arch="gpt2", seed=0),
        tmp_path_factory.mktemp("models") / "tiny-gpt2",
    )
