"""The results store's tables, as the queries see them (SQLAlchemy Core).

The migrations under `store/migrations/versions/` create and change these tables; this
module describes the newest schema (`database.SCHEMA_REVISION`). Small, queried facts are
columns; whole documents are JSON text; the bulky parts (power timelines, raw latencies,
whole reports) are zlib-compressed JSON in tables of their own, read only when a view needs
them.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("name", String(200), nullable=True),
    Column("machine_id", String(64), nullable=True),
    # The project whose suite ran (`store.projects`); None: saved before runs recorded one.
    Column("project", String(200), nullable=True),
    # The git commit the suite was at (`fingerprints.source`); None: not known.
    Column("git_commit", String(64), nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("exit_code", Integer, nullable=True),
    Column("can_be_baseline", Boolean, nullable=False),
    Column("experiment_count", Integer, nullable=False),
    Column("measured_count", Integer, nullable=False),
    Column("failed_count", Integer, nullable=False),
    # The report without its results' bulky parts (those are in run_reports, whole).
    Column("summary_json", Text, nullable=False),
    Index("ix_runs_machine_baseline", "machine_id", "can_be_baseline", "started_at"),
    Index("ix_runs_project_baseline", "project", "machine_id", "can_be_baseline", "started_at"),
    Index("ix_runs_name_started", "name", "started_at"),
    Index("ix_runs_started", "started_at"),
)

#: The whole report (every result with its timelines), compressed: read for one run at a time.
run_reports = Table(
    "run_reports",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
    Column("report_z", LargeBinary, nullable=False),
)

#: Which experiments a run's report holds (its own and the ones it resumed), so that
#: retention deletes an experiment only when no kept run refers to it.
run_experiments = Table(
    "run_experiments",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
    Column("experiment_id", String(128), primary_key=True),
    Index("ix_run_experiments_experiment", "experiment_id"),
)

experiments = Table(
    "experiments",
    metadata,
    Column("experiment_id", String(128), primary_key=True),
    Column("run_id", String(64), nullable=True),
    Column("nodeid", Text, nullable=True),
    Column("case_key", Text, nullable=True),
    Column("config_hash", String(128), nullable=False),
    Column("phase", String(16), nullable=False),
    Column("failed", Boolean, nullable=False),
    # True while neither done nor failed: the only rows stale cleanup reads.
    Column("active", Boolean, nullable=False),
    Column("error_message", Text, nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("hostname", String(255), nullable=False),
    Column("owner_pid", Integer, nullable=False),
    Column("owner_start_time", Float, nullable=True),
    Column("subprocess_pid", Integer, nullable=True),
    Column("subprocess_start_time", Float, nullable=True),
    # The result's figures that queries use; the rest of the result in result_json.
    Column("duration_s", Float, nullable=True),
    Column("output_tokens", Integer, nullable=True),
    Column("energy_j", Float, nullable=True),
    Column("energy_per_token_j", Float, nullable=True),
    Column("tokens_per_s", Float, nullable=True),
    Column("result_json", Text, nullable=True),
    Index("ix_experiments_active_host", "active", "hostname"),
    Index("ix_experiments_config_hash", "config_hash", "last_updated"),
    Index("ix_experiments_run", "run_id"),
)

#: An experiment's power timelines and raw latencies, compressed, read only when needed.
experiment_parts = Table(
    "experiment_parts",
    metadata,
    Column(
        "experiment_id",
        String(128),
        ForeignKey("experiments.experiment_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("parts_z", LargeBinary, nullable=False),
)

#: Facts about the store itself (JSON state dirs imported into it, by path).
store_info = Table(
    "store_info",
    metadata,
    Column("key", String(512), primary_key=True),
    Column("value", Text, nullable=False),
)
