"""Retention deletes old mentions, but never one a detector has not counted, one of a
thread with an open alert, or one an open incident's chart draws."""

from __future__ import annotations

from monitor.models import AlertEvent, Mention
from monitor.retention import prune
from monitor.store import Store

DAY = 86400.0
NOW = 1_714_560_000.0 + 100 * DAY


def mention(i: int, age_days: float, thread: str = "reddit:t3_x",
            topic: str = "acme") -> Mention:
    return Mention(id=f"reddit:t1_{i}", text=f"{topic} thing {i}",
                   created_at=NOW - age_days * DAY,
                   source="reddit", thread_id=thread, author=f"u{i}", topics=(topic,),
                   compound=0.0)


def ids(store: Store) -> set[str]:
    return {m.id for m in store.iter_mentions()}


def test_old_counted_mentions_go_and_the_rest_stay(store: Store) -> None:
    with store.transaction() as conn:
        store.add_mentions(conn, [mention(i, 120 - i) for i in range(10)])  # seq 1..10
        store.add_mentions(conn, [mention(50, 100, thread="reddit:t3_angry")])  # seq 11
        store.add_mentions(conn, [mention(60, 95)])                             # seq 12
        store.add_engagement(conn, [("reddit:t3_x", ["acme"], 5)])              # seq 13
        store.save_partition(conn, "topic:acme", 10, b"{}", NOW)  # counted up to 10
        store.add_events(conn, [AlertEvent(
            event="fired", rule="negative-thread-taking-off", severity="warning",
            scope="thread", key="reddit:t3_angry", topic="acme", at=NOW - 100 * DAY, signals={})])
    gone = prune(store, NOW, keep=90 * DAY)
    # ages 120..111 counted and old: all ten go; the open alert's thread stays; the one
    # not counted yet (seq 12) stays however old
    assert gone == 10
    assert ids(store) == {"reddit:t1_50", "reddit:t1_60"}
    with store.transaction() as conn:
        store.save_partition(conn, "topic:acme", 13, b"{}", NOW)
    assert prune(store, NOW, keep=90 * DAY) == 1   # now counted: it goes
    assert store.feed(0) == [(11, store.feed(0)[0][1])]  # engagement counted: gone too


def test_an_open_incident_keeps_the_hours_before_it(store: Store) -> None:
    from monitor.clock import FixedClock
    from monitor.notify.plan import Planner
    from monitor.notify.routes import Routing

    with store.transaction() as conn:
        store.add_mentions(conn, [mention(1, 30.5), mention(2, 30.1), mention(3, 40),
                                  mention(4, 30.1, topic="globex")])
        store.save_partition(conn, "topic:acme", 4, b"{}", NOW)
        Planner(Routing([]), store, FixedClock(NOW)).record(conn, [AlertEvent(
            event="fired", rule="topic-negative-spike", severity="warning", scope="topic",
            key="acme", topic="acme", at=NOW - 30 * DAY, signals={})])
    # kept: 30.1 days old, within the 6 hours before acme's incident opened (30 days
    # ago); the same age in another topic goes
    assert prune(store, NOW, keep=7 * DAY) == 3
    assert ids(store) == {"reddit:t1_2"}


def test_nothing_is_deleted_before_any_detector_counted(store: Store) -> None:
    with store.transaction() as conn:
        store.add_mentions(conn, [mention(i, 200) for i in range(5)])
    assert prune(store, NOW, keep=DAY) == 0
    assert len(ids(store)) == 5
