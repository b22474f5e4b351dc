"""Which results store a session or a command uses: the URL from the option, the environment
or the ini file, checked for a scheme the store opens; none of them: the state dir's own SQLite
file (`database.default_store_url`).

Runs in the pytest process (where `settings` reads it at start-up) and the `pytest-llem`
command. Imports no database library: only the scheme is checked here, the store checks the
rest when it opens the URL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pytest_llem.errors import ConfigError

STORE_ENV = "PYTEST_LLEM_STORE"
#: The URL schemes the results store opens (psycopg 3 is the driver for both PostgreSQL forms).
STORE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")


def checked_store_url(raw: str, source: str) -> str:
    """`raw` if its scheme is one the store opens; else a one-line error naming `source`."""
    scheme, sep, _rest = raw.partition("://")
    if not sep or scheme not in STORE_SCHEMES:
        raise ConfigError(
            f"{source}: a store URL starts with sqlite:/// or postgresql:// "
            "(sqlite:////abs/path/llem.sqlite3, postgresql://USER@HOST:PORT/DB)"
        )
    return raw


def store_url_from(
    option: str | None,
    option_name: str,
    environ: Mapping[str, str] | None = None,
    ini: str | None = None,
) -> str | None:
    """The first URL given, option, then `PYTEST_LLEM_STORE`, then the ini value, checked;
    None when none is: the caller opens the state dir's own store."""
    environ = os.environ if environ is None else environ
    for raw, source in ((option, option_name), (environ.get(STORE_ENV), STORE_ENV), (ini, "ini llem_store")):
        if raw:
            return checked_store_url(raw, source)
    return None
