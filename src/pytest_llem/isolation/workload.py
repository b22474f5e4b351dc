"""Naming a workload so a fresh interpreter can import it, and importing it there.

A workload crosses the process boundary as a `"module:qualname"` string plus the import
path of the parent, never as a pickle. Only what a fresh interpreter can import by name is
accepted: module-level functions, not lambdas, closures or nested functions.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pytest_llem.errors import WorkloadError

Workload = Callable[..., Any]


class WorkloadSpec(BaseModel):
    """Where the child finds the workload: `module:qualname`, and the file as a fallback."""

    ref: str
    module_file: str | None = None


def describe_workload(workload: Workload | str) -> WorkloadSpec:
    """Check that `workload` is importable by name in another process and say how."""
    if isinstance(workload, str):
        module, sep, qualname = workload.partition(":")
        if not sep or not module or not qualname:
            raise WorkloadError(
                f"workload {workload!r} must be 'module:function', e.g. 'mybench.workloads:generate'"
            )
        return WorkloadSpec(ref=workload)
    if not callable(workload):
        raise WorkloadError(f"workload must be a function or a 'module:function' string, not {workload!r}")
    name = getattr(workload, "__qualname__", None) or repr(workload)
    module = getattr(workload, "__module__", None)
    if name == "<lambda>" or name.endswith(".<lambda>"):
        raise WorkloadError(
            "workload is a lambda; the isolated child imports workloads by name, so define it "
            "with `def` at module level"
        )
    if "<locals>" in name or getattr(workload, "__closure__", None):
        raise WorkloadError(
            f"workload {name} is a nested function or closure; the isolated child imports "
            "workloads by name, so move it to module level and pass settings through params="
        )
    if not inspect.isfunction(workload) or module is None or module == "__main__":
        raise WorkloadError(
            f"workload {name!r} must be a module-level function of an importable module "
            "(or a 'module:function' string)"
        )
    source = inspect.getsourcefile(workload)
    return WorkloadSpec(ref=f"{module}:{name}", module_file=source)


def load_workload(spec: WorkloadSpec) -> Workload:
    """Import the workload in this (child) process."""
    module_name, _, qualname = spec.ref.partition(":")
    module_file = Path(spec.module_file) if spec.module_file else None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        if module_file is None or not module_file.is_file():
            raise
        module = _import_from_file(module_name, module_file)
    else:
        # Another module of the same name (a second conftest, say) may shadow the right one.
        if module_file is not None and module_file.is_file() and not _same_file(module, module_file):
            module = _import_from_file(module_name, module_file)
    target: Any = module
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise WorkloadError(
                f"workload {spec.ref!r}: {module_name} has no attribute {qualname!r}"
            ) from None
    if not callable(target):
        raise WorkloadError(f"workload {spec.ref!r} is not callable")
    return target


def _same_file(module: Any, path: Path) -> bool:
    loaded = getattr(module, "__file__", None)
    return loaded is not None and Path(loaded).resolve() == path.resolve()


def _import_from_file(module_name: str, path: Path) -> Any:
    """Fallback for test modules pytest imported under a name the child cannot resolve."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise WorkloadError(f"cannot import workload module {module_name!r} from {path.name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
