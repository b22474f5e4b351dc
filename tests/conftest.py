from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from fake_nvml import load_fake_nvml

from pytest_llem.config import build_config
from pytest_llem.session import BenchmarkSession
from pytest_llem.settings import LlemSettings


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def bench(state_dir: Path) -> BenchmarkSession:
    """A started benchmark session, as the plugin would create it, with no pytest around it."""
    # energy="none": the spine's tests must not depend on which meters this machine can read.
    session = BenchmarkSession(LlemSettings(enabled=True, state_dir=state_dir, energy="none"))
    session.start()
    return session


@pytest.fixture
def make_config():
    return build_config


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The simulated NVML, used by pytest-llem in this process instead of the real library."""
    module = load_fake_nvml()
    monkeypatch.setattr("pytest_llem.energy.nvml._import_pynvml", lambda: module)
    return module
