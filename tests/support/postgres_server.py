"""A real PostgreSQL server for the tests: Debian's binaries, a temp cluster, a free local port.

PostgreSQL refuses to run as root (CI runs as root), so as root the cluster belongs to the
`postgres` user the Debian package creates and its commands run through `runuser`. The
server trusts local connections (it listens on 127.0.0.1 only, for the test session) and
is stopped and removed at the end. Where it cannot start, tests that need it skip with why.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_llem.extras import install_hint

POSTGRES_USER = "postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    port: int
    bin_dir: Path
    data: Path
    log: Path
    options: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{POSTGRES_USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database's URL: each test gets its own store."""
        import psycopg

        name = f"llem_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={POSTGRES_USER} dbname=postgres") as conn:
            conn.autocommit = True
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def start(self) -> subprocess.CompletedProcess[str]:
        command = [
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            self.options,
            "-l",
            str(self.log),
        ]
        return subprocess.run(_as_owner([*command, "-w", "start"]), **_RUN)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: its sessions are ended, as when a database host goes down)."""
        subprocess.run(
            _as_owner([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "stop"]), **_RUN
        )


_RUN: dict = {"capture_output": True, "text": True, "timeout": 120}


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _as_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", POSTGRES_USER, "--", *command] if os.geteuid() == 0 else command


@contextmanager
def started_postgres() -> Iterator[PostgresServer]:
    """A new cluster on a free port, removed at the end (skips the test where it cannot start)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip(f"psycopg is not installed: {install_hint('postgres')}")
    bin_dir = _binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run PostgreSQL as")
    # Under /tmp, not pytest's root-only temp folders: the postgres user must reach it.
    base = Path(tempfile.mkdtemp(prefix="llem-pg-"))
    if os.geteuid() == 0:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    port = free_port()
    server = PostgresServer(
        port=port,
        bin_dir=bin_dir,
        data=base / "data",
        log=base / "server.log",
        options=f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
    )
    try:
        init = subprocess.run(
            _as_owner(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(server.data),
                    "-U",
                    POSTGRES_USER,
                    "--auth=trust",
                    "--no-sync",
                ]
            ),
            **_RUN,
        )
        if init.returncode != 0:
            pytest.skip(f"initdb failed: {(init.stderr or init.stdout).strip().splitlines()[-1:]}")
        start = server.start()
        if start.returncode != 0:
            tail = server.log.read_text()[-500:] if server.log.exists() else start.stderr
            pytest.skip(f"PostgreSQL did not start: {tail.strip()}")
        yield server
    finally:
        if server.data.exists():
            server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with started_postgres() as server:
        yield server


@pytest.fixture
def own_postgres_server() -> Iterator[PostgresServer]:
    """A server of the test's own, which it may stop and start (the shared one must stay up)."""
    with started_postgres() as server:
        yield server
