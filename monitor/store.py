"""Storage: the only module that talks SQL. SQLite by default, PostgreSQL supported.

Tables (schema changes go through Alembic migrations in ``monitor/migrations``, applied
by ``Store.open``):

- ``mentions``: every in-scope mention with its sentiment and topics, keyed by its
  source-qualified id; inserting one twice changes nothing.
- ``alerts``: one row per alert (rule, scope key, opened), its state and severity.
- ``alert_events``: fired / escalated / resolved, with the numbers and top posts.
- ``engine_state``: a replay's detector and alert state (``replay --db`` continues).
- ``partitions``, ``feed_extra``, ``counters``: the live detectors' checkpoints, and the
  feed they read: mentions numbered in commit order, with engagement growth, clock
  ticks and alerts closed by hand between them.
- ``leases``, ``instances``: which instance of ``stormwatch run`` does what.
- ``source_volume``: new mentions per source per 5 minutes (flatline rules).
- ``sources``: each live source's cursor (committed with the mentions it produced) and
  health (last success, last error, lag, mentions today).
- ``incidents``: alerts of one topic that are open at the same time, grouped: what the
  frontline is told about, acknowledges and closes.
- ``deliveries`` and ``delivery_attempts``: the outbox. A delivery is one message about
  an incident to one channel (a page, an escalation, an update, a resolution), written
  in the transaction that wrote the alert event behind it; every attempt and its result.
- ``silences``: who muted what, until when, and why.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from monitor.errors import NotFound, StoreError
from monitor.models import AlertEvent, Mention, SourceState

metadata = sa.MetaData()

mentions = sa.Table(
    "mentions", metadata,
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
    sa.Column("data", sa.Text),  # JSON: metrics, topic, extra keys
    sa.Column("seq", sa.BigInteger),  # its place in the feed (commit order)
    sa.Index("ix_mentions_created_at", "created_at"),
    sa.Index("ix_mentions_seq", "seq"),
)

MENTION_COLUMNS = ("id", "source", "thread_id", "parent_id", "author", "created_at", "text",
                   "title", "url", "lang", "author_followers", "topics", "compound", "data", "seq")

alerts = sa.Table(
    "alerts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # firing | resolved
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("resolved_at", sa.Float),
    sa.Column("incident_id", sa.Integer),
    sa.Column("resolved_by", sa.Text),  # a person who closed it by hand (alerts resolve)
    sa.Index("ix_alerts_open", "rule", "key", "topic", unique=True,
             sqlite_where=sa.text("state = 'firing'"),
             postgresql_where=sa.text("state = 'firing'")),
)

alert_events = sa.Table(
    "alert_events", metadata,
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

engine_state = sa.Table(
    "engine_state", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("state", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)


sources = sa.Table(
    "sources", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("cursor", sa.Text),  # JSON, the connector's own
    sa.Column("last_poll", sa.Float),
    sa.Column("last_success", sa.Float),
    sa.Column("last_error", sa.Text),
    sa.Column("last_error_at", sa.Float),
    sa.Column("errors_in_a_row", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lag", sa.Float),  # seconds from the newest mention's created_at to its fetch
    sa.Column("newest_at", sa.Float),
    sa.Column("day", sa.String(10)),  # UTC day that mentions_today counts
    sa.Column("mentions_today", sa.Integer, nullable=False, server_default="0"),
    sa.Column("mentions_total", sa.BigInteger, nullable=False, server_default="0"),
)

deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Integer, sa.ForeignKey("alert_events.id"), nullable=False),
    sa.Column("alert_id", sa.Integer, sa.ForeignKey("alerts.id"), nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False, unique=True),  # (alert, event, step, channel)
    sa.Column("status", sa.String(16), nullable=False),  # pending | sent | failed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_at", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("sent_at", sa.Float),
    sa.Column("last_error", sa.Text),
    sa.Column("ref", sa.Text),  # the service's handle on the message (Slack ts...)
    sa.Column("incident_id", sa.Integer),
    sa.Column("kind", sa.String(16), nullable=False, server_default="page"),
    sa.Column("claimed_by", sa.Text),     # the instance sending it ...
    sa.Column("claim_until", sa.Float),   # ... until then (after: in doubt, anyone's)
    sa.Index("ix_deliveries_due", "status", "next_at"),
)

incidents = sa.Table(
    "incidents", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("group_key", sa.Text, nullable=False),   # the topic
    sa.Column("state", sa.String(16), nullable=False),  # open | resolved
    sa.Column("severity", sa.String(16), nullable=False),  # the highest so far
    sa.Column("opened_at", sa.Float, nullable=False),   # event time
    sa.Column("resolved_at", sa.Float),
    sa.Column("acked_at", sa.Float),                    # wall clock
    sa.Column("acked_by", sa.Text),
    sa.Column("ack_note", sa.Text),
    sa.Index("ix_incidents_open", "group_key", "state"),
)

silences = sa.Table(
    "silences", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rule", sa.Text),       # each matcher: None matches anything
    sa.Column("topic", sa.Text),
    sa.Column("key", sa.Text),
    sa.Column("scope", sa.String(16)),
    sa.Column("starts_at", sa.Float, nullable=False),   # wall clock
    sa.Column("ends_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("expired_at", sa.Float),                  # expired early, by hand
)

delivery_attempts = sa.Table(
    "delivery_attempts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.Integer, sa.ForeignKey("deliveries.id"), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)

leases = sa.Table(
    "leases", metadata,
    sa.Column("name", sa.Text, primary_key=True),  # source:reddit, topic:acme
    sa.Column("holder", sa.Text),                   # an instance name
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False, server_default="0"),
)

instances = sa.Table(
    "instances", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("seen_at", sa.Float, nullable=False),
)

counters = sa.Table(
    "counters", metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

feed_extra = sa.Table(  # the feed's entries that are not mentions (see ``Store.feed``)
    "feed_extra", metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(16), nullable=False),  # engagement | clock | closed
    sa.Column("at", sa.Float),            # clock: event time to move to
    sa.Column("thread_id", sa.Text),      # engagement: where it grew, by how much
    sa.Column("topics", sa.Text),         # engagement: the thread's topics; closed: topic
    sa.Column("growth", sa.BigInteger),
    sa.Column("rule", sa.Text),           # closed: the alert a person resolved
    sa.Column("key", sa.Text),
)

source_volume = sa.Table(  # new mentions each source brought, per 5 minutes of arrival
    "source_volume", metadata,
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("bucket", sa.Float, primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)

VOLUME_BUCKET = 300

partitions = sa.Table(  # a topic's detector: its checkpoint, and its events' place
    "partitions", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),       # the state is as of here
    sa.Column("state", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("emitted", sa.BigInteger, nullable=False, server_default="0"),  # events
    # caused by the feed up to here are stored (a re-read after a crash drops them)
)

FeedItem = Any  # a Mention, or a tuple for the other kinds of entry (``Store.feed``)

ENGINE_STATE = "engine"  # the engine_state row of a replay's engine (replay --db continues)

UNSENT = ("pending", "sending")  # a delivery not sent yet; sending: a send was under way

SOURCE_HEALTH = ("last_poll", "last_success", "last_error", "last_error_at",
                 "errors_in_a_row", "lag", "newest_at", "day", "mentions_today",
                 "mentions_total")


def sqlite_url(path: str) -> str:
    return "sqlite:///" + os.path.abspath(path)


class Store:
    """``Store.open(url)`` migrates and returns a store; use ``with store.transaction():``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # Mentions go in by the thousand: plain driver SQL with tuples skips SQLAlchemy's
        # per-row parameter processing (a third of the cost of storing a mention).
        cols = [c.name for c in mentions.columns]
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._insert_mention = (
            f"INSERT INTO {mentions.name} ({', '.join(cols)}) "
            f"VALUES ({', '.join([mark] * len(cols))}) ON CONFLICT DO NOTHING")
        assert cols == list(MENTION_COLUMNS), "add_mentions builds rows in this order"

    @classmethod
    def open(cls, url: str, *, migrate: bool = True, durable: bool = True) -> Store:
        """Open and migrate. ``durable=False`` is for a throwaway SQLite database: no fsync,
        and the schema is created outright (a test keeps it equal to the migrations')."""
        if "://" not in url:
            url = sqlite_url(url)
        try:
            pg = url.startswith("postgresql")
            # PostgreSQL restarts (an upgrade, a failover): a pooled connection it closed
            # is noticed and replaced before use, and an unreachable server fails fast.
            engine = sa.create_engine(url, future=True, pool_pre_ping=pg,
                                      connect_args={"connect_timeout": 10} if pg else {})
        except (sa.exc.ArgumentError, ImportError) as e:
            raise StoreError(f"cannot use database URL: {e}",
                             hint="e.g. sqlite:///stormwatch.db or "
                                  "postgresql+psycopg://user@host/db") from None
        if engine.dialect.name == "sqlite":
            import sqlite3

            if sqlite3.sqlite_version_info < (3, 35):
                raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old (3.35 or later "
                                 "is needed: UPDATE ... RETURNING)",
                                 hint="use a newer Python build, or PostgreSQL")
            sa.event.listen(engine, "connect",
                            _sqlite_pragmas if durable else _sqlite_pragmas_scratch)
        elif engine.dialect.name != "postgresql":
            raise StoreError(f"unsupported database '{engine.dialect.name}'",
                             hint="use SQLite or PostgreSQL")
        store = cls(engine)
        if migrate and not durable and engine.dialect.name == "sqlite":
            with store._errors("creating the database"):
                metadata.create_all(engine)
        elif migrate:
            store.migrate()
        return store

    def upsert(self, table: sa.Table) -> Any:
        """An INSERT of this dialect, with ``on_conflict_do_update`` / ``_do_nothing``."""
        return (sqlite.insert(table) if self.dialect == "sqlite"
                else postgresql.insert(table))

    def migrate(self) -> None:
        from monitor.migrations import upgrade

        with self._errors("migrating the database"):
            upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sa.exc.SQLAlchemyError as e:
            detail = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
            raise StoreError(f"database error while {doing}: {detail}",
                             path=self.engine.url.render_as_string(hide_password=True)) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self._errors("writing"), self.engine.begin() as conn:
            yield conn

    # -- mentions --------------------------------------------------------------------
    def add_mentions(self, conn: Connection, batch: Sequence[Mention]) -> None:
        if not batch:
            return
        dumps = orjson.dumps
        rows = []
        for m in batch:
            data: dict[str, Any] = {}
            if m.metrics:
                data["metrics"] = m.metrics
            if m.extra:
                data["extra"] = m.extra
            if m.topic is not None:
                data["topic"] = m.topic
            rows.append((m.id, m.source, m.thread_id, m.parent_id, m.author, m.created_at,
                         m.text, m.title, m.url, m.lang, m.author_followers,
                         ",".join(m.topics), m.compound,
                         dumps(data, default=str).decode() if data else None))
        first = self.next_seq(conn, len(rows))
        conn.exec_driver_sql(self._insert_mention,
                             [(*r, first + i) for i, r in enumerate(rows)])

    def next_seq(self, conn: Connection, n: int) -> int:
        """The first of ``n`` feed numbers. The counter's row stays locked until the
        transaction commits, so numbers become visible in order: a reader that has seen
        number k has seen every committed number below it (several instances write)."""
        last = conn.execute(counters.update().where(counters.c.name == "feed")
                            .values(value=counters.c.value + n)
                            .returning(counters.c.value)).scalar()
        if last is None:  # a database made by create_all (a throwaway replay)
            conn.execute(counters.insert().values(name="feed", value=n))
            last = n
        return int(last) - n + 1

    def add_engagement(self, conn: Connection,
                       grown: Sequence[tuple[str, list[str], int]]) -> None:
        """Engagement growth (from ``refresh_metrics``) into the feed, for the detectors."""
        if not grown:
            return
        first = self.next_seq(conn, len(grown))
        conn.execute(feed_extra.insert(), [
            {"seq": first + i, "kind": "engagement", "thread_id": t,
             "topics": ",".join(topics), "growth": g}
            for i, (t, topics, g) in enumerate(grown)])

    def add_clock(self, conn: Connection, at: float) -> None:
        """Event time moves to ``at`` (the wall clock less lateness): windows close and
        alerts resolve though nothing arrives. In the feed, so every detector (and a
        re-read after a crash) sees it at the same place."""
        conn.execute(feed_extra.insert().values(seq=self.next_seq(conn, 1), kind="clock",
                                                at=at))

    def feed(self, since: int, limit: int = 2000) -> list[tuple[int, FeedItem]]:
        """What was stored after feed number ``since``, in order: mentions, and the other
        entries as tuples: ("engagement", thread id, topics, growth), ("clock", at),
        ("closed", rule, key, topic)."""
        with self._errors("reading the feed"), self.engine.connect() as conn:
            # Up to the counter as committed now: every number at or below it is
            # visible to the two reads after (each has its own snapshot on PostgreSQL;
            # without the bound, the second could see a page the first did not).
            top = conn.execute(sa.select(counters.c.value)
                               .where(counters.c.name == "feed")).scalar() or 0
            ms = conn.execute(sa.select(mentions).where(mentions.c.seq > since,
                                                        mentions.c.seq <= top)
                              .order_by(mentions.c.seq).limit(limit)).all()
            es = conn.execute(sa.select(feed_extra).where(feed_extra.c.seq > since,
                                                          feed_extra.c.seq <= top)
                              .order_by(feed_extra.c.seq).limit(limit)).all()
        horizon = min([rows[-1].seq for rows in (ms, es) if len(rows) == limit],
                      default=None)
        out: list[tuple[int, FeedItem]] = [(r.seq, _mention_of(r._mapping)) for r in ms]
        for r in es:
            if r.kind == "engagement":
                out.append((r.seq, ("engagement", r.thread_id,
                                    [t for t in r.topics.split(",") if t], r.growth)))
            elif r.kind == "clock":
                out.append((r.seq, ("clock", r.at)))
            else:
                out.append((r.seq, ("closed", r.rule, r.key, r.topics)))
        out.sort(key=lambda x: x[0])
        return out if horizon is None else [x for x in out if x[0] <= horizon]

    def last_seq(self) -> int:
        """The newest feed number handed out."""
        with self._errors("reading the feed"), self.engine.connect() as conn:
            return int(conn.execute(sa.select(counters.c.value)
                                    .where(counters.c.name == "feed")).scalar() or 0)

    def iter_mentions(self, *, since: float | None = None, until: float | None = None,
                      topic: str | None = None, until_seq: int | None = None,
                      latest: bool = False, batch: int = 5000) -> Iterator[Mention]:
        """Stored mentions in event-time order (``until_seq``: those the feed had
        numbered by then, and those stored before it numbered any; ``latest``: with
        their engagement as last refreshed, not as first counted)."""
        q = sa.select(mentions).order_by(mentions.c.created_at, mentions.c.id)
        if until_seq is not None:
            q = q.where(sa.or_(mentions.c.seq.is_(None), mentions.c.seq <= until_seq))
        if since is not None:
            q = q.where(mentions.c.created_at >= since)
        if until is not None:
            q = q.where(mentions.c.created_at < until)
        with self._errors("reading mentions"), self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(q)
            for row in result:
                m = _mention_of(row._mapping, latest=latest)
                if topic is None or topic in m.topics:
                    yield m

    def refresh_metrics(self, conn: Connection, updates: Sequence[tuple[str, dict[str, int]]],
                        ) -> list[tuple[str, list[str], int]]:
        """Store fresh engagement counts of stored mentions; returns, per mention whose
        engagement grew, (thread id, topics, growth)."""
        grown = []
        for i in range(0, len(updates), 500):
            chunk = dict(updates[i:i + 500])
            rows = conn.execute(sa.select(mentions.c.id, mentions.c.thread_id, mentions.c.topics,
                                          mentions.c.data)
                                .where(mentions.c.id.in_(list(chunk)))).all()
            for mid, thread, topics, raw in rows:
                data = orjson.loads(raw) if raw else {}
                # "metrics" stay as counted (a detector reading the feed again sees the
                # mention as it first did); the refreshed counts go in "latest"
                old = data.get("latest") or data.get("metrics", {})
                new = {**old, **chunk[mid]}
                if new == old:
                    continue
                data["latest"] = new
                conn.execute(mentions.update().where(mentions.c.id == mid).values(
                    data=orjson.dumps(data, default=str).decode()))
                growth = _engagement(new) - _engagement(old)
                if growth > 0:
                    grown.append((thread, [t for t in topics.split(",") if t], growth))
        return grown

    def active_threads(self, prefix: str, since: float, limit: int) -> list[str]:
        """Threads under ``prefix`` (``bluesky:``) with a mention posted since ``since``,
        the most recently active first (whose engagement a source refreshes)."""
        last = sa.func.max(mentions.c.created_at)
        q = (sa.select(mentions.c.thread_id)
             .where(mentions.c.thread_id.startswith(prefix, autoescape=True),
                    mentions.c.created_at >= since)
             .group_by(mentions.c.thread_id).order_by(last.desc()).limit(limit))
        with self._errors("reading mentions"), self.engine.connect() as conn:
            return list(conn.execute(q).scalars())

    def known_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these mention ids are stored already (dedup across restarts)."""
        found: set[str] = set()
        with self._errors("reading mentions"), self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                chunk = list(ids[i:i + 500])
                found.update(conn.execute(
                    sa.select(mentions.c.id).where(mentions.c.id.in_(chunk))).scalars())
        return found

    def first_mention(self, *, thread: str | None, topic: str, before: float,
                      window: float) -> float | None:
        """When a thread began (its first mention), or, for a topic, the first mention
        in the window that led to an alert at ``before``."""
        q = sa.select(sa.func.min(mentions.c.created_at))
        if thread is not None:
            q = q.where(mentions.c.thread_id == thread)
        else:
            q = q.where(mentions.c.created_at >= before - window,
                        mentions.c.created_at <= before,
                        (sa.literal(",") + mentions.c.topics + sa.literal(","))
                        .contains(f",{topic},", autoescape=True))
        with self._errors("reading mentions"), self.engine.connect() as conn:
            return conn.execute(q).scalar()

    def add_volume(self, conn: Connection, source: str, n: int, at: float) -> None:
        """``n`` new mentions from ``source`` arrived at ``at`` (a flatline rule's count)."""
        bucket = float(int(at) // VOLUME_BUCKET * VOLUME_BUCKET)
        ins = self.upsert(source_volume)
        conn.execute(ins.values(source=source, bucket=bucket, n=n).on_conflict_do_update(
            index_elements=["source", "bucket"], set_={"n": source_volume.c.n + n}))

    def source_counts(self, source: str, end: float, window: float, days: int,
                      ) -> list[int]:
        """New mentions ``source`` brought in ``[end - window, end)``, then in the same
        window on each of the ``days`` days before, as far back as it has history (in
        5-minute steps of arrival time)."""
        v = source_volume
        out = []
        with self._errors("reading source volume"), self.engine.connect() as conn:
            first = conn.execute(sa.select(sa.func.min(v.c.bucket))
                                 .where(v.c.source == source)).scalar()
            for d in range(days + 1):
                stop = end - d * 86400
                if d and (first is None or stop - window < first):
                    break
                out.append(int(conn.execute(
                    sa.select(sa.func.coalesce(sa.func.sum(v.c.n), 0)).where(
                        v.c.source == source, v.c.bucket >= stop - window,
                        v.c.bucket < stop)).scalar_one()))
        return out

    def mention_span(self) -> tuple[float | None, float | None]:
        """The first and last ``created_at`` of the stored mentions."""
        with self._errors("reading mentions"), self.engine.connect() as conn:
            row = conn.execute(sa.select(sa.func.min(mentions.c.created_at),
                                         sa.func.max(mentions.c.created_at))).one()
        return row[0], row[1]

    def count_mentions(self) -> int:
        with self._errors("counting mentions"), self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(mentions)).scalar_one())

    # -- alerts ----------------------------------------------------------------------
    def add_events(self, conn: Connection, events: Sequence[AlertEvent],
                   ) -> list[tuple[int, int]]:
        """Record alert events and the alert rows they open, update and close; returns
        each event's (alert id, event id), for the notification planner."""
        dumps = orjson.dumps
        out = []
        for ev in events:
            alert_id = conn.execute(sa.select(alerts.c.id).where(
                alerts.c.rule == ev.rule, alerts.c.key == ev.key, alerts.c.topic == ev.topic,
                alerts.c.state == "firing")).scalar()
            by_hand = None
            if alert_id is None and ev.event != "fired":
                # closed by hand (alerts resolve) before the engine heard of it: the
                # event goes on that record, which stays closed
                by_hand = alert_id = conn.execute(sa.select(alerts.c.id).where(
                    alerts.c.rule == ev.rule, alerts.c.key == ev.key,
                    alerts.c.topic == ev.topic, alerts.c.resolved_by.is_not(None))
                    .order_by(alerts.c.id.desc()).limit(1)).scalar()
            if by_hand is None and (ev.event == "fired" or alert_id is None):
                if alert_id is not None:  # a stale open row: close it before reopening
                    conn.execute(alerts.update().where(alerts.c.id == alert_id).values(
                        state="resolved", resolved_at=ev.at, updated_at=ev.at))
                alert_id = conn.execute(alerts.insert().values(
                    rule=ev.rule, scope=ev.scope, key=ev.key, topic=ev.topic, state="firing",
                    severity=ev.severity, opened_at=ev.at, updated_at=ev.at)
                ).inserted_primary_key[0]
            if by_hand is None:
                values: dict[str, Any] = {"severity": ev.severity, "updated_at": ev.at}
                if ev.event == "resolved":
                    values.update(state="resolved", resolved_at=ev.at)
                conn.execute(alerts.update().where(alerts.c.id == alert_id).values(**values))
            event_id = conn.execute(alert_events.insert().values(
                alert_id=alert_id, event=ev.event, severity=ev.severity, step=ev.step,
                at=ev.at, summary=ev.summary, playbook=ev.playbook,
                signals=dumps(ev.signals).decode(), top_posts=dumps(list(ev.top_posts)).decode())
            ).inserted_primary_key[0]
            out.append((alert_id, event_id))
        return out

    # -- incidents -------------------------------------------------------------------
    def incident_of(self, conn: Connection, alert_id: int, group_key: str, severity: str,
                    at: float, *, join_open: bool = True) -> tuple[int, bool]:
        """The alert's incident: the one it joined, else (``join_open``) the open one of
        its group, else a new one; returns (incident id, whether it is new)."""
        found = conn.execute(sa.select(alerts.c.incident_id)
                             .where(alerts.c.id == alert_id)).scalar()
        new = False
        if found is None and join_open:
            found = conn.execute(sa.select(incidents.c.id).where(
                incidents.c.group_key == group_key, incidents.c.state == "open")
                .order_by(incidents.c.id.desc()).limit(1)).scalar()
        if found is None:
            found = conn.execute(incidents.insert().values(
                group_key=group_key, state="open", severity=severity, opened_at=at)
            ).inserted_primary_key[0]
            new = True
        conn.execute(alerts.update().where(alerts.c.id == alert_id)
                     .values(incident_id=found))
        return int(found), new

    def incident_alerts(self, conn: Connection, incident_id: int) -> list[dict[str, Any]]:
        """The incident's alerts, oldest first, each with its latest summary."""
        latest = (sa.select(alert_events.c.summary)
                  .where(alert_events.c.alert_id == alerts.c.id)
                  .order_by(alert_events.c.id.desc()).limit(1).scalar_subquery())
        q = (sa.select(alerts, latest.label("summary"))
             .where(alerts.c.incident_id == incident_id).order_by(alerts.c.id))
        return [dict(r._mapping) for r in conn.execute(q)]

    def update_incident(self, conn: Connection, incident_id: int, **values: Any) -> None:
        conn.execute(incidents.update().where(incidents.c.id == incident_id).values(**values))

    def get_incident(self, conn: Connection, incident_id: int) -> dict[str, Any]:
        row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).first()
        if row is None:
            raise NotFound(f"no incident {incident_id}")
        return dict(row._mapping)

    def notified(self, conn: Connection, incident_id: int, channel: str
                 ) -> list[tuple[str, str, str]]:
        """(kind, severity, status) of the messages already queued about an incident on a
        channel, oldest first."""
        q = (sa.select(deliveries.c.kind, alert_events.c.severity, deliveries.c.status)
             .join(alert_events, deliveries.c.event_id == alert_events.c.id)
             .where(deliveries.c.incident_id == incident_id, deliveries.c.channel == channel)
             .order_by(deliveries.c.id))
        return [tuple(r) for r in conn.execute(q)]  # type: ignore[misc]

    def add_delivery(self, conn: Connection, *, event_id: int, alert_id: int,
                     incident_id: int, channel: str, kind: str, now: float, due: float,
                     nth: int = 0) -> None:
        """A message to send; its key (incident, kind, event, channel[, nth]) is unique."""
        key = f"{incident_id}:{kind}:{event_id}:{channel}" + (f":{nth}" if nth else "")
        ins = self.upsert(deliveries)
        conn.execute(ins.on_conflict_do_nothing(index_elements=["key"]).values(
            event_id=event_id, alert_id=alert_id, incident_id=incident_id, channel=channel,
            kind=kind, key=key, status="pending", attempts=0, next_at=due, created_at=now))

    def queue_reminders(self, now: float, repeat: float,
                        escalations: dict[str, tuple[float, tuple[str, ...]]],
                        route_channels: dict[str, tuple[str, ...]]) -> int:
        """For open incidents nobody acknowledged: an ``unacknowledged`` message to a
        route's escalation channels once its first page is ``after`` old, and a
        ``reminder`` on each channel told of it when nothing happened (no event, no
        message) for ``repeat`` seconds. Returns how many were queued."""
        d = deliveries
        queued = 0
        with self.transaction() as conn:
            open_ = conn.execute(sa.select(incidents.c.id).where(
                incidents.c.state == "open", incidents.c.acked_at.is_(None))).scalars().all()
            for inc in open_:
                msgs = conn.execute(sa.select(d.c.channel, d.c.kind, d.c.created_at)
                                    .where(d.c.incident_id == inc)).all()
                if not msgs:
                    continue
                last = conn.execute(
                    sa.select(alert_events.c.id, alert_events.c.alert_id, alert_events.c.at)
                    .join(alerts, alerts.c.id == alert_events.c.alert_id)
                    .where(alerts.c.incident_id == inc)
                    .order_by(alert_events.c.id.desc()).limit(1)).first()
                if last is None:
                    continue

                def add(channel: str, kind: str, nth: int = 0, inc: int = inc,
                        last: Any = last) -> None:
                    self.add_delivery(conn, event_id=last.id, alert_id=last.alert_id,
                                      incident_id=inc, channel=channel, kind=kind, now=now,
                                      due=now, nth=nth)

                for route, (after, to) in escalations.items():
                    pages = [m.created_at for m in msgs
                             if m.kind == "page" and m.channel in route_channels[route]]
                    if not pages or now - min(pages) < after:
                        continue
                    for c in to:
                        if not any(m.channel == c and m.kind == "unacknowledged"
                                   for m in msgs):
                            add(c, "unacknowledged")
                            queued += 1
                if repeat <= 0:
                    continue
                for c in sorted({m.channel for m in msgs}):
                    latest = max(m.created_at for m in msgs if m.channel == c)
                    if now - max(latest, last.at) >= repeat:
                        add(c, "reminder", nth=1 + sum(
                            1 for m in msgs if m.channel == c and m.kind == "reminder"))
                        queued += 1
        return queued

    # -- the outbox ------------------------------------------------------------------
    def due_deliveries(self, now: float, limit: int, *, holder: str = "local",
                       claim: float = 60.0, alive_within: float | None = None,
                       ) -> list[dict[str, Any]]:
        """Unsent deliveries whose time has come, oldest first, each only when no earlier
        delivery of the same incident to the same channel is still unsent (in order),
        claimed for ``holder`` until ``now + claim``: other instances skip them (``FOR
        UPDATE SKIP LOCKED`` while claiming, the claim after). One left ``sending`` when
        its claim ran out is in doubt: the process sending it died. With
        ``alive_within``, a claim also ends with its instance: one not seen for that long
        (``instances``: the lease keeper's heartbeat) is dead, its claims anyone's."""
        d, d2 = deliveries, deliveries.alias("earlier")
        earlier = sa.exists().where(d2.c.incident_id == d.c.incident_id,
                                    d2.c.channel == d.c.channel,
                                    d2.c.status.in_(UNSENT), d2.c.id < d.c.id)
        q = (sa.select(d.c.id, d.c.channel, d.c.key.label("delivery_key"), d.c.attempts,
                       d.c.created_at, d.c.alert_id,
                       d.c.incident_id, d.c.kind, d.c.status, d.c.next_at,
                       alert_events.c.event, alert_events.c.severity, alert_events.c.step,
                       alert_events.c.at, alert_events.c.summary, alert_events.c.playbook,
                       alert_events.c.signals, alert_events.c.top_posts, alerts.c.rule,
                       alerts.c.scope, alerts.c.key, alerts.c.topic)
             .join(alert_events, alert_events.c.id == d.c.event_id)
             .join(alerts, alerts.c.id == d.c.alert_id)
             .where(d.c.status.in_(UNSENT), d.c.next_at <= now, ~earlier,
                    sa.or_(d.c.claim_until.is_(None), d.c.claim_until < now,
                           *([d.c.claimed_by.not_in(
                               sa.select(instances.c.name)
                               .where(instances.c.seen_at >= now - alive_within))]
                             if alive_within is not None else [])))
             .order_by(d.c.id).limit(limit)
             .with_for_update(of=d, skip_locked=True))
        with self._errors("claiming from the outbox"), self.engine.begin() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
            if rows:
                conn.execute(d.update().where(d.c.id.in_([r["id"] for r in rows]))
                             .values(claimed_by=holder, claim_until=now + claim))
        for r in rows:
            r["signals"] = orjson.loads(r["signals"])
            r["top_posts"] = orjson.loads(r["top_posts"])
        return rows

    def message_context(self, incident_id: int, channel: str, at: float
                        ) -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
        """For rendering a message about event time ``at``: the incident, its alerts as
        they stood then (opened by then; firing or resolved, at the severity of their
        latest event by then), and the service's handle on the first message sent about
        it on this channel (updates reply in its thread)."""
        q = (sa.select(deliveries.c.ref).where(
            deliveries.c.incident_id == incident_id, deliveries.c.channel == channel,
            deliveries.c.status == "sent", deliveries.c.ref.is_not(None))
             .order_by(deliveries.c.id).limit(1))
        with self._errors("reading the outbox"), self.engine.connect() as conn:
            members = []
            for a in self.incident_alerts(conn, incident_id):
                last = conn.execute(
                    sa.select(alert_events.c.event, alert_events.c.severity)
                    .where(alert_events.c.alert_id == a["id"], alert_events.c.at <= at)
                    .order_by(alert_events.c.at.desc(), alert_events.c.id.desc())
                    .limit(1)).first()
                if last is not None:
                    members.append({**a, "severity": last.severity,
                                    "state": "resolved" if last.event == "resolved"
                                    else "firing"})
            return self.get_incident(conn, incident_id), members, conn.execute(q).scalar()

    def volume(self, *, thread: str | None, topic: str | None, end: float, span: float,
               step: float) -> list[int]:
        """Mentions per ``step`` seconds in ``[end - span, end)``, of a thread or a topic
        (the chart of a message), from the stored mentions."""
        start = end - span
        q = sa.select(mentions.c.created_at).where(mentions.c.created_at >= start,
                                                   mentions.c.created_at < end)
        if thread is not None:
            q = q.where(mentions.c.thread_id == thread)
        elif topic is not None:
            q = q.where((sa.literal(",") + mentions.c.topics + sa.literal(","))
                        .contains(f",{topic},", autoescape=True))
        counts = [0] * max(1, round(span / step))
        with self._errors("reading mentions"), self.engine.connect() as conn:
            for (t,) in conn.execute(q):
                i = int((t - start) // step)
                if 0 <= i < len(counts):
                    counts[i] += 1
        return counts

    def mark_sending(self, delivery_id: int, at: float, *, holder: str = "local",
                     claim: float = 60.0) -> bool:
        """Committed before a send: if the process dies before the answer is recorded, the
        delivery is found ``sending`` (in doubt) once its claim runs out, not merely
        pending. False when ``holder`` no longer holds the claim (another instance took
        it): not sent here."""
        d = deliveries
        with self.transaction() as conn:
            done = conn.execute(d.update().where(d.c.id == delivery_id, d.c.claimed_by == holder)
                                .values(status="sending", next_at=at, claim_until=at + claim))
            return bool(done.rowcount)

    def record_attempt(self, delivery_id: int, at: float, outcome: str, detail: str, *,
                       status: str, next_at: float | None = None,
                       ref: str | None = None) -> None:
        """One attempt, kept for the audit trail, and the delivery's new state."""
        values: dict[str, Any] = {"status": status, "attempts": deliveries.c.attempts + 1,
                                  "claimed_by": None, "claim_until": None}
        if status == "sent":
            values.update(sent_at=at, ref=ref, last_error=None)
        else:
            values["last_error"] = detail
        if next_at is not None:
            values["next_at"] = next_at
        with self.transaction() as conn:
            conn.execute(delivery_attempts.insert().values(
                delivery_id=delivery_id, at=at, outcome=outcome, detail=detail[:500]))
            conn.execute(deliveries.update().where(deliveries.c.id == delivery_id)
                         .values(**values))

    def list_instances(self, now: float) -> list[dict[str, Any]]:
        """The instances seen, newest first, each with the leases it holds now."""
        with self._errors("reading instances"), self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(
                sa.select(instances).order_by(instances.c.seen_at.desc()))]
            held = conn.execute(sa.select(leases.c.holder, leases.c.name).where(
                leases.c.expires_at >= now, leases.c.holder.is_not(None))).all()
        for r in rows:
            r["leases"] = sorted(name for holder, name in held if holder == r["name"])
        return rows

    def ping(self) -> None:
        """A round trip to the database (StoreError when it does not answer)."""
        with self._errors("reaching the database"), self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def outbox_backlog(self) -> tuple[int, float | None]:
        """Messages not sent yet, and when the oldest of them was queued."""
        q = sa.select(sa.func.count(), sa.func.min(deliveries.c.created_at)).where(
            deliveries.c.status.in_(UNSENT))
        with self._errors("reading the outbox"), self.engine.connect() as conn:
            n, oldest = conn.execute(q).one()
        return int(n), oldest

    def outbox_summary(self) -> dict[str, Any]:
        """Deliveries by status, and the latest failure (for ``status``)."""
        with self._errors("reading the outbox"), self.engine.connect() as conn:
            counts = dict(conn.execute(sa.select(deliveries.c.status, sa.func.count())
                                       .group_by(deliveries.c.status)).all())
            failed = conn.execute(sa.select(deliveries.c.channel, deliveries.c.last_error)
                                  .where(deliveries.c.status == "failed")
                                  .order_by(deliveries.c.id.desc()).limit(1)).first()
        return {"pending": counts.get("pending", 0) + counts.get("sending", 0),
                "sent": counts.get("sent", 0),
                "failed": counts.get("failed", 0),
                "last_failure": f"{failed[0]}: {failed[1]}" if failed else None}

    def list_deliveries(self) -> list[dict[str, Any]]:
        """Every delivery with its attempts (the audit trail), oldest first."""
        with self._errors("reading the outbox"), self.engine.connect() as conn:
            out = [dict(r._mapping) for r in conn.execute(
                sa.select(deliveries).order_by(deliveries.c.id))]
            tries: dict[int, list[dict[str, Any]]] = {}
            for r in conn.execute(sa.select(delivery_attempts)
                                  .order_by(delivery_attempts.c.id)):
                tries.setdefault(r.delivery_id, []).append(dict(r._mapping))
        for d in out:
            d["tries"] = tries.get(d["id"], [])
        return out

    def list_events(self) -> list[dict[str, Any]]:
        q = (sa.select(alert_events, alerts.c.rule, alerts.c.scope, alerts.c.key, alerts.c.topic)
             .join(alerts, alerts.c.id == alert_events.c.alert_id)
             .order_by(alert_events.c.at, alert_events.c.id))
        with self._errors("reading alert events"), self.engine.connect() as conn:
            out = []
            for row in conn.execute(q):
                d = dict(row._mapping)
                d["signals"] = orjson.loads(d["signals"])
                d["top_posts"] = orjson.loads(d["top_posts"])
                out.append(d)
            return out

    def open_alerts(self) -> list[dict[str, Any]]:
        """Firing alerts, newest first, with their latest event's summary."""
        latest = (sa.select(alert_events.c.summary)
                  .where(alert_events.c.alert_id == alerts.c.id)
                  .order_by(alert_events.c.at.desc(), alert_events.c.id.desc())
                  .limit(1).scalar_subquery())
        q = (sa.select(alerts, latest.label("summary")).where(alerts.c.state == "firing")
             .order_by(alerts.c.updated_at.desc()))
        with self._errors("reading alerts"), self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    # -- the frontline's record ------------------------------------------------------
    def list_alerts(self, *, state: str | None = None, limit: int = 50,
                    ) -> list[dict[str, Any]]:
        """Alerts, newest first, with their incident's acknowledgement."""
        latest = (sa.select(alert_events.c.summary)
                  .where(alert_events.c.alert_id == alerts.c.id)
                  .order_by(alert_events.c.id.desc()).limit(1).scalar_subquery())
        q = (sa.select(alerts, latest.label("summary"), incidents.c.acked_by,
                       incidents.c.acked_at)
             .outerjoin(incidents, incidents.c.id == alerts.c.incident_id)
             .order_by(alerts.c.opened_at.desc(), alerts.c.id.desc()).limit(limit))
        if state is not None:
            q = q.where(alerts.c.state == state)
        with self._errors("reading alerts"), self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def alert_record(self, alert_id: int) -> dict[str, Any] | None:
        """An alert, its incident, its events, and every message about the incident with
        each attempt (the audit trail)."""
        with self._errors("reading alerts"), self.engine.connect() as conn:
            row = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).first()
            if row is None:
                return None
            out = dict(row._mapping)
            out["events"] = [dict(r._mapping) for r in conn.execute(
                sa.select(alert_events).where(alert_events.c.alert_id == alert_id)
                .order_by(alert_events.c.id))]
            inc = out["incident_id"]
            out["incident"] = self.get_incident(conn, inc) if inc is not None else None
            out["incident_alerts"] = self.incident_alerts(conn, inc) if inc is not None else []
            where = (deliveries.c.incident_id == inc) if inc is not None else (
                deliveries.c.alert_id == alert_id)
            msgs = [dict(r._mapping) for r in conn.execute(
                sa.select(deliveries, alert_events.c.event, alert_events.c.severity)
                .join(alert_events, alert_events.c.id == deliveries.c.event_id)
                .where(where).order_by(deliveries.c.id))]
            ids = [m["id"] for m in msgs]
            tries: dict[int, list[dict[str, Any]]] = {}
            if ids:
                for r in conn.execute(sa.select(delivery_attempts).where(
                        delivery_attempts.c.delivery_id.in_(ids))
                        .order_by(delivery_attempts.c.id)):
                    tries.setdefault(r.delivery_id, []).append(dict(r._mapping))
            for m in msgs:
                m["tries"] = tries.get(m["id"], [])
            out["messages"] = msgs
        for e in out["events"]:
            e["signals"] = orjson.loads(e["signals"])
            e["top_posts"] = orjson.loads(e["top_posts"])
        return out

    def acknowledge(self, alert_id: int, by: str, note: str, at: float) -> dict[str, Any]:
        """Someone owns it: the alert's incident is acknowledged (reminders stop)."""
        with self.transaction() as conn:
            row = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).first()
            if row is None:
                raise NotFound(f"no alert {alert_id}", hint="see: stormwatch alerts list")
            # an alert recorded without notifications has no incident yet: it gets one
            inc, new = self.incident_of(conn, alert_id, row.topic, row.severity,
                                        row.opened_at, join_open=row.state == "firing")
            if new and row.state != "firing":  # acknowledged after the fact
                self.update_incident(conn, inc, state="resolved", resolved_at=row.resolved_at)
            self.update_incident(conn, inc, acked_at=at, acked_by=by, ack_note=note)
            return self.get_incident(conn, inc)

    def resolve_by_hand(self, alert_id: int, by: str, note: str, at: float, *,
                        plan: Callable[[Connection, list[AlertEvent],
                                        list[tuple[int, int]]], None] | None = None,
                        ) -> AlertEvent | None:
        """Close a firing alert by hand: a ``resolved`` event saying who and why, planned
        for delivery (``plan``) in the same transaction. None when it is not firing. A
        running detectors learn of it from the feed."""
        with self.transaction() as conn:
            row = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).first()
            if row is None:
                raise NotFound(f"no alert {alert_id}", hint="see: stormwatch alerts list")
            if row.state != "firing":
                return None
            ev = AlertEvent(event="resolved", rule=row.rule, severity=row.severity,
                            scope=row.scope, key=row.key, topic=row.topic, at=at,
                            signals={"resolved_by": by},
                            summary=f"resolved by {by}" + (f": {note}" if note else ""),
                            step=-1)  # not an engine step: never collides with one
            ids = self.add_events(conn, [ev])
            conn.execute(alerts.update().where(alerts.c.id == alert_id)
                         .values(resolved_by=by))
            # the detector of its topic learns of it from the feed, at this place
            conn.execute(feed_extra.insert().values(
                seq=self.next_seq(conn, 1), kind="closed", rule=row.rule, key=row.key,
                topics=row.topic))
            if plan is not None:
                plan(conn, [ev], ids)
            return ev

    # -- silences ----------------------------------------------------------------------
    def add_silence(self, *, rule: str | None, topic: str | None, key: str | None,
                    scope: str | None, starts_at: float, ends_at: float, by: str,
                    comment: str) -> int:
        with self.transaction() as conn:
            return int(conn.execute(silences.insert().values(
                rule=rule, topic=topic, key=key, scope=scope, starts_at=starts_at,
                ends_at=ends_at, created_by=by, comment=comment)).inserted_primary_key[0])

    def list_silences(self, now: float, *, all_: bool = False) -> list[dict[str, Any]]:
        q = sa.select(silences).order_by(silences.c.id)
        if not all_:
            q = q.where(silences.c.ends_at > now, silences.c.expired_at.is_(None))
        with self._errors("reading silences"), self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def active_silences(self, conn: Connection, now: float) -> list[dict[str, Any]]:
        q = sa.select(silences).where(silences.c.starts_at <= now, silences.c.ends_at > now,
                                      silences.c.expired_at.is_(None))
        return [dict(r._mapping) for r in conn.execute(q)]

    def expire_silence(self, silence_id: int, now: float) -> bool:
        """End a silence now; False when there is no such active silence."""
        with self.transaction() as conn:
            done = conn.execute(silences.update().where(
                silences.c.id == silence_id, silences.c.expired_at.is_(None),
                silences.c.ends_at > now).values(expired_at=now))
            return bool(done.rowcount)

    # -- live sources ----------------------------------------------------------------
    def load_sources(self) -> dict[str, SourceState]:
        with self._errors("reading sources"), self.engine.connect() as conn:
            rows = conn.execute(sa.select(sources).order_by(sources.c.name)).mappings().all()
        out = {}
        for r in rows:
            st = SourceState(name=r["name"],
                             cursor=orjson.loads(r["cursor"]) if r["cursor"] else None)
            for key in SOURCE_HEALTH:
                if r[key] is not None:
                    setattr(st, key, r[key])
            out[st.name] = st
        return out

    def save_source(self, conn: Connection, st: SourceState) -> None:
        """Write a source's cursor and health (with the mentions of the same transaction)."""
        values: dict[str, Any] = {key: getattr(st, key) for key in SOURCE_HEALTH}
        values["cursor"] = orjson.dumps(st.cursor).decode() if st.cursor is not None else None
        ins = self.upsert(sources)
        conn.execute(ins.values(name=st.name, **values).on_conflict_do_update(
            index_elements=["name"], set_=values))

    # -- engine state ----------------------------------------------------------------
    def save_state(self, conn: Connection, name: str, state: dict[str, Any], at: float,
                   ) -> bytes:
        """Write a state snapshot; returns it serialised (a copy nothing else shares)."""
        blob = orjson.dumps(state)
        table = engine_state
        ins = self.upsert(table)
        conn.execute(ins.values(name=name, state=blob, updated_at=at).on_conflict_do_update(
            index_elements=["name"], set_={"state": blob, "updated_at": at}))
        return blob

    def save_partition(self, conn: Connection, name: str, seq: int, state: bytes,
                       at: float) -> None:
        """A detector's checkpoint: its state as of feed number ``seq``."""
        values = {"seq": seq, "state": state, "updated_at": at}
        ins = self.upsert(partitions)
        conn.execute(ins.values(name=name, **values).on_conflict_do_update(
            index_elements=["name"], set_=values))

    def mark_emitted(self, conn: Connection, name: str, seq: int) -> None:
        """The events a detector caused up to feed number ``seq`` are stored (in this
        transaction): a re-read of the feed from an older checkpoint drops them."""
        conn.execute(partitions.update().where(partitions.c.name == name)
                     .values(emitted=seq))

    def load_partition(self, name: str) -> tuple[int, dict[str, Any], int] | None:
        """(checkpoint place, state, emitted place) of a detector, if it has one."""
        with self._errors("loading detector state"), self.engine.connect() as conn:
            row = conn.execute(sa.select(partitions.c.seq, partitions.c.state,
                                         partitions.c.emitted)
                               .where(partitions.c.name == name)).first()
        return ((int(row.seq), orjson.loads(row.state), int(row.emitted))
                if row is not None else None)

    def load_state(self, name: str) -> dict[str, Any] | None:
        with self._errors("loading engine state"), self.engine.connect() as conn:
            blob = conn.execute(sa.select(engine_state.c.state).where(
                engine_state.c.name == name)).scalar()
        return orjson.loads(blob) if blob else None


def event_of(row: dict[str, Any]) -> AlertEvent:
    """An alert event as stored (a row of ``list_events`` or ``due_deliveries``)."""
    return AlertEvent(event=row["event"], rule=row["rule"], severity=row["severity"],
                      scope=row["scope"], key=row["key"], topic=row["topic"], at=row["at"],
                      signals=row.get("signals") or {}, summary=row.get("summary") or "",
                      playbook=row.get("playbook") or "",
                      top_posts=tuple(row.get("top_posts") or ()), step=row.get("step", 0))


def _engagement(metrics: dict[str, Any]) -> int:
    return sum(v for v in metrics.values() if isinstance(v, int) and not isinstance(v, bool))


def _mention_of(r: Any, *, latest: bool = False) -> Mention:
    """A stored mention, with its engagement as counted (``latest``: as last refreshed)."""
    data = orjson.loads(r["data"]) if r["data"] else {}
    metrics = data.get("metrics", {})
    if latest and data.get("latest"):
        metrics = {**metrics, **data["latest"]}
    return Mention(id=r["id"], text=r["text"], created_at=r["created_at"], source=r["source"],
                   thread_id=r["thread_id"], parent_id=r["parent_id"], author=r["author"],
                   url=r["url"], title=r["title"], topic=data.get("topic"), lang=r["lang"],
                   author_followers=r["author_followers"], metrics=metrics,
                   extra=data.get("extra", {}),
                   topics=tuple(t for t in r["topics"].split(",") if t),
                   compound=r["compound"])


def _sqlite_pragmas_scratch(dbapi_conn: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_conn, record)
    dbapi_conn.execute("PRAGMA synchronous=OFF")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA cache_size=-65536")  # 64 MiB: index pages of a big replay stay hot
    cur.close()
