"""Several instances on one database: leases, the feed (a sequence number per mention,
and per engagement refresh, clock tick and alert closed by hand, in commit order),
detector checkpoints per topic partition, delivery claims, mentions per source per 5
minutes (flatline rules), and an alert's identity including its topic.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("holder", sa.Text),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "instances",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
    )
    op.create_table(
        "counters",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO counters (name, value) VALUES ('feed', 0)")
    op.create_table(
        "feed_extra",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at", sa.Float),
        sa.Column("thread_id", sa.Text),
        sa.Column("topics", sa.Text),
        sa.Column("growth", sa.BigInteger),
        sa.Column("rule", sa.Text),
        sa.Column("key", sa.Text),
    )
    op.create_table(
        "partitions",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("state", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("emitted", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "source_volume",
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("bucket", sa.Float, primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    with op.batch_alter_table("mentions") as t:
        t.add_column(sa.Column("seq", sa.BigInteger))
    op.create_index("ix_mentions_seq", "mentions", ["seq"])
    with op.batch_alter_table("deliveries") as t:
        t.add_column(sa.Column("claimed_by", sa.Text))
        t.add_column(sa.Column("claim_until", sa.Float))
    op.drop_index("ix_alerts_open", "alerts")
    op.create_index("ix_alerts_open", "alerts", ["rule", "key", "topic"], unique=True,
                    sqlite_where=sa.text("state = 'firing'"),
                    postgresql_where=sa.text("state = 'firing'"))


def downgrade() -> None:
    op.drop_index("ix_alerts_open", "alerts")
    op.create_index("ix_alerts_open", "alerts", ["rule", "key"], unique=True,
                    sqlite_where=sa.text("state = 'firing'"),
                    postgresql_where=sa.text("state = 'firing'"))
    with op.batch_alter_table("deliveries") as t:
        t.drop_column("claim_until")
        t.drop_column("claimed_by")
    op.drop_index("ix_mentions_seq", "mentions")
    with op.batch_alter_table("mentions") as t:
        t.drop_column("seq")
    for name in ("source_volume", "partitions", "feed_extra", "counters", "instances",
                 "leases"):
        op.drop_table(name)
