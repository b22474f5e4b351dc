"""The optional heavy dependencies (extras): importing one, or saying which extra to install.

Inference and measurement libraries (torch, vLLM, Zeus, CodeCarbon) are only ever imported
this way inside an experiment's child, so the pytest process never loads them; matplotlib,
for the HTML report, is imported in whichever process renders it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from pytest_llem.errors import ConfigError, LlemError


def install_hint(extra: str) -> str:
    """How to add `extra` to an installed pytest-llem. It is not on PyPI, so a bare
    `pip install 'pytest-llem[extra]'` would look for a package that is not there."""
    return (
        f"reinstall pytest-llem with it from where you installed it, e.g. "
        f"pip install 'path/to/pytest-llem[{extra}]' or 'pytest-llem[{extra}] @ git+URL'"
    )


def import_extra(module: str, extra: str, purpose: str, error: type[LlemError] = ConfigError) -> ModuleType:
    """Import `module`, or raise `error` saying how to install `extra`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise error(f"{purpose} needs the {extra!r} extra ({exc}): {install_hint(extra)}") from None
