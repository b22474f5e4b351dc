"""Opening a results store: its schema version (migrated forward, a newer one refused), SQLite's
WAL and busy timeout, and URLs whose passwords never reach a message."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from postgres_server import free_port
from sample_reports import GPT2, make_entry, make_report, make_result

from pytest_llem.fingerprints.source import SourceInfo
from pytest_llem.store import database
from pytest_llem.store.database import (
    SCHEMA_REVISION,
    StoreBusy,
    StoreUnavailable,
    close_stores,
    create_at_revision,
    display_url,
    open_store,
)
from pytest_llem.store.history import RunHistory
from pytest_llem.store.state import StateManager


def revision_of(url: str) -> str:
    with open_store(url).read() as conn:
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def store_run_as_an_older_revision(store_url: str, report, lacking: str, field: str, **columns: str) -> None:
    """Write `report` as an older schema revision stored it: its `runs` table has no `lacking`
    column and the report's JSON no `field`; `columns` are values of the other optional columns."""
    values = {"run_id": report.run_id, "name": report.name, "machine_id": "h100x1", **columns}
    engine = sa.create_engine(database._engine_url(store_url))
    with engine.begin() as conn:
        assert lacking not in {column["name"] for column in sa.inspect(conn).get_columns("runs")}
        names = [*values, "started_at", "finished_at", "outcome", "can_be_baseline"]
        names += ["experiment_count", "measured_count", "failed_count", "summary_json"]
        conn.execute(
            sa.text(
                f"INSERT INTO runs ({', '.join(names)}) VALUES ({', '.join(f':{n}' for n in values)}, "
                ":at, :at, 'passed', TRUE, 1, 1, 0, :summary)"
            ),
            {
                **values,
                "at": report.started_at,
                "summary": report.model_dump_json(exclude={"experiments", field}),
            },
        )
        conn.execute(
            sa.text("INSERT INTO run_reports (run_id, report_z) VALUES (:run_id, :blob)"),
            {"run_id": report.run_id, "blob": database.pack_text(report.model_dump_json(exclude={field}))},
        )
    engine.dispose()


def test_a_new_store_gets_the_newest_schema(store_url: str):
    assert revision_of(store_url) == SCHEMA_REVISION
    with open_store(store_url).read() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    assert {"runs", "run_reports", "run_experiments", "experiments", "experiment_parts"} <= tables


def test_an_older_store_is_migrated_forward_keeping_its_runs(store_url: str):
    create_at_revision(store_url, "0001")
    report = make_report("old-run", [make_entry(GPT2, make_result([1.0]))])
    report.experiments[0].experiment_id = "exp-1"
    summary = json.loads(report.model_dump_json())
    engine = sa.create_engine(database._engine_url(store_url))
    with engine.begin() as conn:  # a run as revision 0001 stored it
        conn.execute(
            sa.text(
                "INSERT INTO runs (run_id, name, machine_id, started_at, outcome, can_be_baseline, "
                "experiment_count, measured_count, failed_count, summary_json) VALUES "
                "('old-run', NULL, 'h100x1', :at, 'passed', TRUE, 1, 1, 0, :summary)"
            ),
            {"at": report.started_at, "summary": json.dumps(summary)},
        )
    engine.dispose()

    assert revision_of(store_url) == SCHEMA_REVISION
    with open_store(store_url).read() as conn:
        links = conn.exec_driver_sql("SELECT run_id, experiment_id FROM run_experiments").all()
    assert [tuple(link) for link in links] == [("old-run", "exp-1")]


def test_a_store_without_projects_is_migrated_and_its_runs_stay_readable_as_legacy(state_dir, store_url):
    create_at_revision(store_url, "0002")
    old = make_report("old-run", [make_entry(GPT2, make_result([1.0]))], name="main")
    store_run_as_an_older_revision(store_url, old, lacking="project", field="project")

    history = RunHistory(state_dir, store_url)
    assert revision_of(store_url) == SCHEMA_REVISION
    (listed,) = history.summaries()
    assert (listed.run_id, listed.project) == ("old-run", None)
    assert history.find("main").project is None
    assert history.latest("h100x1", project="beta") is None  # never a project's default baseline
    assert history.latest_elsewhere("h100x1", "beta").run_id == "old-run"
    history.save(make_report("new-run", [], days_after_t0=1).model_copy(update={"project": "beta"}))
    assert [(run.run_id, run.project) for run in history.summaries()] == [
        ("old-run", None),
        ("new-run", "beta"),
    ]


def test_a_store_without_commits_is_migrated_and_its_runs_read_without_one(state_dir, store_url):
    create_at_revision(store_url, "0003")
    old = make_report("old-run", [make_entry(GPT2, make_result([1.0]))], name="main")
    store_run_as_an_older_revision(store_url, old, lacking="git_commit", field="source", project="alpha")

    history = RunHistory(state_dir, store_url)
    assert revision_of(store_url) == SCHEMA_REVISION
    (listed,) = history.summaries()
    assert (listed.run_id, listed.commit) == ("old-run", None)
    assert history.find("main").source is None
    newer = make_report("new-run", [], days_after_t0=1).model_copy(
        update={"source": SourceInfo(commit="0123456789abcdef" * 2 + "01234567", dirty=True)}
    )
    history.save(newer)
    assert [run.commit for run in history.summaries()] == [None, "0123456789+"]
    with open_store(store_url).read() as conn:
        stored = conn.exec_driver_sql("SELECT git_commit FROM runs WHERE run_id = 'new-run'").scalar()
    assert stored == newer.source.commit


def test_a_newer_store_is_refused_in_one_line(store_url: str):
    with open_store(store_url).write() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    close_stores()
    with pytest.raises(StoreUnavailable) as refused:
        open_store(store_url)
    message = str(refused.value)
    assert "\n" not in message
    assert f"schema version 9999, newer than this pytest-llem knows ({SCHEMA_REVISION}); upgrade" in message


def test_sqlite_runs_in_wal_mode(state_dir: Path):
    states = StateManager(state_dir)
    states.create("exp", "h" * 16)
    with states.store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_a_locked_sqlite_store_waits_then_fails_in_one_line(state_dir: Path, monkeypatch):
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_S", 1.0)
    close_stores()
    states = StateManager(state_dir)
    states.create("first", "h" * 16)
    holder = sqlite3.connect(state_dir / database.DEFAULT_STORE_FILE, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        started = time.monotonic()
        with pytest.raises(StoreBusy) as busy:
            states.create("second", "h" * 16)
        waited_s = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert waited_s >= 0.9
    assert "\n" not in str(busy.value) and "stayed locked by another writer for more than 1 s" in str(
        busy.value
    )
    states.create("second", "h" * 16)  # once the lock is gone, writes go through
    close_stores()


def test_passwords_never_reach_a_message():
    shown = display_url("postgresql://bench:hunter2secret@db.example.com:5432/llem")
    assert "hunter2secret" not in shown and "db.example.com" in shown


def test_an_unreachable_server_fails_in_one_line_naming_the_host_not_the_password():
    pytest.importorskip("psycopg")
    port = free_port()  # nothing listens there
    with pytest.raises(StoreUnavailable) as refused:
        open_store(f"postgresql://bench:hunter2secret@127.0.0.1:{port}/llem")
    message = str(refused.value)
    assert "\n" not in message and "hunter2secret" not in message
    assert f"server 127.0.0.1:{port}" in message and "--llem-store" in message


def test_runs_are_listed_newest_first_and_found_by_name_id_and_machine(state_dir: Path, store_url: str):
    history = RunHistory(state_dir, store_url)
    result = make_result([1.0])
    for run_id, name, day in [("r1", "main", 0), ("r2", "main", 1), ("r3", None, 2)]:
        history.save(make_report(run_id, [make_entry(GPT2, result)], name=name, days_after_t0=day))
    assert [run.run_id for run in history.summaries(limit=2)] == ["r2", "r3"]
    assert history.find("main").run_id == "r2"
    assert history.find("r1").run_id == "r1"
    assert history.latest("h100x1").run_id == "r3"
    assert history.latest("h100x1", exclude_run_id="r3").run_id == "r2"
    assert history.latest("another-machine") is None


@pytest.mark.parametrize(
    "url", ["postgresql://u:hunter2secret@[::1/db", "postgresql://u:hunter2@secret@[::1/db"]
)
def test_a_url_that_cannot_be_parsed_is_refused_in_one_line_without_its_password(url: str):
    assert display_url(url) == "postgresql://u:***@[::1/db"
    with pytest.raises(StoreUnavailable) as refused:
        open_store(url)
    assert "\n" not in str(refused.value) and "hunter2" not in str(refused.value)
    assert "is not a database URL" in str(refused.value)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_sqlite_store_is_refused_in_one_line(url: str):
    with pytest.raises(StoreUnavailable, match="a SQLite store needs a file"):
        open_store(url)
