"""Keeps secrets and machine paths out of everything pytest-llem writes to disk.

Reports and states travel: they are attached to CI runs and shared between machines.
Tracebacks and error messages carry absolute paths and, if a workload is careless, token
values. `redact_text` is applied to every free-text field before it is persisted.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

# Environment variables whose values must never reach a file.
SECRET_ENV_PATTERN = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|CREDENTIAL)", re.I)
REDACTED = "***"
# Shorter values are too likely to occur by accident in ordinary text.
_MIN_SECRET_LENGTH = 6


def is_secret_name(name: str) -> bool:
    return bool(SECRET_ENV_PATTERN.search(name))


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if is_secret_name(k) and len(v) >= _MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact_text(
    text: str,
    *,
    root: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Replace secret values with ***, `root` with `.`, the home folder with `~` and the
    temporary folder with `$TMPDIR` (where tests and CI keep models and projects)."""
    for value in secret_values(environ):
        text = text.replace(value, REDACTED)
    if root is not None:
        text = _replace_path(text, str(root), ".")
    text = _replace_path(text, str(Path.home()), "~")
    return _replace_path(text, tempfile.gettempdir(), "$TMPDIR")


def _replace_path(text: str, path: str, replacement: str) -> str:
    """Replace `path` where it is a whole path prefix: /home/me/x, not /home/meg."""
    if path in ("", "/"):
        return text
    return re.sub(re.escape(path.rstrip("/")) + r"(?![\w.-])", replacement, text)
