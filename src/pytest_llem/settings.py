"""Session-wide settings, resolved from the command line, the environment and ini keys.

Precedence, highest first: command-line option, environment variable (state dir only),
`[tool.pytest.ini_options]` key, built-in default. Kept free of pytest so a CLI can reuse it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from pytest_llem.errors import ConfigError

STATE_DIR_ENV = "PYTEST_LLEM_STATE_DIR"


def default_state_dir() -> Path:
    return platformdirs.user_state_path("pytest-llem")


@dataclass(frozen=True)
class LlemSettings:
    enabled: bool = False
    state_dir: Path = Path()
    timeout_s: float | None = None
    resume: bool = False
    json_path: Path | None = None


def _first(*values: object) -> object:
    for value in values:
        if value not in (None, ""):
            return value
    return None


def parse_timeout(raw: object, source: str) -> float | None:
    if raw in (None, ""):
        return None
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: expected a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{source}: must be more than 0 seconds, got {raw!r}")
    return value


def resolve_settings(
    cli: Mapping[str, object],
    ini: Mapping[str, object],
    environ: Mapping[str, str] | None = None,
) -> LlemSettings:
    """Combine option values (`None` when not given) into settings, validating each."""
    environ = os.environ if environ is None else environ
    state_dir = _first(cli.get("state_dir"), environ.get(STATE_DIR_ENV), ini.get("state_dir"))
    cli_timeout = parse_timeout(cli.get("timeout"), "--llem-timeout")
    ini_timeout = parse_timeout(ini.get("timeout"), "ini llem_timeout")
    json_path = _first(cli.get("json"), ini.get("json"))
    return LlemSettings(
        enabled=bool(cli.get("enabled") or ini.get("enabled")),
        state_dir=Path(str(state_dir)).expanduser() if state_dir else default_state_dir(),
        timeout_s=cli_timeout if cli_timeout is not None else ini_timeout,
        resume=bool(cli.get("resume") or ini.get("resume")),
        json_path=Path(str(json_path)) if json_path else None,
    )
