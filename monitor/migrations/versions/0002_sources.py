"""Live sources: each source's cursor and health.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("cursor", sa.Text),
        sa.Column("last_poll", sa.Float),
        sa.Column("last_success", sa.Float),
        sa.Column("last_error", sa.Text),
        sa.Column("last_error_at", sa.Float),
        sa.Column("errors_in_a_row", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lag", sa.Float),
        sa.Column("newest_at", sa.Float),
        sa.Column("day", sa.String(10)),
        sa.Column("mentions_today", sa.Integer, nullable=False, server_default="0"),
        sa.Column("mentions_total", sa.BigInteger, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("sources")
