from __future__ import annotations

from pathlib import Path

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
    session = BenchmarkSession(LlemSettings(enabled=True, state_dir=state_dir))
    session.start()
    return session


@pytest.fixture
def make_config():
    return build_config
