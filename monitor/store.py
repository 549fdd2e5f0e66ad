"""Storage: the only module that talks SQL. SQLite by default, PostgreSQL supported.

Tables (schema changes go through Alembic migrations in ``monitor/migrations``, applied
by ``Store.open``):

- ``mentions``: every in-scope mention with its sentiment and topics, keyed by its
  source-qualified id; inserting one twice changes nothing.
- ``alerts``: one row per alert (rule, scope key, opened), its state and severity.
- ``alert_events``: fired / escalated / resolved, with the numbers and top posts.
- ``engine_state``: the detector and alert state, so a restart forgets nothing.
- ``sources``: each live source's cursor (committed with the mentions it produced) and
  health (last success, last error, lag, mentions today).
- ``deliveries`` and ``delivery_attempts``: the outbox. A delivery per (alert event,
  channel), written in the transaction that wrote the event; every attempt and its result.
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

from monitor.errors import StoreError
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
    sa.Index("ix_mentions_created_at", "created_at"),
)

MENTION_COLUMNS = ("id", "source", "thread_id", "parent_id", "author", "created_at", "text",
                   "title", "url", "lang", "author_followers", "topics", "compound", "data")

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
    sa.Index("ix_alerts_open", "rule", "key", unique=True,
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
    sa.Index("ix_deliveries_due", "status", "next_at"),
)

delivery_attempts = sa.Table(
    "delivery_attempts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.Integer, sa.ForeignKey("deliveries.id"), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)

ENGINE_STATE = "engine"  # the engine_state row of the engine (replay --db and run share it)

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
            engine = sa.create_engine(url, future=True)
        except (sa.exc.ArgumentError, ImportError) as e:
            raise StoreError(f"cannot use database URL: {e}",
                             hint="e.g. sqlite:///stormwatch.db or "
                                  "postgresql+psycopg://user@host/db") from None
        if engine.dialect.name == "sqlite":
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
        conn.exec_driver_sql(self._insert_mention, rows)

    def iter_mentions(self, *, since: float | None = None, until: float | None = None,
                      topic: str | None = None, batch: int = 5000) -> Iterator[Mention]:
        q = sa.select(mentions).order_by(mentions.c.created_at, mentions.c.id)
        if since is not None:
            q = q.where(mentions.c.created_at >= since)
        if until is not None:
            q = q.where(mentions.c.created_at < until)
        with self._errors("reading mentions"), self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(q)
            for row in result:
                m = _mention_of(row._mapping)
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
                old = data.get("metrics", {})
                new = {**old, **chunk[mid]}
                if new == old:
                    continue
                data["metrics"] = new
                conn.execute(mentions.update().where(mentions.c.id == mid).values(
                    data=orjson.dumps(data, default=str).decode()))
                growth = _engagement(new) - _engagement(old)
                if growth > 0:
                    grown.append((thread, [t for t in topics.split(",") if t], growth))
        return grown

    def known_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these mention ids are stored already (dedup across restarts)."""
        found: set[str] = set()
        with self._errors("reading mentions"), self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                chunk = list(ids[i:i + 500])
                found.update(conn.execute(
                    sa.select(mentions.c.id).where(mentions.c.id.in_(chunk))).scalars())
        return found

    def count_mentions(self) -> int:
        with self._errors("counting mentions"), self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(mentions)).scalar_one())

    # -- alerts ----------------------------------------------------------------------
    def add_events(self, conn: Connection, events: Sequence[AlertEvent], *,
                   route: Callable[[AlertEvent], Sequence[str]] | None = None,
                   now: float = 0.0) -> None:
        """Record alert events and the alert rows they open, update and close; with
        ``route``, each event's deliveries too (the outbox), in the same transaction."""
        dumps = orjson.dumps
        for ev in events:
            open_id = conn.execute(sa.select(alerts.c.id).where(
                alerts.c.rule == ev.rule, alerts.c.key == ev.key,
                alerts.c.state == "firing")).scalar()
            if ev.event == "fired" or open_id is None:
                if open_id is not None:  # a stale open row: close it before reopening
                    conn.execute(alerts.update().where(alerts.c.id == open_id).values(
                        state="resolved", resolved_at=ev.at, updated_at=ev.at))
                open_id = conn.execute(alerts.insert().values(
                    rule=ev.rule, scope=ev.scope, key=ev.key, topic=ev.topic, state="firing",
                    severity=ev.severity, opened_at=ev.at, updated_at=ev.at)
                ).inserted_primary_key[0]
            values: dict[str, Any] = {"severity": ev.severity, "updated_at": ev.at}
            if ev.event == "resolved":
                values.update(state="resolved", resolved_at=ev.at)
            conn.execute(alerts.update().where(alerts.c.id == open_id).values(**values))
            event_id = conn.execute(alert_events.insert().values(
                alert_id=open_id, event=ev.event, severity=ev.severity, step=ev.step, at=ev.at,
                summary=ev.summary, playbook=ev.playbook,
                signals=dumps(ev.signals).decode(), top_posts=dumps(list(ev.top_posts)).decode())
            ).inserted_primary_key[0]
            for channel in route(ev) if route is not None else ():
                conn.execute(deliveries.insert().values(
                    event_id=event_id, alert_id=open_id, channel=channel,
                    key=f"{open_id}:{ev.event}:{ev.step}:{channel}", status="pending",
                    attempts=0, next_at=now, created_at=now))

    # -- the outbox ------------------------------------------------------------------
    def due_deliveries(self, now: float, limit: int) -> list[dict[str, Any]]:
        """Pending deliveries whose time has come, oldest first, each only when no earlier
        delivery of the same alert to the same channel is still pending (in order)."""
        d, d2 = deliveries, deliveries.alias("earlier")
        earlier = sa.exists().where(d2.c.alert_id == d.c.alert_id,
                                    d2.c.channel == d.c.channel,
                                    d2.c.status == "pending", d2.c.id < d.c.id)
        q = (sa.select(d.c.id, d.c.channel, d.c.key, d.c.attempts, d.c.created_at, d.c.alert_id,
                       alert_events.c.event, alert_events.c.severity, alert_events.c.step,
                       alert_events.c.at, alert_events.c.summary, alert_events.c.playbook,
                       alert_events.c.signals, alert_events.c.top_posts, alerts.c.rule,
                       alerts.c.scope, alerts.c.key, alerts.c.topic)
             .join(alert_events, alert_events.c.id == d.c.event_id)
             .join(alerts, alerts.c.id == d.c.alert_id)
             .where(d.c.status == "pending", d.c.next_at <= now, ~earlier)
             .order_by(d.c.id).limit(limit))
        with self._errors("reading the outbox"), self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        for r in rows:
            r["signals"] = orjson.loads(r["signals"])
            r["top_posts"] = orjson.loads(r["top_posts"])
        return rows

    def thread_ref(self, alert_id: int, channel: str) -> str | None:
        """The service's handle on the first message sent for this alert on this channel
        (updates reply in its thread)."""
        q = (sa.select(deliveries.c.ref).where(
            deliveries.c.alert_id == alert_id, deliveries.c.channel == channel,
            deliveries.c.status == "sent", deliveries.c.ref.is_not(None))
             .order_by(deliveries.c.id).limit(1))
        with self._errors("reading the outbox"), self.engine.connect() as conn:
            return conn.execute(q).scalar()

    def record_attempt(self, delivery_id: int, at: float, outcome: str, detail: str, *,
                       status: str, next_at: float | None = None,
                       ref: str | None = None) -> None:
        """One attempt, kept for the audit trail, and the delivery's new state."""
        values: dict[str, Any] = {"status": status, "attempts": deliveries.c.attempts + 1}
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

    def outbox_summary(self) -> dict[str, Any]:
        """Deliveries by status, and the latest failure (for ``status``)."""
        with self._errors("reading the outbox"), self.engine.connect() as conn:
            counts = dict(conn.execute(sa.select(deliveries.c.status, sa.func.count())
                                       .group_by(deliveries.c.status)).all())
            failed = conn.execute(sa.select(deliveries.c.channel, deliveries.c.last_error)
                                  .where(deliveries.c.status == "failed")
                                  .order_by(deliveries.c.id.desc()).limit(1)).first()
        return {"pending": counts.get("pending", 0), "sent": counts.get("sent", 0),
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
        ins = sqlite.insert(sources) if self.dialect == "sqlite" else postgresql.insert(sources)
        conn.execute(ins.values(name=st.name, **values).on_conflict_do_update(
            index_elements=["name"], set_=values))

    # -- engine state ----------------------------------------------------------------
    def save_state(self, conn: Connection, name: str, state: dict[str, Any], at: float,
                   ) -> bytes:
        """Write a state snapshot; returns it serialised (a copy nothing else shares)."""
        blob = orjson.dumps(state)
        table = engine_state
        ins = (sqlite.insert(table) if self.dialect == "sqlite" else postgresql.insert(table))
        conn.execute(ins.values(name=name, state=blob, updated_at=at).on_conflict_do_update(
            index_elements=["name"], set_={"state": blob, "updated_at": at}))
        return blob

    def load_state(self, name: str) -> dict[str, Any] | None:
        with self._errors("loading engine state"), self.engine.connect() as conn:
            blob = conn.execute(sa.select(engine_state.c.state).where(
                engine_state.c.name == name)).scalar()
        return orjson.loads(blob) if blob else None


def _engagement(metrics: dict[str, Any]) -> int:
    return sum(v for v in metrics.values() if isinstance(v, int) and not isinstance(v, bool))


def _mention_of(r: Any) -> Mention:
    data = orjson.loads(r["data"]) if r["data"] else {}
    return Mention(id=r["id"], text=r["text"], created_at=r["created_at"], source=r["source"],
                   thread_id=r["thread_id"], parent_id=r["parent_id"], author=r["author"],
                   url=r["url"], title=r["title"], topic=data.get("topic"), lang=r["lang"],
                   author_followers=r["author_followers"], metrics=data.get("metrics", {}),
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
