"""Each run's project (`store.projects`), so that a bare `--llem-compare` chooses among the
runs of its own project in a store every project of a user shares. Runs saved before have
none (NULL): their reports never recorded one, so they stay readable and show as legacy.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("project", sa.String(200), nullable=True))
    op.create_index(
        "ix_runs_project_baseline", "runs", ["project", "machine_id", "can_be_baseline", "started_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_runs_project_baseline", table_name="runs")
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("project")
