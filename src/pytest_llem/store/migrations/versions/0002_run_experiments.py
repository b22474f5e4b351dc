"""Which experiments each run's report holds, so that retention never deletes one a kept run
still shows (a resumed entry refers to an earlier run's experiment). Filled from the reports
already stored.

Revision ID: 0002
Revises: 0001
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    links = op.create_table(
        "run_experiments",
        sa.Column(
            "run_id", sa.String(64), sa.ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("experiment_id", sa.String(128), primary_key=True),
    )
    op.create_index("ix_run_experiments_experiment", "run_experiments", ["experiment_id"])
    rows = op.get_bind().execute(sa.text("SELECT run_id, summary_json FROM runs")).all()
    found = [
        {"run_id": run_id, "experiment_id": experiment_id}
        for run_id, summary in rows
        for experiment_id in sorted(
            {e["experiment_id"] for e in json.loads(summary).get("experiments", []) if e.get("experiment_id")}
        )
    ]
    if found:
        op.bulk_insert(links, found)


def downgrade() -> None:
    op.drop_table("run_experiments")
