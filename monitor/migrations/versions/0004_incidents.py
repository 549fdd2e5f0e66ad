"""Incidents (alerts grouped by topic), who acknowledged and resolved what, silences, and
what kind of message each delivery is.

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
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("group_key", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("resolved_at", sa.Float),
        sa.Column("acked_at", sa.Float),
        sa.Column("acked_by", sa.Text),
        sa.Column("ack_note", sa.Text),
    )
    op.create_index("ix_incidents_open", "incidents", ["group_key", "state"])
    with op.batch_alter_table("alerts") as t:
        t.add_column(sa.Column("incident_id", sa.Integer))
        t.add_column(sa.Column("resolved_by", sa.Text))
    with op.batch_alter_table("deliveries") as t:
        t.add_column(sa.Column("incident_id", sa.Integer))
        t.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="page"))
    op.create_table(
        "silences",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.Text),
        sa.Column("topic", sa.Text),
        sa.Column("key", sa.Text),
        sa.Column("scope", sa.String(16)),
        sa.Column("starts_at", sa.Float, nullable=False),
        sa.Column("ends_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("expired_at", sa.Float),
    )


def downgrade() -> None:
    op.drop_table("silences")
    with op.batch_alter_table("deliveries") as t:
        t.drop_column("kind")
        t.drop_column("incident_id")
    with op.batch_alter_table("alerts") as t:
        t.drop_column("resolved_by")
        t.drop_column("incident_id")
    op.drop_index("ix_incidents_open", "incidents")
    op.drop_table("incidents")
