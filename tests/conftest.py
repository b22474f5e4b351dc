from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

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


FAKE_NVML_DIR = Path(__file__).parent / "fake_nvml"


def load_fake_nvml() -> ModuleType:
    """A fresh simulated `pynvml` (its state is module-global, so one per test)."""
    spec = importlib.util.spec_from_file_location("fake_pynvml", FAKE_NVML_DIR / "pynvml.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The simulated NVML, used by pytest-llem in this process instead of the real library."""
    module = load_fake_nvml()
    monkeypatch.setattr("pytest_llem.energy.nvml._import_pynvml", lambda: module)
    return module
