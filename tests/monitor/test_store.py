"""The store on SQLite and on PostgreSQL: migrations, idempotent mentions, alerts, state."""


import pytest
import sqlalchemy as sa

from monitor.errors import StoreError
from monitor.models import AlertEvent, Mention
from monitor.store import Store
from tests.conftest import T0


def mentions(n: int) -> list[Mention]:
    return [Mention(id=f"reddit:t1_{i}", text=f"acme #{i} <b>&", created_at=T0 + i,
                    source="reddit", thread_id="reddit:t3_x", author=f"u{i}",
                    metrics={"score": i}, extra={"subreddit": "acme"}, topics=("acme",),
                    compound=-0.5) for i in range(n)]


def test_mentions_are_idempotent_and_round_trip(store: Store) -> None:
    ms = mentions(50)
    with store.transaction() as conn:
        store.add_mentions(conn, ms)
    with store.transaction() as conn:
        store.add_mentions(conn, ms[10:30] + mentions(60)[50:])
    assert store.count_mentions() == 60
    back = list(store.iter_mentions(since=T0 + 5, until=T0 + 8))
    assert [m.id for m in back] == ["reddit:t1_5", "reddit:t1_6", "reddit:t1_7"]
    assert back[0].to_json() == ms[5].to_json()
    assert list(store.iter_mentions(topic="other")) == []


def test_migrations_run_once_and_again(store: Store) -> None:
    store.migrate()  # a second start changes nothing
    with store.engine.connect() as c:
        version = c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    from alembic.script import ScriptDirectory

    from monitor.migrations import config

    assert version == ScriptDirectory.from_config(config()).get_current_head() == "0005"


def test_a_database_of_the_first_release_upgrades_keeping_its_data(tmp_path: str) -> None:
    from monitor.migrations import upgrade

    url = f"sqlite:///{tmp_path}/old.db"
    old = Store.open(url, migrate=False)
    upgrade(old.engine, "0001")
    with old.transaction() as conn:
        conn.execute(sa.text("INSERT INTO mentions (id, source, thread_id, created_at, text, "
                             "topics) VALUES ('reddit:t1_a', 'reddit', 'reddit:t3_x', 1.0, "
                             "'acme', 'acme')"))
    old.close()
    new = Store.open(url)
    try:
        assert new.count_mentions() == 1 and new.load_sources() == {}
    finally:
        new.close()


def ev(kind: str, at: float, severity: str = "warning", step: int = 0) -> AlertEvent:
    return AlertEvent(event=kind, rule="r", severity=severity, scope="topic", key="acme",
                      topic="acme", at=at, signals={"mentions": 3}, step=step,
                      top_posts=({"id": "x", "text": "<!channel>"},))


def test_alert_events_open_update_and_close_alerts(store: Store) -> None:
    with store.transaction() as conn:
        store.add_events(conn, [ev("fired", T0), ev("escalated", T0 + 60, "critical", 1)])
    with store.transaction() as conn:
        store.add_events(conn, [ev("resolved", T0 + 600, "critical", 1), ev("fired", T0 + 9000)])
    events = store.list_events()
    assert [(e["event"], e["alert_id"]) for e in events] == [
        ("fired", 1), ("escalated", 1), ("resolved", 1), ("fired", 2)]
    assert events[0]["top_posts"] == [{"id": "x", "text": "<!channel>"}]
    with store.engine.connect() as c:
        rows = c.execute(sa.text("SELECT id, state, severity FROM alerts ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [(1, "resolved", "critical"), (2, "firing", "warning")]


def test_engine_state_is_saved_and_replaced(store: Store) -> None:
    assert store.load_state("engine") is None
    with store.transaction() as conn:
        store.save_state(conn, "engine", {"now": 1.0, "topics": []}, 1.0)
    with store.transaction() as conn:
        store.save_state(conn, "engine", {"now": 2.0}, 2.0)
    assert store.load_state("engine") == {"now": 2.0}


def test_a_failed_transaction_keeps_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as conn:
        store.add_mentions(conn, mentions(5))
        raise RuntimeError("crash mid-batch")
    assert store.count_mentions() == 0


def test_bad_urls_are_clear_errors(tmp_path: str) -> None:
    with pytest.raises(StoreError, match="cannot use database URL"):
        Store.open("nosuchdb://x")
    with pytest.raises(StoreError, match="unsupported database 'mysql'|cannot use"):
        Store.open("mysql://u@localhost/x")
    with pytest.raises(StoreError, match="database error"):
        Store.open("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")


def test_hostile_field_sizes_are_stored_whole(store: Store) -> None:
    """Ids, authors, languages and sources come from outside: no length limit may drop a
    batch (PostgreSQL enforces VARCHAR lengths)."""
    long = Mention(id="rss:" + "https://example.com/" + "a" * 3000, text="x" * 100_000,
                   created_at=T0, source="rss" + "s" * 100, author="\u202e" + "b" * 1000,
                   lang="en-" + "x" * 100, thread_id="rss:" + "t" * 2000, topics=("acme",))
    with store.transaction() as conn:
        store.add_mentions(conn, [long])
    (got,) = list(store.iter_mentions())
    assert (got.id, got.author, got.lang, got.thread_id, len(got.text)) == (
        long.id, long.author, long.lang, long.thread_id, 100_000)


def test_migrations_build_exactly_the_schema_the_code_declares(store: Store) -> None:
    """A throwaway replay database is made with ``create_all`` from the declared tables;
    a kept one by the migrations: the two must not drift apart."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from monitor.store import metadata

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_a_scratch_database_has_the_declared_schema(tmp_path: str) -> None:
    s = Store.open(f"sqlite:///{tmp_path}/scratch.db", durable=False)
    try:
        with s.transaction() as conn:
            s.add_mentions(conn, mentions(3))
        assert s.count_mentions() == 3
        assert set(sa.inspect(s.engine).get_table_names()) == {
            "mentions", "alerts", "alert_events", "engine_state", "sources", "deliveries",
            "delivery_attempts", "incidents", "silences", "leases", "instances", "counters",
            "feed_extra", "partitions", "source_volume"}
    finally:
        s.close()


def test_source_cursor_and_health_round_trip(store: Store) -> None:
    from monitor.models import SourceState

    st = SourceState(name="rss:acme-news", cursor={"etag": '"abc"', "seen": ["x", "y"]})
    st.succeeded(at=T0 + 100, stored=3, newest=T0 + 40)
    with store.transaction() as conn:
        store.save_source(conn, st)
    st.failed(at=T0 + 200, message="HTTP 503 from https://example.com/feed")
    st.succeeded(at=T0 + 86400, stored=2, newest=T0 + 86390)  # the next day
    with store.transaction() as conn:
        store.save_source(conn, st)
    back = store.load_sources()["rss:acme-news"]
    assert back == st
    assert (back.mentions_today, back.mentions_total, back.errors_in_a_row) == (2, 5, 0)
    assert back.lag == 10 and back.last_error == "HTTP 503 from https://example.com/feed"


def test_known_ids_finds_stored_mentions_in_chunks(store: Store) -> None:
    ms = mentions(1200)
    with store.transaction() as conn:
        store.add_mentions(conn, ms[:1100])
    ids = [m.id for m in ms]
    assert store.known_ids(ids) == set(ids[:1100])


def test_incidents_messages_chart_and_record_on_both_databases(store: Store) -> None:
    """The planner's and the outbox's queries, on SQLite and PostgreSQL alike."""
    from monitor.clock import FixedClock
    from monitor.notify.outbox import Outbox
    from monitor.notify.plan import Planner
    from monitor.notify.routes import Route, Routing

    with store.transaction() as conn:
        store.add_mentions(conn, mentions(30) + [Mention(
            id="reddit:t1_other", text="acme", created_at=T0 + 5, source="reddit",
            topics=("acmeish",))])
    routing = Routing([Route("care", ("slack",), escalate_after=600, escalate_to=("lead",))])
    planner = Planner(routing, store, FixedClock(T0 + 60))

    def ev(kind: str, severity: str = "warning", at: float = T0 + 30) -> AlertEvent:
        return AlertEvent(event=kind, rule="negative-thread-taking-off", severity=severity,
                          scope="thread", key="reddit:t3_x", topic="acme", at=at,
                          signals={"mentions": 30}, step=1 if kind == "escalated" else 0)

    with store.transaction() as conn:
        planner.record(conn, [ev("fired"), ev("escalated", "critical", T0 + 40)])
    assert [(d["kind"], d["status"]) for d in store.list_deliveries()] == [
        ("page", "pending"), ("escalation", "pending")]
    assert store.volume(thread="reddit:t3_x", topic="acme", end=T0 + 31, span=60,
                        step=15) == [0, 1, 15, 14]  # T0+0 | T0+1..15 | T0+16..29
    assert sum(store.volume(thread=None, topic="acme", end=T0 + 60, span=60, step=60)) == 30
    outbox = Outbox(store, {}, FixedClock(T0 + 60), routing=routing, repeat=3600)
    assert outbox.remind() == 0  # paged a moment ago: too soon to escalate
    rows = store.due_deliveries(T0 + 60, 10)
    assert [r["kind"] for r in rows] == ["page"] and rows[0]["key"] == "reddit:t3_x"
    store.mark_sending(rows[0]["id"], T0 + 60)
    store.record_attempt(rows[0]["id"], T0 + 61, "sent", "ok", status="sent", ref="1.2")
    incident, members, ref = store.message_context(rows[0]["incident_id"], "slack", T0 + 35)
    assert ref == "1.2" and [(a["state"], a["severity"]) for a in members] == [
        ("firing", "warning")]
    outbox.clock = FixedClock(T0 + 700)
    assert outbox.remind() == 1  # the lead hears of it
    record = store.alert_record(rows[0]["alert_id"])
    assert record is not None and [m["kind"] for m in record["messages"]] == [
        "page", "escalation", "unacknowledged"]
    assert record["messages"][0]["tries"][0]["outcome"] == "sent"
    sid = store.add_silence(rule=None, topic="acme", key=None, scope="thread",
                            starts_at=T0, ends_at=T0 + 99999, by="ana", comment="x")
    assert store.expire_silence(sid, T0 + 100)


def test_the_feed_stops_at_the_counter_as_committed(store: Store) -> None:
    """Two reads (mentions, other entries) see the feed up to the same number: the
    counter as committed before them. An entry numbered past it (a page another
    instance commits between the two reads) waits for the next read."""
    from monitor.store import feed_extra

    with store.transaction() as conn:
        store.add_mentions(conn, mentions(3))                       # 1..3
        store.add_clock(conn, T0 + 600)                             # 4
    with store.transaction() as conn:  # as if committed between the two reads
        conn.execute(feed_extra.insert().values(seq=9, kind="clock", at=T0 + 900))
    got = store.feed(0)
    assert [seq for seq, _ in got] == [1, 2, 3, 4]
    assert got[3][1] == ("clock", T0 + 600)
    with store.transaction() as conn:
        store.next_seq(conn, 5)                                     # the counter reaches 9
    assert [seq for seq, _ in store.feed(4)] == [9]
