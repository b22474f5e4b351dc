"""The stand-in for vLLM's public API (`vllm/` here), and loading it without shadowing a real vLLM.

Put this folder first on a child's PYTHONPATH and `import vllm` finds the stand-in (that is
how the adapter's contract tests run it); in-process, `load_fake_vllm()` gives a fresh copy
under another name.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

FAKE_VLLM_DIR = Path(__file__).parent


def load_fake_vllm() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fake_vllm_api", FAKE_VLLM_DIR / "vllm" / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module
