"""pytest-llem: LLM inference energy benchmarks as ordinary pytest tests.

The names exported here are what a benchmark author touches: the context a workload
receives in its isolated child, and the validated config and result models.
"""

from pytest_llem.config import ExperimentConfig
from pytest_llem.context import ExperimentContext
from pytest_llem.results import ExperimentResult, QualityWarning

__version__ = "0.1.0"

__all__ = [
    "ExperimentConfig",
    "ExperimentContext",
    "ExperimentResult",
    "QualityWarning",
    "__version__",
]
