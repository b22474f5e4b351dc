"""The tables the queries see (`store.schema`) against the tables the migrations build: the
two are written apart, so a column or index added to one and not the other is caught here.
A new store is created from the schema directly, so its tables are checked against the
migrations' too."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sample_reports import GPT2, make_entry, make_report, make_result

from pytest_llem.store import schema
from pytest_llem.store.database import (
    SCHEMA_REVISION,
    StoreRefusedValue,
    create_at_revision,
    default_store_url,
    open_store,
)
from pytest_llem.store.report import save_run


def test_the_migrations_build_exactly_the_tables_the_schema_describes(store_url: str):
    create_at_revision(store_url, SCHEMA_REVISION)  # through every migration, not created directly
    with open_store(store_url).read() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    # alembic's own bookkeeping table is the only one the schema does not describe.
    differences = [d for d in differences if not (d[0] == "remove_table" and d[1].name == "alembic_version")]
    assert differences == []


def as_the_database_describes_it(url: str) -> dict[str, dict[str, object]]:
    """Every table of the store at `url` as the database describes it: columns (type,
    nullability, default), primary key, foreign keys with their actions, indexes, unique and
    check constraints. Not the columns' order: a migration adds a column at the end, the
    schema lists it where it reads best, and every query names its columns."""
    with open_store(url).read() as conn:
        inspector = sa.inspect(conn)
        return {
            name: {
                "columns": {
                    c["name"]: (str(c["type"]), c["nullable"], c.get("default"))
                    for c in inspector.get_columns(name)
                },
                "primary_key": inspector.get_pk_constraint(name),
                "foreign_keys": sorted(map(repr, inspector.get_foreign_keys(name))),
                "indexes": sorted(map(repr, inspector.get_indexes(name))),
                "unique": sorted(map(repr, inspector.get_unique_constraints(name))),
                "checks": sorted(map(repr, inspector.get_check_constraints(name))),
            }
            for name in sorted(inspector.get_table_names())
        }


def test_a_new_store_is_created_with_exactly_the_tables_the_migrations_build(
    store_url: str, request: pytest.FixtureRequest, tmp_path
):
    if store_url.startswith("sqlite"):
        migrated = default_store_url(tmp_path / "migrated")
    else:
        migrated = request.getfixturevalue("postgres_server").new_database()
    create_at_revision(migrated, SCHEMA_REVISION)
    created = as_the_database_describes_it(store_url)  # a new store: its tables created directly
    assert set(created) == {*schema.metadata.tables, "alembic_version"}
    assert created == as_the_database_describes_it(migrated)
    with open_store(store_url).read() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == [
            SCHEMA_REVISION
        ]


def test_each_table_holds_its_primary_key_and_indexes_as_described(store_url: str):
    with open_store(store_url).read() as conn:
        inspector = sa.inspect(conn)
        for table in schema.metadata.sorted_tables:
            stored = inspector.get_pk_constraint(table.name)["constrained_columns"]
            assert stored == [column.name for column in table.primary_key.columns], table.name
            indexes = {index["name"]: index["column_names"] for index in inspector.get_indexes(table.name)}
            described = {index.name: [column.name for column in index.columns] for index in table.indexes}
            assert indexes == described, table.name


def test_deleting_a_run_deletes_its_compressed_report_and_experiment_links(store_url: str):
    report = make_report("r1", [make_entry(GPT2, make_result([1.0]))])
    report.experiments[0].experiment_id = "exp-1"
    store = open_store(store_url)
    save_run(store, report)
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.run_reports)).scalar() == 1
        assert conn.execute(sa.select(schema.run_experiments.c.experiment_id)).scalars().all() == ["exp-1"]

    with store.write() as conn:
        conn.execute(sa.delete(schema.runs).where(schema.runs.c.run_id == "r1"))
    with store.read() as conn:
        for dependent in (schema.run_reports, schema.run_experiments):
            assert conn.execute(sa.select(sa.func.count()).select_from(dependent)).scalar() == 0


def test_a_run_report_needs_its_run(store_url: str):
    store = open_store(store_url)
    with pytest.raises(StoreRefusedValue, match="(?i)foreign key"), store.write() as conn:
        conn.execute(sa.insert(schema.run_reports).values(run_id="no-such-run", report_z=b"x"))
