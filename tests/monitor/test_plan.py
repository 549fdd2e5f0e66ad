"""The planner: alert events grouped into incidents, silenced, routed, inhibited and folded
into the few messages a person needs; reminders and escalations when nobody answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from monitor.clock import FixedClock
from monitor.models import AlertEvent
from monitor.notify.outbox import Outbox
from monitor.notify.plan import Planner
from monitor.notify.routes import Route, Routing, TimeInterval
from monitor.notify.slack import SlackChannel, SlackWebhook
from monitor.store import Store

T = 1_714_560_000.0  # 2024-05-01T10:40:00Z, a Wednesday
HOOK = "https://hooks.slack.com/services/T000/B000/XXXX"
LEAD = "https://hooks.slack.com/services/T000/B000/LEAD"


def ev(kind: str, rule: str = "negative-thread-taking-off", key: str = "reddit:t3_a",
       severity: str = "warning", at: float = T, step: int = 0) -> AlertEvent:
    scope = "thread" if rule == "negative-thread-taking-off" else "topic"
    return AlertEvent(event=kind, rule=rule, severity=severity, scope=scope,
                      key=key if scope == "thread" else "acme", topic="acme", at=at,
                      signals={"window": "30m", "mentions": 40}, summary=f"{kind} {rule}",
                      step=step)


def topic(kind: str, severity: str = "warning", at: float = T, step: int = 0) -> AlertEvent:
    return ev(kind, "topic-negative-spike", severity=severity, at=at, step=step)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path}/p.db")
    yield s
    s.close()


ROUTING = Routing([Route("care", ("slack",))])


def record(store: Store, *events: AlertEvent, now: float = T,
           routing: Routing = ROUTING, wait: float = 0.0) -> None:
    with store.transaction() as conn:
        Planner(routing, store, FixedClock(now), group_wait=wait).record(conn, list(events))


def messages(store: Store) -> list[tuple[str, str, str]]:
    """(channel, kind, the event's rule and kind) of every queued message, in order."""
    by_id = {e["id"]: e for e in store.list_events()}
    return [(d["channel"], d["kind"], f"{by_id[d['event_id']]['rule']} "
             f"{by_id[d['event_id']]['event']}") for d in store.list_deliveries()]


def test_an_incident_that_escalates_twice_and_resolves_is_three_messages(store: Store) -> None:
    """The viral complaint of the sample: a thread pages, the brand-wide spike it causes
    joins at the same severity (folded), turns critical (escalation), the topic resolves
    first (folded), the thread last (resolution)."""
    record(store, ev("fired"), at_least_one := topic("fired", at=T + 1000))
    record(store, topic("escalated", "critical", at=T + 1800, step=1))
    record(store, topic("resolved", "critical", at=T + 10000))
    record(store, ev("resolved", at=T + 15000))
    assert at_least_one.severity == "warning"
    assert messages(store) == [
        ("slack", "page", "negative-thread-taking-off fired"),
        ("slack", "escalation", "topic-negative-spike escalated"),
        ("slack", "resolved", "negative-thread-taking-off resolved")]
    alerts = store.list_alerts()
    assert len({a["incident_id"] for a in alerts}) == 1 and len(alerts) == 2


@respx.mock
def test_folded_alerts_show_in_the_next_message(store: Store) -> None:
    sent: list[dict[str, Any]] = []
    respx.post(HOOK).mock(side_effect=lambda r: (sent.append(json.loads(r.content)),
                                                 httpx.Response(200, text="ok"))[1])
    record(store, ev("fired"), topic("fired", at=T + 60))
    record(store, topic("escalated", "critical", at=T + 120, step=1))
    outbox = Outbox(store, {"slack": SlackChannel(SlackWebhook(HOOK))}, FixedClock(T + 200))
    assert outbox.deliver_due() == 1 and outbox.deliver_due() == 1  # in order: one a pass
    assert [m["text"] for m in sent] == [
        "WARNING fired: negative-thread-taking-off on a thread in acme",
        "CRITICAL escalated: topic-negative-spike on topic acme"]
    also = [b["text"]["text"] for b in sent[1]["attachments"][0]["blocks"]
            if b["type"] == "section" and "text" in b and "Also in" in b["text"]["text"]]
    assert also == ["Also in this incident: negative-thread-taking-off on thread reddit:t3_a: "
                    "firing, warning"]


def sent_all(store: Store) -> None:
    """As if the outbox had sent every pending message."""
    for d in store.list_deliveries():
        if d["status"] == "pending":
            store.record_attempt(d["id"], T, "sent", "ok", status="sent")


def test_another_thread_is_an_update_unless_a_topic_alert_covers_it(store: Store) -> None:
    record(store, ev("fired", key="reddit:t3_a"))
    sent_all(store)
    record(store, ev("fired", key="reddit:t3_b"))            # a new thread to answer
    record(store, topic("fired"))                             # the brand-wide spike
    record(store, ev("fired", key="reddit:t3_c"))            # inhibited by it
    record(store, ev("escalated", key="reddit:t3_c", severity="critical", step=1))
    assert [k for _, k, _ in messages(store)] == ["page", "update", "escalation"]


def test_a_burst_within_the_group_wait_is_one_page(store: Store) -> None:
    record(store, ev("fired", key="reddit:t3_a"), wait=30)
    record(store, ev("fired", key="reddit:t3_b"), now=T + 10, wait=30)
    record(store, ev("fired", key="reddit:t3_c"), now=T + 20, wait=30)
    [page] = store.list_deliveries()
    assert page["kind"] == "page" and page["next_at"] == T + 30
    alerts_listed = store.message_context(page["incident_id"], "slack", T + 20)[1]
    assert [a["key"] for a in alerts_listed] == ["reddit:t3_a", "reddit:t3_b", "reddit:t3_c"]


def test_silences_mute_what_they_match_until_they_end(store: Store) -> None:
    sid = store.add_silence(rule=None, topic="acme", key="reddit:t3_a", scope=None,
                            starts_at=T - 60, ends_at=T + 3600, by="ana",
                            comment="known: the recall thread, answered")
    record(store, ev("fired", key="reddit:t3_a"))
    assert messages(store) == []
    record(store, ev("fired", key="reddit:t3_b"))  # another thread: not silenced
    assert [k for _, k, _ in messages(store)] == ["page"]
    assert [s["id"] for s in store.list_silences(T)] == [sid]
    assert store.expire_silence(sid, T + 60) and not store.expire_silence(sid, T + 61)
    assert store.list_silences(T + 60) == []
    record(store, ev("escalated", key="reddit:t3_a", severity="critical", step=1),
           now=T + 120)
    assert [k for _, k, _ in messages(store)] == ["page", "escalation"]


def test_time_intervals_pick_the_route_on_duty(store: Store) -> None:
    office = TimeInterval(frozenset(range(5)), ((9 * 60, 18 * 60),), "Europe/Paris")
    routing = Routing([Route("office", ("slack",), active=(office,)),
                       Route("on-call", ("pager",), min_severity="critical")])
    wednesday_noon = datetime(2024, 5, 1, 10, 0, tzinfo=UTC).timestamp()   # 12:00 Paris
    saturday = datetime(2024, 5, 4, 10, 0, tzinfo=UTC).timestamp()
    assert office.contains(wednesday_noon) and not office.contains(saturday)
    assert not office.contains(datetime(2024, 5, 1, 16, 30, tzinfo=UTC).timestamp())  # 18:30
    record(store, ev("fired", key="reddit:t3_a"), now=wednesday_noon, routing=routing)
    record(store, ev("fired", key="reddit:t3_weekend", severity="critical"), now=saturday,
           routing=routing)
    assert [(c, k) for c, k, _ in messages(store)] == [("slack", "page"), ("pager", "page")]


def test_reminders_and_escalation_when_nobody_acknowledges(store: Store) -> None:
    routing = Routing([Route("care", ("slack",), escalate_after=1800, escalate_to=("lead",))])
    record(store, ev("fired"), routing=routing)
    outbox = Outbox(store, {}, FixedClock(T + 1700), routing=routing, repeat=4 * 3600)
    assert outbox.remind() == 0
    outbox.clock = FixedClock(T + 1800)
    assert outbox.remind() == 1 and outbox.remind() == 0   # once
    for hours, told in ((4, "slack"), (4.5, "lead"), (8, "slack"), (8.5, "lead")):
        outbox.clock = FixedClock(T + hours * 3600)          # four hours after each
        assert outbox.remind() == 1 and outbox.remind() == 0, hours  # last message
        assert messages(store)[-1][:2] == (told, "reminder")
    assert [(c, k) for c, k, _ in messages(store)][:2] == [
        ("slack", "page"), ("lead", "unacknowledged")]
    [alert] = store.list_alerts()
    inc = store.acknowledge(alert["id"], "ana", "on it", T + 8 * 3600 + 5)
    assert (inc["acked_by"], inc["ack_note"]) == ("ana", "on it")
    outbox.clock = FixedClock(T + 20 * 3600)
    assert outbox.remind() == 0                              # acknowledged: quiet


def test_nothing_new_for_the_repeat_interval_is_what_a_reminder_needs(store: Store) -> None:
    record(store, ev("fired"))
    record(store, topic("fired", at=T + 3 * 3600))  # folded, but news: the clock restarts
    outbox = Outbox(store, {}, FixedClock(T + 5 * 3600), routing=ROUTING, repeat=4 * 3600)
    assert outbox.remind() == 0
    outbox.clock = FixedClock(T + 7 * 3600)
    assert outbox.remind() == 1


def test_resolved_by_hand_tells_once_and_the_engine_resolution_is_only_recorded(
        store: Store) -> None:
    record(store, ev("fired"))
    [alert] = store.list_alerts()
    planner = Planner(ROUTING, store, FixedClock(T + 60))
    got = store.resolve_by_hand(alert["id"], "ana", "answered, customer refunded", T + 60,
                                plan=planner.plan)
    assert got is not None and got.summary == "resolved by ana: answered, customer refunded"
    assert store.resolve_by_hand(alert["id"], "bo", "", T + 70) is None  # not firing
    record(store, ev("resolved", at=T + 4000))  # the engine catches up later
    assert [k for _, k, _ in messages(store)] == ["page", "resolved"]
    record_ = store.alert_record(alert["id"])
    assert record_ is not None
    assert [e["event"] for e in record_["events"]] == ["fired", "resolved", "resolved"]
    assert record_["resolved_by"] == "ana" and len(store.list_alerts()) == 1
