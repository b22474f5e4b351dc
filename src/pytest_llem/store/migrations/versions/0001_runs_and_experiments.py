"""Runs, their reports, experiment states and their bulky parts, and facts about the store.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("machine_id", sa.String(64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("can_be_baseline", sa.Boolean, nullable=False),
        sa.Column("experiment_count", sa.Integer, nullable=False),
        sa.Column("measured_count", sa.Integer, nullable=False),
        sa.Column("failed_count", sa.Integer, nullable=False),
        sa.Column("summary_json", sa.Text, nullable=False),
    )
    op.create_index("ix_runs_machine_baseline", "runs", ["machine_id", "can_be_baseline", "started_at"])
    op.create_index("ix_runs_name_started", "runs", ["name", "started_at"])
    op.create_index("ix_runs_started", "runs", ["started_at"])
    op.create_table(
        "run_reports",
        sa.Column(
            "run_id", sa.String(64), sa.ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("report_z", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "experiments",
        sa.Column("experiment_id", sa.String(128), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("nodeid", sa.Text, nullable=True),
        sa.Column("case_key", sa.Text, nullable=True),
        sa.Column("config_hash", sa.String(128), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("failed", sa.Boolean, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("owner_pid", sa.Integer, nullable=False),
        sa.Column("owner_start_time", sa.Float, nullable=True),
        sa.Column("subprocess_pid", sa.Integer, nullable=True),
        sa.Column("subprocess_start_time", sa.Float, nullable=True),
        sa.Column("duration_s", sa.Float, nullable=True),
        sa.Column("output_tokens", sa.Integer, nullable=True),
        sa.Column("energy_j", sa.Float, nullable=True),
        sa.Column("energy_per_token_j", sa.Float, nullable=True),
        sa.Column("tokens_per_s", sa.Float, nullable=True),
        sa.Column("result_json", sa.Text, nullable=True),
    )
    op.create_index("ix_experiments_active_host", "experiments", ["active", "hostname"])
    op.create_index("ix_experiments_config_hash", "experiments", ["config_hash", "last_updated"])
    op.create_index("ix_experiments_run", "experiments", ["run_id"])
    op.create_table(
        "experiment_parts",
        sa.Column(
            "experiment_id",
            sa.String(128),
            sa.ForeignKey("experiments.experiment_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("parts_z", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "store_info",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("store_info", "experiment_parts", "experiments", "run_reports", "runs"):
        op.drop_table(table)
