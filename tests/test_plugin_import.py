"""What importing the plugin loads: pytest imports it in every run, `--llem` or not."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Each of these costs tens of milliseconds (or more) at start-up and is needed only once a
# session actually runs benchmarks.
HEAVY = ["pydantic", "scipy", "numpy", "psutil", "platformdirs", "pynvml", "torch", "matplotlib"]
SESSION_MODULES = [
    "pytest_llem.session",
    "pytest_llem.config",
    "pytest_llem.energy.meter",
    "pytest_llem.gating.compare",
]

LOADED_AFTER = """
import json, sys
import pytest
before = set(sys.modules)
{statement}
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def modules_loaded_by(statement: str) -> set[str]:
    completed = subprocess.run(
        [sys.executable, "-c", LOADED_AFTER.format(statement=statement)],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(completed.stdout))


def test_importing_the_plugin_loads_nothing_heavy():
    loaded = modules_loaded_by("import pytest_llem.plugin")
    assert "pytest_llem.plugin" in loaded  # the check can see what it looks for
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}
    assert not loaded & set(SESSION_MODULES)


@pytest.mark.parametrize("statement", ["import pytest_llem.session", "import pytest_llem.cli"])
def test_a_session_or_the_command_loads_the_models(statement):
    # The other side of the check above: these do need pydantic, so the probe is not blind.
    assert "pydantic" in modules_loaded_by(statement)
