"""The outbox: deliveries written with their events, sent exactly once in practice through
outages, rate limits and restarts, in order per alert, with every attempt kept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from monitor.clock import FixedClock
from monitor.models import AlertEvent
from monitor.notify.outbox import Outbox
from monitor.notify.plan import Planner
from monitor.notify.routes import Route, Routing
from monitor.notify.slack import SlackBot, SlackChannel, SlackWebhook
from monitor.store import Store

HOOK = "https://hooks.slack.com/services/T000/B000/XXXX"
API = "https://slack.com/api/chat.postMessage"
T = 1_714_560_000.0


def ev(kind: str, step: int = 0, severity: str = "warning", key: str = "reddit:t3_a",
       at: float = T) -> AlertEvent:
    return AlertEvent(event=kind, rule="negative-thread-taking-off", severity=severity,
                      scope="thread", key=key, topic="acme", at=at,
                      signals={"window": "30m", "mentions": 30}, summary=f"{kind} {key}",
                      step=step)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path}/o.db")
    yield s
    s.close()


ROUTING = Routing([Route("frontline", ("slack",), "warning", send_resolved=True)])


def add(store: Store, *events: AlertEvent, now: float = T) -> None:
    """Store events and plan their messages in one transaction, as the pipeline does."""
    with store.transaction() as conn:
        Planner(ROUTING, store, FixedClock(now)).record(conn, list(events))


def webhook_outbox(store: Store, clock: FixedClock) -> Outbox:
    return Outbox(store, {"slack": SlackChannel(SlackWebhook(HOOK))}, clock)


def drain(outbox: Outbox, clock: FixedClock, until: float, step: float = 5.0) -> None:
    """Run the outbox as the daemon does, once a ``step``, until ``until``."""
    while clock.now() < until:
        outbox.deliver_due()
        clock.advance(step)


def test_deliveries_are_written_with_their_events_or_not_at_all(store: Store) -> None:
    add(store, ev("fired"), ev("fired", severity="info", key="reddit:t3_quiet"))
    with pytest.raises(RuntimeError), store.transaction() as conn:
        evs = [ev("fired", key="reddit:t3_b", severity="critical")]
        Planner(ROUTING, store, FixedClock(T)).record(conn, evs)
        raise RuntimeError("the batch failed after the events were written")
    rows = store.list_deliveries()
    assert [(d["channel"], d["status"]) for d in rows] == [("slack", "pending")]  # info: none
    assert len(store.list_events()) == 2  # the failed batch left no event either


@respx.mock
def test_ten_minutes_of_500s_then_each_event_is_sent_once_in_order(store: Store) -> None:
    clock = FixedClock(T)
    sent: list[str] = []

    def slack(request: httpx.Request) -> httpx.Response:
        if clock.now() < T + 600:
            return httpx.Response(500, text="rollup_error")
        sent.append(json.loads(request.content)["text"])
        return httpx.Response(200, text="ok")

    respx.post(HOOK).mock(side_effect=slack)
    add(store, ev("fired"))
    add(store, ev("escalated", step=1, severity="critical"), now=T + 60)
    add(store, ev("resolved"), now=T + 120)
    drain(webhook_outbox(store, clock), clock, until=T + 3600)
    assert sent == ["WARNING fired: negative-thread-taking-off on a thread in acme",
                    "CRITICAL escalated: negative-thread-taking-off on a thread in acme",
                    "RESOLVED: incident #1 on acme"]
    rows = store.list_deliveries()
    assert [d["status"] for d in rows] == ["sent"] * 3
    first = rows[0]["tries"]
    assert [t["outcome"] for t in first][-1] == "sent"
    assert {t["outcome"] for t in first[:-1]} == {"retry"} and len(first) >= 5
    assert all(t["detail"] == "Slack answered 500 rollup_error" for t in first[:-1])
    gaps = [b["at"] - a["at"] for a, b in zip(first, first[1:], strict=False)]
    assert gaps[1] > gaps[0]  # backing off
    assert rows[1]["tries"][0]["at"] >= rows[0]["sent_at"]  # never overtakes the firing


@respx.mock
def test_a_429_is_retried_no_sooner_than_slack_asked(store: Store) -> None:
    clock = FixedClock(T)
    respx.post(HOOK).mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "120"}, text="rate_limited"),
        httpx.Response(200, text="ok")])
    add(store, ev("fired"))
    outbox = webhook_outbox(store, clock)
    assert outbox.deliver_due() == 0
    clock.advance(100)
    assert outbox.deliver_due() == 0  # not yet
    clock.advance(30)
    assert outbox.deliver_due() == 1


@respx.mock
def test_a_permanent_refusal_is_surfaced_and_not_retried(store: Store,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    clock = FixedClock(T)
    route = respx.post(HOOK).respond(404, text="no_service")
    add(store, ev("fired"))
    drain(webhook_outbox(store, clock), clock, until=T + 3600)
    assert route.call_count == 1
    [d] = store.list_deliveries()
    assert d["status"] == "failed" and "no_service" in d["last_error"]
    assert "check notify.slack.webhook_url" in d["last_error"]
    assert "not delivered" in caplog.text


@respx.mock
def test_an_outage_longer_than_a_day_is_given_up_and_said(store: Store) -> None:
    clock = FixedClock(T)
    respx.post(HOOK).respond(503, text="down")
    add(store, ev("fired"))
    drain(webhook_outbox(store, clock), clock, until=T + 2 * 86400, step=600)
    [d] = store.list_deliveries()
    assert d["status"] == "failed" and "given up after a day" in d["last_error"]


@respx.mock
def test_a_restart_mid_outage_delivers_after_the_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    clock = FixedClock(T)
    route = respx.post(HOOK)
    route.respond(500, text="down")
    first = Store.open(url)
    add(first, ev("fired"))
    drain(webhook_outbox(first, clock), clock, until=T + 60)
    first.close()  # the process dies here, Slack still down

    route.respond(200, text="ok")
    clock.advance(3600)
    again = Store.open(url)
    try:
        drain(webhook_outbox(again, clock), clock, until=clock.now() + 30)
        [d] = again.list_deliveries()
        assert d["status"] == "sent" and d["tries"][-1]["outcome"] == "sent"
        assert sum(1 for c in route.calls if c.response.status_code == 200) == 1
    finally:
        again.close()


@respx.mock
def test_with_a_bot_token_updates_reply_in_the_first_messages_thread(store: Store) -> None:
    clock = FixedClock(T)
    bodies: list[dict[str, Any]] = []

    def api(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"ok": True, "channel": "C1",
                                         "ts": f"1714560000.00{len(bodies)}"})

    respx.post(API).mock(side_effect=api)
    add(store, ev("fired"), ev("escalated", step=1, severity="critical"), ev("resolved"))
    outbox = Outbox(store, {"slack": SlackChannel(SlackBot("xoxb-1", "C1"))}, clock)
    drain(outbox, clock, until=T + 20)
    assert "thread_ts" not in bodies[0]
    assert [b.get("thread_ts") for b in bodies[1:]] == ["1714560000.001"] * 2
    assert [d["ref"] for d in store.list_deliveries()] == [
        "1714560000.001", "1714560000.002", "1714560000.003"]


def test_routes_pick_channels_by_severity_topic_rule_and_scope() -> None:
    routing = Routing([
        Route("pager", ("pager",), "critical", send_resolved=False),
        Route("threads", ("care",), "warning", scope="thread", topics=frozenset({"acme"})),
        Route("all", ("slack", "pager"), "info", rules=frozenset({"volume-spike"}))])

    def chosen(rule: str, scope: str, topic: str, severity: str) -> dict[str, str]:
        return {c: r.name for c, r in routing.channels(rule, scope, topic, severity, T).items()}

    assert chosen("negative-thread-taking-off", "thread", "acme", "warning") == {
        "care": "threads"}
    assert chosen("negative-thread-taking-off", "thread", "other", "warning") == {}
    assert chosen("topic-negative-spike", "topic", "acme", "critical") == {"pager": "pager"}
    # a channel named twice is told once, under the first route that names it
    assert chosen("volume-spike", "topic", "acme", "critical") == {
        "pager": "pager", "slack": "all"}


HISTORY = "https://slack.com/api/conversations.history"


@respx.mock
@pytest.mark.parametrize("in_channel", [True, False])
def test_a_send_in_doubt_is_looked_up_before_it_is_sent_again(store: Store,
                                                               in_channel: bool) -> None:
    """A process died mid-send (the row is ``sending``): the bot API is asked whether the
    message with this key is in the channel; only if not is it posted again."""
    clock = FixedClock(T + 61)  # the dead process's claim has run out
    add(store, ev("fired"))
    [d] = store.list_deliveries()
    died_sending(store, d["id"])
    found = {"type": "message", "ts": "1714560001.000200", "text": "x",
             "metadata": {"event_type": "stormwatch_alert",
                          "event_payload": {"delivery": d["key"]}}}
    other = {"type": "message", "ts": "1714560001.000100", "text": "y"}
    history = respx.get(HISTORY).respond(200, json={
        "ok": True, "messages": [found, other] if in_channel else [other],
        "has_more": False})
    post = respx.post(API).respond(200, json={"ok": True, "channel": "C1",
                                              "ts": "1714560009.000300"})
    outbox = Outbox(store, {"slack": SlackChannel(SlackBot("xoxb-1", "C1"))}, clock)
    assert outbox.deliver_due() == 1
    q = history.calls[0].request.url.params
    assert (q["channel"], q["include_all_metadata"]) == ("C1", "true")
    assert float(q["oldest"]) <= T
    [d] = store.list_deliveries()
    assert d["status"] == "sent"
    if in_channel:
        assert post.call_count == 0 and d["ref"] == "1714560001.000200"
    else:
        assert post.call_count == 1 and d["ref"] == "1714560009.000300"
        body = json.loads(post.calls[0].request.content)
        assert body["metadata"]["event_payload"]["delivery"] == d["key"]


def died_sending(store: Store, delivery_id: int) -> None:
    """Another process claimed the delivery at T (for 60 s), marked it sending, and died."""
    [row] = store.due_deliveries(T, 10, holder="dead", claim=60)
    assert row["id"] == delivery_id
    assert store.mark_sending(delivery_id, T, holder="dead", claim=60)


@respx.mock
def test_a_slack_webhook_send_in_doubt_goes_again_it_cannot_be_looked_up(store: Store) -> None:
    add(store, ev("fired"))
    [d] = store.list_deliveries()
    died_sending(store, d["id"])
    route = respx.post(HOOK).respond(200, text="ok")
    assert webhook_outbox(store, FixedClock(T + 5)).deliver_due() == 0  # claimed: not yet
    assert webhook_outbox(store, FixedClock(T + 61)).deliver_due() == 1
    assert route.call_count == 1 and store.list_deliveries()[0]["status"] == "sent"
