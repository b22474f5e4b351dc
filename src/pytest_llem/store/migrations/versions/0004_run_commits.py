"""Each run's git commit (`fingerprints.source`), so that a run's commit is read from its row
(`pytest-llem list`) without its report. Runs saved before have none (NULL): their reports
never recorded one, and they stay readable without it.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("git_commit", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("git_commit")
