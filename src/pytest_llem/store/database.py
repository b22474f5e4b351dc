"""The results store's connection: which database, opening it, its schema version, transactions.

One store holds every run and experiment state. By default it is SQLite in the state dir
(`sqlite:///<state_dir>/llem.sqlite3`: WAL, so readers never wait for a writer, and a busy
timeout, so several sessions and xdist workers can write at once); `--llem-store URL` (ini
`llem_store`, env `PYTEST_LLEM_STORE`) names another, such as `postgresql://HOST/DB` for a
team's or a fleet's shared history. The URL's password never reaches a message: every URL
shown goes through `display_url`.

The schema is versioned by Alembic migrations shipped in `store/migrations/`. Opening a
store migrates an older one forward and refuses a newer one with one line. The check is
one query when the schema is current. A store with no tables yet gets the newest tables
directly from `store.schema`, stamped with their revision as Alembic stamps it: Alembic
itself is imported only to migrate (tests/store/test_schema.py checks that both ways build
the same tables).

SQLAlchemy is imported by this package only, and only once a session or the command uses
the store (`plugin` never imports `store` at start-up).
"""

from __future__ import annotations

import json
import re
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)

from pytest_llem.base.atomic import ensure_private_dir
from pytest_llem.base.redaction import redact_secrets
from pytest_llem.errors import ConfigError, LlemError, StorageError
from pytest_llem.results import as_utc as timestamp_as_utc

#: The store's file in the state dir when no URL is given.
DEFAULT_STORE_FILE = "llem.sqlite3"
#: The newest migration (`store/migrations/versions/`); a store at another revision is migrated.
SCHEMA_REVISION = "0004"
#: How long a SQLite writer waits for another one before it gives up with one line.
SQLITE_BUSY_TIMEOUT_S = 30.0
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class StoreUnavailable(ConfigError):
    """The store cannot be opened (no server, a wrong URL, a corrupt file, a newer schema): one
    line, exit 4."""


class StoreFailed(StorageError):
    """The store, opened, failed later (its server went down, its file was damaged): like a
    full disk, the session stops with one line and keeps its results in the report file."""


class StoreRefusedValue(LlemError, ValueError):
    """The store refused a value (a number out of its column's range): the document is bad,
    not the store."""


class CorruptRow(LlemError, ValueError):
    """A row of the store holds something this version cannot read (damaged compressed data,
    an unknown phase, a result that does not validate): skipped with one line where it can be."""


class StoreBusy(StorageError):
    """A write waited longer than the busy timeout for another writer's lock."""


class StoreFull(StorageError):
    """The store's disk is full: like a full state dir, the session stops with one line."""


def default_store_url(state_dir: Path) -> str:
    return f"sqlite:///{Path(state_dir).absolute() / DEFAULT_STORE_FILE}"


def display_url(url: str | URL) -> str:
    """The URL without its password (and without any secret the environment holds)."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
        text = parsed.render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy can parse: hide by its shape
        text = _URL_PASSWORD.sub(r"\1***@", str(url))
    return redact_secrets(text)


#: `scheme://user:password@`: what is hidden in a URL that cannot be parsed.
_URL_PASSWORD = re.compile(r"(://[^:/@]*:).*@")  # to the last '@': a password may hold one


def _engine_url(url: str) -> URL:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, the `postgres` extra
    return parsed


class Store:
    """One open store: its engine and short transactions over it.

    `read()` gives a connection in a transaction that takes no write lock; `write()` one that
    takes it at once (SQLite: BEGIN IMMEDIATE), so that two writers never deadlock on
    upgrading a read lock, and waits for it up to the busy timeout.
    """

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._writer = engine.execution_options(llem_write=True)

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a SQLite store (None for a server)."""
        return _sqlite_path(self.engine.url) if self.is_sqlite else None

    @property
    def shown_url(self) -> str:
        return display_url(self.url)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._errors(), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self._errors(), self._writer.begin() as conn:
            yield conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (DataError, IntegrityError) as exc:
            raise StoreRefusedValue(
                f"the store {self.shown_url} refused a value: {_first_line(exc)}"
            ) from None
        except OperationalError as exc:
            if "locked" in str(exc.orig) or "busy" in str(exc.orig):
                raise StoreBusy(
                    f"the store {self.shown_url} stayed locked by another writer for more than "
                    f"{SQLITE_BUSY_TIMEOUT_S:g} s; retry when the other session has finished"
                ) from None
            if "full" in str(exc.orig):
                raise StoreFull(f"the store {self.shown_url} cannot be written: {_first_line(exc)}") from None
            raise StoreFailed(f"the store {self.shown_url} failed: {_first_line(exc)}") from None
        except DBAPIError as exc:  # a damaged file ("database disk image is malformed"), a lost link
            raise StoreFailed(f"the store {self.shown_url} failed: {_first_line(exc)}") from None
        except OverflowError as exc:  # the driver's own check of an integer's range
            raise StoreRefusedValue(f"the store {self.shown_url} refused a value: {exc}") from None

    def dispose(self) -> None:
        self.engine.dispose()


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return redact_secrets(text[0] if text else type(orig).__name__)


_open_stores: dict[str, Store] = {}
_open_lock = threading.Lock()


def open_store(url: str) -> Store:
    """The store at `url`, migrated to this version's schema; one per URL and process."""
    with _open_lock:
        store = _open_stores.get(url)
        if store is not None and (not store.is_sqlite or _sqlite_path(store.engine.url).exists()):
            return store
        store = _open(url)
        _open_stores[url] = store
        return store


def open_default_store(state_dir: Path, url: str | None = None) -> Store:
    """The store named by `url`, or the state dir's own SQLite file."""
    return open_store(url or default_store_url(state_dir))


def close_stores() -> None:
    """Dispose of every engine this process opened (before forking, or in tests)."""
    with _open_lock:
        for store in _open_stores.values():
            store.dispose()
        _open_stores.clear()


def _sqlite_path(url: URL) -> Path:
    return Path(url.database or "")


def _open(url: str) -> Store:
    try:
        engine_url = _engine_url(url)
        store_is_file = engine_url.get_backend_name() == "sqlite"
        server = f"{engine_url.host or 'localhost'}:{engine_url.port or 5432}"
        where = "" if store_is_file else f" (server {server})"
    except (ArgumentError, ValueError):
        raise StoreUnavailable(
            f"{display_url(url)!r} is not a database URL; check the URL given by --llem-store, "
            "ini llem_store or PYTEST_LLEM_STORE"
        ) from None
    engine = _sqlite_engine(engine_url) if store_is_file else _server_engine(engine_url)
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:  # no server, a refused login, a file that is not a database
        engine.dispose()
        raise StoreUnavailable(
            f"cannot open the store {display_url(url)}{where}: {_first_line(exc)}; "
            "check the URL given by --llem-store, ini llem_store or PYTEST_LLEM_STORE"
        ) from None
    store = Store(url, engine)
    try:
        _migrate(store)
    except (StorageError, StoreRefusedValue) as exc:  # a file damaged beyond its first page
        engine.dispose()
        raise StoreUnavailable(f"cannot open the store: {exc}") from None
    except BaseException:
        engine.dispose()
        raise
    return store


def _sqlite_engine(url: URL) -> Engine:
    path = _sqlite_path(url)
    if url.database in (None, "", ":memory:") or url.database.startswith("file:"):
        # In memory, the states and runs would be gone when the session ends.
        raise StoreUnavailable(
            f"{display_url(url)!r}: a SQLite store needs a file: sqlite:///RELATIVE/PATH or "
            "sqlite:////ABSOLUTE/PATH, not memory"
        )
    try:
        ensure_private_dir(path.parent) if not path.parent.exists() else None
    except OSError as exc:
        raise StoreUnavailable(f"cannot create the folder of {path}: {exc.strerror or exc}") from None
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "isolation_level": None})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
        cursor.close()

    # The driver's own transaction handling is off (isolation_level=None): these BEGINs are ours.
    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("llem_write") else "BEGIN")

    return engine


def _server_engine(url: URL) -> Engine:
    from pytest_llem.extras import import_extra

    if url.drivername == "postgresql+psycopg":
        import_extra("psycopg", "postgres", "a postgresql:// store", StoreUnavailable)
    return sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})


#: Alembic's record of a store's revision, as Alembic creates it (its name for the key too).
_ALEMBIC_VERSION = sa.Table(
    "alembic_version",
    sa.MetaData(),
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def _migrate(store: Store) -> None:
    """Bring the schema to `SCHEMA_REVISION`, or refuse a store written by a newer version."""
    current = _current_revision(store)
    if current == SCHEMA_REVISION or (current is None and _create_newest(store)):
        return
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    known = {rev.revision for rev in ScriptDirectory.from_config(config).walk_revisions()}
    if current is not None and current not in known:
        raise StoreUnavailable(
            f"the store {store.shown_url} has schema version {current}, newer than this pytest-llem "
            f"knows ({SCHEMA_REVISION}); upgrade pytest-llem, or use another store with --llem-store"
        )
    with store.write() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, SCHEMA_REVISION)


def _create_newest(store: Store) -> bool:
    """Give a store without any table the newest schema, as the migrations would leave it,
    without importing Alembic: a new SQLite store's first open took a tenth of a CPU-second
    more with them, in every new state dir. False where the store holds tables (those of an
    older pytest-llem, or someone else's): the migrations handle those, or refuse them."""
    from pytest_llem.store import schema

    with store.write() as conn:  # SQLite: BEGIN IMMEDIATE, so a second opener waits, then sees them
        if sa.inspect(conn).get_table_names():
            return False
        schema.metadata.create_all(conn, checkfirst=False)
        _ALEMBIC_VERSION.create(conn, checkfirst=False)
        conn.execute(_ALEMBIC_VERSION.insert().values(version_num=SCHEMA_REVISION))
    return True


def create_at_revision(url: str, revision: str) -> None:
    """Create the store at an older schema revision (how tests build a store to migrate)."""
    from alembic import command
    from alembic.config import Config

    engine_url = _engine_url(url)
    engine = (
        _sqlite_engine(engine_url)
        if engine_url.get_backend_name() == "sqlite"
        else _server_engine(engine_url)
    )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with Store(url, engine).write() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def _current_revision(store: Store) -> str | None:
    with store.read() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def upsert(
    conn: Connection,
    table: sa.Table,
    values: dict[str, Any] | list[dict[str, Any]],
    keep_if_null: tuple[str, ...] = (),
) -> None:
    """Insert rows or replace the ones with their primary keys, atomically on both databases
    (INSERT ... ON CONFLICT, which SQLite and PostgreSQL share); columns in `keep_if_null`
    keep their stored value when the new one is None. A list of rows (all with the same
    columns) is one statement executed for many rows."""
    rows = values if isinstance(values, list) else [values]
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(table)
    keys = [column.name for column in table.primary_key.columns]
    updates: dict[str, Any] = {
        name: sa.func.coalesce(statement.excluded[name], table.c[name])
        if name in keep_if_null
        else statement.excluded[name]
        for name in rows[0]
        if name not in keys
    }
    conn.execute(statement.on_conflict_do_update(index_elements=keys, set_=updates), rows)


def as_utc(value: datetime) -> datetime:
    """SQLite keeps no time zone: every time is stored, and read back, as UTC."""
    return timestamp_as_utc(value).astimezone(timezone.utc)


def pack(document: Any) -> bytes:
    """JSON, zlib-compressed: how bulky parts are kept."""
    return pack_text(json.dumps(document, separators=(",", ":")))


def pack_text(json_text: str) -> bytes:
    """`pack` for a document that is JSON text already (a report as it was dumped and redacted)."""
    return zlib.compress(json_text.encode(), 6)


def unpack(blob: bytes) -> Any:
    """A document `pack` wrote; `CorruptRow` if the bytes are not one."""
    try:
        return json.loads(zlib.decompress(blob))
    except (zlib.error, TypeError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise CorruptRow(f"damaged compressed data ({exc})") from None


__all__ = [
    "CorruptRow",
    "SQLAlchemyError",
    "Store",
    "StoreFailed",
    "StoreRefusedValue",
    "as_utc",
    "StoreBusy",
    "StoreUnavailable",
    "default_store_url",
    "display_url",
    "open_default_store",
    "open_store",
    "pack",
    "pack_text",
    "unpack",
]
