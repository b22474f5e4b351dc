"""pytest-llem: LLM inference energy benchmarks as ordinary pytest tests.

The names exported here are what a benchmark author touches: the context a workload
receives in its isolated child, and the validated config and result models. They load
lazily, so the small supervisor process that leads each experiment's group starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ExperimentConfig": "pytest_llem.config",
    "ExperimentContext": "pytest_llem.context",
    "ExperimentResult": "pytest_llem.results",
    "QualityWarning": "pytest_llem.results",
}

__all__ = ["ExperimentConfig", "ExperimentContext", "ExperimentResult", "QualityWarning", "__version__"]

if TYPE_CHECKING:
    from pytest_llem.config import ExperimentConfig
    from pytest_llem.context import ExperimentContext
    from pytest_llem.results import ExperimentResult, QualityWarning


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pytest_llem' has no attribute {name!r}")
