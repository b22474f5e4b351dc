"""Built-in inference backends: workloads that a config names with `backend=` instead of code.

Each is a `module:function` workload run in the experiment's child like any other, so the
spine's isolation, teardown and measurement apply unchanged. Heavy libraries are imported
inside the workload; a missing one fails the experiment with the extra to install.
"""

from __future__ import annotations

BACKEND_WORKLOADS: dict[str, str] = {
    "pytorch": "pytest_llem.backends.pytorch:run",
    "vllm": "pytest_llem.backends.vllm:run",
}
DEFAULT_MAX_NEW_TOKENS = 32
