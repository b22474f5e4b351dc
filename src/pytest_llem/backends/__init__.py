"""Built-in inference backends: workloads that a config names with `backend=` instead of code.

Each is a `module:function` workload run in the experiment's child like any other, so the
spine's isolation, teardown and measurement apply unchanged. Heavy libraries are imported
inside the workload; a missing one fails the experiment with the extra to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from pytest_llem.config import ExperimentConfig

BACKEND_WORKLOADS: dict[str, str] = {
    "pytorch": "pytest_llem.backends.pytorch:run",
    "vllm": "pytest_llem.backends.vllm:run",
}
DEFAULT_MAX_NEW_TOKENS = 32

#: Environment a backend needs in its isolated child, set before the child starts (vLLM reads
#: these when it is imported); the user's environment and `config.env` win over them.
BACKEND_ENV_DEFAULTS: dict[str, dict[str, str]] = {
    "vllm": {
        # One process: the engine core stays inside the experiment's group, torch.compile off
        # so the first measured batch is not a compilation.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
        "TORCH_COMPILE_DISABLE": "1",
    },
}

# scenario="serving" runs this instead: the server named by `server=` runs the model.
SERVING_WORKLOAD = "pytest_llem.backends.serving.workload:run"
#: Under the state dir: the log of the server a serving case starts, `<experiment_id>.log`;
#: the server writes it, the parent scrubs it of secrets once the group is gone.
SERVER_LOG_DIR = "servers"


def server_log_path(state_dir: Path, experiment_id: str) -> Path:
    return state_dir / SERVER_LOG_DIR / f"{experiment_id}.log"


def builtin_workload(config: ExperimentConfig) -> str | None:
    """The workload a config names without code: the serving load, or a backend; else None."""
    if config.scenario == "serving":
        from pytest_llem.config import check_serving_complete

        check_serving_complete(config)
        return SERVING_WORKLOAD
    return BACKEND_WORKLOADS[config.backend] if config.backend is not None else None
