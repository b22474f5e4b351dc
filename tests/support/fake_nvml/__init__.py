"""The simulated NVML (`pynvml.py` here), and loading it without shadowing a real pynvml.

Put this folder first on PYTHONPATH and `import pynvml` finds the simulation (that is how
child processes get it); in-process, `load_fake_nvml()` gives a fresh copy under another name.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

FAKE_NVML_DIR = Path(__file__).parent


def load_fake_nvml() -> ModuleType:
    """A fresh simulated `pynvml` (its state is module-global, so one per test)."""
    spec = importlib.util.spec_from_file_location("fake_pynvml", FAKE_NVML_DIR / "pynvml.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module
