"""Initial schema: mentions, alerts, alert events, engine state.

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
        "mentions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("thread_id", sa.Text, nullable=False),
        sa.Column("parent_id", sa.Text),
        sa.Column("author", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("url", sa.Text),
        sa.Column("lang", sa.Text),
        sa.Column("author_followers", sa.BigInteger),
        sa.Column("topics", sa.Text, nullable=False),
        sa.Column("compound", sa.Float),
        sa.Column("data", sa.Text),
    )
    op.create_index("ix_mentions_created_at", "mentions", ["created_at"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("resolved_at", sa.Float),
    )
    op.create_index("ix_alerts_open", "alerts", ["rule", "key"], unique=True,
                    sqlite_where=sa.text("state = 'firing'"),
                    postgresql_where=sa.text("state = 'firing'"))
    op.create_table(
        "alert_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.Integer, sa.ForeignKey("alerts.id"), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("playbook", sa.Text, nullable=False),
        sa.Column("signals", sa.Text, nullable=False),
        sa.Column("top_posts", sa.Text, nullable=False),
        sa.UniqueConstraint("alert_id", "event", "step", name="uq_alert_event"),
    )
    op.create_table(
        "engine_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("state", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("engine_state")
    op.drop_table("alert_events")
    op.drop_table("alerts")
    op.drop_table("mentions")
