"""The generic webhook: the JSON body, its HMAC signature, the idempotency key, and what
each answer means; through the outbox, one key per (alert, event, channel)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import httpx
import pytest
import respx

from monitor.clock import FixedClock
from monitor.models import AlertEvent
from monitor.notify.notice import Notice
from monitor.notify.outbox import Outbox
from monitor.notify.plan import Planner
from monitor.notify.routes import Route, Routing
from monitor.notify.webhook import Webhook
from monitor.store import Store

URL = "https://ops.example.com/hooks/stormwatch"
T = 1_714_560_000.0


def ev(kind: str = "fired", step: int = 0, severity: str = "critical") -> AlertEvent:
    return AlertEvent(event=kind, rule="topic-negative-spike", severity=severity,
                      scope="topic", key="acme", topic="acme", at=T,
                      signals={"window": "30m", "mentions": 89, "expected": 37},
                      summary="acme: 89 mentions in 30m vs 37 expected",
                      playbook="Check the status page", step=step,
                      top_posts=({"author": "x\r\ny", "text": "<script>alert(1)</script>",
                                  "url": "https://bsky.app/profile/x/post/1"},))


@respx.mock
def test_the_body_is_the_contract_plus_evidence_signed_with_the_secret() -> None:
    route = respx.post(URL).respond(204)
    got = Webhook(URL, secret="s3cr3t").deliver(Notice("page", ev(), incident=7), None, T,
                                                "7:fired:0:webhook")
    assert got.outcome == "sent"
    request = route.calls[0].request
    raw = request.content
    expected = "sha256=" + hmac.new(b"s3cr3t", raw, hashlib.sha256).hexdigest()
    assert request.headers["X-Stormwatch-Signature"] == expected
    assert request.headers["Idempotency-Key"] == "7:fired:0:webhook"
    body = json.loads(raw)
    assert {k: body[k] for k in ("event", "rule", "severity", "scope", "key", "topic",
                                 "at")} == {
        "event": "fired", "rule": "topic-negative-spike", "severity": "critical",
        "scope": "topic", "key": "acme", "topic": "acme", "at": "2024-05-01T10:40:00Z"}
    assert body["top_posts"][0]["text"] == "<script>alert(1)</script>"  # JSON-escaped data
    assert body["delivery"] == "7:fired:0:webhook" and body["signals"]["mentions"] == 89
    assert (body["kind"], body["incident"], body["others"]) == ("page", 7, [])


@respx.mock
def test_without_a_secret_there_is_no_signature() -> None:
    route = respx.post(URL).respond(200)
    Webhook(URL).deliver(Notice("page", ev()), None, T, "k")
    assert "X-Stormwatch-Signature" not in route.calls[0].request.headers


@respx.mock
@pytest.mark.parametrize("status,outcome,after", [
    (200, "sent", None), (202, "sent", None), (408, "retry", None),
    (429, "retry", 60.0), (503, "retry", None), (400, "permanent", None),
    (401, "permanent", None), (410, "permanent", None)])
def test_answers(status: int, outcome: str, after: float | None) -> None:
    respx.post(URL).respond(status, headers={"Retry-After": "60"} if status == 429 else {})
    got = Webhook(URL).deliver(Notice("page", ev()), None, T, "k")
    assert (got.outcome, got.retry_after) == (outcome, after)
    if outcome == "permanent":
        assert got.setting == "notify.webhook.url"


@respx.mock
def test_through_the_outbox_each_event_has_its_own_key_and_goes_once(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/w.db")
    try:
        route = respx.post(URL)
        route.side_effect = [httpx.Response(502), httpx.Response(200), httpx.Response(200)]
        with store.transaction() as conn:
            evs = [ev(severity="warning"), ev("escalated", step=1)]
            Planner(Routing([Route("all", ("webhook",), "info")]), store,
                    FixedClock(T)).record(conn, evs)
        clock = FixedClock(T)
        outbox = Outbox(store, {"webhook": Webhook(URL)}, clock)
        for _ in range(20):
            outbox.deliver_due()
            clock.advance(10)
        keys = [c.request.headers["Idempotency-Key"] for c in route.calls]
        # incident 1: its page (event 1, tried twice) and its escalation (event 2)
        assert keys == ["1:page:1:webhook", "1:page:1:webhook", "1:escalation:2:webhook"]
        assert [d["status"] for d in store.list_deliveries()] == ["sent", "sent"]
    finally:
        store.close()
