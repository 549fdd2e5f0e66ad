"""Leases, fencing and outbox claims, on SQLite and on PostgreSQL, with a clock the test
moves: who holds what, when a dead holder's work is taken, and that a holder which
lost its lease cannot commit over its successor."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from monitor.clock import FixedClock
from monitor.config import default_rules_path
from monitor.detector import Detector
from monitor.engine import Engine
from monitor.leases import LeaseLost, Leases
from monitor.models import AlertEvent, Mention
from monitor.notify.plan import Planner
from monitor.notify.routes import Route, Routing
from monitor.rules import load_rules
from monitor.store import Store, sources
from tests.conftest import pg_store_url

T = 1_714_560_000.0
NAMES = ["source:reddit", "source:rss:a", "source:rss:b", "topic:acme", "topic:globex",
         "topic:initech", "topic:umbrella"]


def instance(store: Store, name: str, clock: FixedClock) -> Leases:
    return Leases(store, NAMES, holder=name, period=30.0, clock=clock)


def test_alone_an_instance_takes_everything_and_a_second_gets_half(store: Store) -> None:
    clock = FixedClock(T)
    a, b = instance(store, "a", clock), instance(store, "b", clock)
    assert set(a.keep()) == set(NAMES)
    assert b.keep() == {}                  # all held, and a is alive
    a.keep()                               # a sees b alive: its share is 4 of 7
    assert len(a.held) == 4
    got = b.keep()
    assert len(got) == 3 and not set(got) & set(a.held)
    clock.advance(10)
    assert len(a.keep()) == 4 and len(b.keep()) == 3  # stable: nothing moves


def test_a_dead_instance_s_leases_are_taken_after_one_period_not_before(store: Store) -> None:
    clock = FixedClock(T)
    a, b = instance(store, "a", clock), instance(store, "b", clock)
    a.keep()
    epochs = dict(a.held)
    clock.advance(29)                      # a died just after its last renewal
    assert b.keep() == {}
    clock.advance(2)                       # its leases have expired, its heartbeat is old
    got = b.keep()
    assert set(got) == set(NAMES)
    assert all(got[n] == epochs[n] + 1 for n in NAMES)  # a new epoch for every one


def test_a_holder_that_lost_its_lease_cannot_commit(store: Store) -> None:
    """An instance frozen past its lease wakes up and tries to commit a page: the fence
    refuses it and nothing of the transaction lands."""
    clock = FixedClock(T)
    a, b = instance(store, "a", clock), instance(store, "b", clock)
    a.keep()
    clock.advance(31)                      # a froze
    b.keep()
    with pytest.raises(LeaseLost), store.transaction() as conn:
        conn.execute(sources.insert().values(name="reddit", errors_in_a_row=0,
                                             mentions_today=0, mentions_total=1))
        a.fence(conn, "source:reddit")
    assert "reddit" not in store.load_sources()
    assert "source:reddit" not in a.held
    with store.transaction() as conn:      # the new holder commits
        b.fence(conn, "source:reddit")


def test_a_lease_given_back_on_a_clean_stop_is_taken_at_once(store: Store) -> None:
    clock = FixedClock(T)
    a, b = instance(store, "a", clock), instance(store, "b", clock)
    a.keep()
    a.release_all()
    assert set(b.keep()) == set(NAMES)     # no wait for the period


def test_a_renewal_after_expiry_is_refused_when_another_took_it(store: Store) -> None:
    clock = FixedClock(T)
    a, b = instance(store, "a", clock), instance(store, "b", clock)
    a.keep()
    clock.advance(31)
    b.keep()
    a.keep()                               # a comes back: it does not get them back
    assert not set(a.held) & set(b.held)
    assert set(a.held) | set(b.held) == set(NAMES)


def engine_for(topic: str) -> Engine:
    return Engine(load_rules([default_rules_path()]), ("acme",), owns=frozenset([topic]))


def angry(i: int, t: float, thread: str = "reddit:t3_x") -> Mention:
    return Mention(id=f"reddit:t1_{i}", text="acme lost my refund, this is terrible",
                   created_at=t, source="reddit", thread_id=thread, author=f"u{i}",
                   topics=("acme",), compound=-0.7)


def stored(store: Store, *ms: Mention) -> None:
    with store.transaction() as conn:
        store.add_mentions(conn, list(ms))


def test_a_detector_whose_topic_was_taken_cannot_checkpoint_and_lets_it_go(
        store: Store) -> None:
    clock = FixedClock(T + 3600)
    a = Leases(store, ["topic:acme"], holder="a", period=30.0, clock=clock)
    a.keep()
    planner = Planner(Routing([]), store, clock)
    det = Detector(store, engine_for, planner, a, clock=clock)
    det.sync()
    stored(store, *(angry(i, T + i) for i in range(3)))
    assert det.step() == 3
    det.checkpoint()
    assert store.load_partition("topic:acme")[0] == 3  # type: ignore[index]
    stored(store, angry(9, T + 9))
    clock.advance(31)                      # a froze; b took the topic
    b = Leases(store, ["topic:acme"], holder="b", period=30.0, clock=clock)
    b.keep()
    assert det.step() == 1                 # read, in memory only ...
    det.checkpoint()                       # ... and refused: a lets the topic go
    assert det.partitions == {}
    assert store.load_partition("topic:acme")[0] == 3  # type: ignore[index]
    det_b = Detector(store, engine_for, planner, b, clock=clock)
    det_b.sync()
    assert det_b.step() == 1
    assert det_b.partitions["acme"].engine.topics["acme"].total == 4  # 3 + 1, once each


def test_a_detector_killed_between_checkpoints_sends_nothing_twice_and_loses_nothing(
        store: Store) -> None:
    """Events are committed with each batch, the state only at checkpoints. Killed after
    its alert fired but before a checkpoint, a detector's successor reads the feed
    again from the checkpoint: the fired alert is not fired again, and what comes after
    (the thread getting worse) is."""
    clock = FixedClock(T + 3600)
    a = Leases(store, ["topic:acme"], holder="a", period=30.0, clock=clock)
    a.keep()
    planner = Planner(Routing([]), store, clock)
    det = Detector(store, engine_for, planner, a, clock=clock)
    det.sync()                             # checkpoint at the empty feed
    stored(store, *(angry(i, T + 20 * i) for i in range(30)))
    det.step()
    assert [(e["event"], e["severity"]) for e in store.list_events()] == [("fired", "warning")]
    # killed here: no checkpoint since the start
    clock.advance(31)
    b = Leases(store, ["topic:acme"], holder="b", period=30.0, clock=clock)
    b.keep()
    det_b = Detector(store, engine_for, planner, b, clock=clock)
    det_b.sync()
    stored(store, *(angry(i, T + 600 + 5 * i) for i in range(30, 100)))  # far worse
    while det_b.step():
        pass
    events = [(e["event"], e["severity"]) for e in store.list_events()]
    assert events == [("fired", "warning"), ("escalated", "critical")]
    assert det_b.partitions["acme"].engine.threads["reddit:t3_x"].total == 100


def fired(key: str, topic: str) -> AlertEvent:
    return AlertEvent(event="fired", rule="negative-thread-taking-off", severity="warning",
                      scope="thread", key=key, topic=topic, at=T, signals={}, summary=key)


@pytest.mark.postgres
def test_two_outboxes_claim_each_delivery_once(tmp_path: Path) -> None:
    """Two instances take due deliveries at the same time (FOR UPDATE SKIP LOCKED):
    every delivery is claimed by exactly one of them."""
    gen = pg_store_url()
    store = Store.open(next(gen))
    try:
        routing = Routing([Route("all", ("care",), "info")])
        with store.transaction() as conn:
            Planner(routing, store, FixedClock(T)).record(
                conn, [fired(f"reddit:t3_{i}", f"brand{i}") for i in range(120)])
        assert len(store.list_deliveries()) == 120  # a page for each brand's incident
        claimed: dict[str, list[int]] = {"a": [], "b": []}
        go = threading.Barrier(2)

        def take(holder: str) -> None:
            go.wait()
            while True:
                rows = store.due_deliveries(T + 60, 3, holder=holder, claim=600)
                if not rows:
                    return
                claimed[holder] += [r["id"] for r in rows]

        threads = [threading.Thread(target=take, args=(h,)) for h in claimed]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        both = claimed["a"] + claimed["b"]
        assert len(both) == len(set(both)) == len(store.list_deliveries())
        assert claimed["a"] and claimed["b"]  # they did share the work
    finally:
        store.close()
        next(gen, None)


def test_a_claim_ends_with_its_instance(store: Store) -> None:
    """A message claimed by an instance that is alive is left alone for the whole
    claim; once that instance is not seen for a lease period, it is in doubt and the
    next instance takes it (to look it up, or send it again)."""
    clock = FixedClock(T)
    a = Leases(store, ["topic:acme"], holder="a", period=30.0, clock=clock)
    a.keep()                                            # a's heartbeat
    with store.transaction() as conn:
        Planner(Routing([Route("all", ("care",), "info")]), store, clock).record(
            conn, [fired("reddit:t3_1", "acme")])
    [row] = store.due_deliveries(T, 5, holder="a", claim=120, alive_within=30)
    assert store.mark_sending(row["id"], T, holder="a", claim=120)
    clock.advance(20)
    a.keep()                                            # a is alive, mid-send
    assert store.due_deliveries(T + 40, 5, holder="b", claim=120, alive_within=30) == []
    # a died at T + 20: at T + 51 it has not been seen for more than a period
    [taken] = store.due_deliveries(T + 51, 5, holder="b", claim=120, alive_within=30)
    assert taken["id"] == row["id"] and taken["status"] == "sending"  # in doubt
