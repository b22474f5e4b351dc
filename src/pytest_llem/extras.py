"""The optional heavy dependencies (extras): importing one, or saying which extra to install.

Inference and measurement libraries (torch, vLLM, Zeus, CodeCarbon) are only ever imported
this way inside an experiment's child, so the pytest process never loads them; matplotlib,
for the HTML report, is imported in whichever process renders it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from pytest_llem.errors import ConfigError, LlemError


def import_extra(module: str, extra: str, purpose: str, error: type[LlemError] = ConfigError) -> ModuleType:
    """Import `module`, or raise `error` naming the pip command that installs `extra`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise error(
            f"{purpose} needs the {extra!r} extra: pip install 'pytest-llem[{extra}]' ({exc})"
        ) from None
