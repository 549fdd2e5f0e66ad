"""Slack: the exact payload for hostile posts, and what each Slack answer means (respx
answering as Slack's docs show: webhook plain-text errors, Web API ``ok: false`` bodies
with HTTP 200, 429 with Retry-After)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from monitor.models import AlertEvent
from monitor.notify.notice import Notice
from monitor.notify.slack import SlackBot, SlackWebhook, render

HOOK = "https://hooks.slack.com/services/T000/B000/XXXX"
NOW = 1_714_560_000.0

HOSTILE = ("<!channel> <@U123> read this <https://evil.example|click here> *bold* "
           "<b>html</b> \u202eesrever & more " + "x" * 100_000)


def event(kind: str = "fired", **kw: Any) -> AlertEvent:
    base: dict[str, Any] = dict(
        event=kind, rule="negative-thread-taking-off", severity="warning", scope="thread",
        key="reddit:t3_1abc", topic="acme", at=1_714_556_400.0,
        signals={"window": "30m", "mentions": 31, "unique_authors": 28,
                 "negative_share": 0.71, "reach": 12500},
        summary="Negative thread taking off: 31 replies in 30m from 28 people, 71% negative",
        playbook="Reply publicly within 15 minutes; owner: social care on-call",
        top_posts=({"author": "mallory\r\nBcc: everyone@example.com", "text": HOSTILE,
                    "url": "https://www.reddit.com/r/acme/comments/1abc/x/|<evil>",
                    "why": "thread start"},
                   {"author": "bob", "text": "same here", "url": "javascript:alert(1)",
                    "why": "most engaged complaint"}))
    base.update(kw)
    return AlertEvent(**base)


def page(kind: str = "page", **kw: Any) -> Notice:
    """A notice about ``event(**kw)``; an escalation's or resolution's event kind follows."""
    ev_kind = {"escalation": "escalated", "resolved": "resolved"}.get(kind, "fired")
    return Notice(kind, event(ev_kind, **kw), incident=4)


def texts(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (type, text) of the payload: the fallback and each block's text objects."""
    out = [("fallback", payload["text"])]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("plain_text", "mrkdwn") and "text" in node:
                out.append((node["type"], node["text"]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(payload["attachments"])
    return out


def test_hostile_posts_render_as_inert_text() -> None:
    payload = render(page())
    everything = texts(payload)
    for kind, text in everything:
        if kind != "plain_text":  # mrkdwn and the fallback: nothing Slack would act on
            assert "<!" not in text and "<@" not in text and "evil.example" not in text
            assert "*bold*" not in text and "\u202e" not in text
    post = next(t for k, t in everything if k == "plain_text" and "read this" in t)
    assert post.startswith("“<!channel> <@U123> read this <https://evil.example|click here>"
                           " *bold* <b>html</b> [U+202E]esrever & more xxx")
    assert post.endswith("…” — mallory Bcc: everyone@example.com")
    assert len(post) < 400  # a 100 KB body is an excerpt
    assert "\r" not in json.dumps(payload) and "\\n\\u" not in post
    links = [t for k, t in everything if k == "mrkdwn" and "open the post" in t]
    assert links == ["*thread start* · <https://www.reddit.com/r/acme/comments/1abc/x/"
                     "%7C%3Cevil%3E|open the post>"]  # the javascript: link is dropped
    colour = payload["attachments"][0]["color"]
    assert colour == "#daa038"
    assert payload["text"] == "WARNING fired: negative-thread-taking-off on a thread in acme"


def test_the_message_carries_the_numbers_playbook_and_why() -> None:
    blocks = render(page())["attachments"][0]["blocks"]
    assert blocks[0]["type"] == "header" and "Negative thread taking off" in \
        blocks[0]["text"]["text"]
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert fields == ["*Mentions (30m)*\n31", "*Negative*\n71%", "*People*\n28",
                      "*Reach*\n12,500"]
    topic = render(page(scope="topic", key="acme", signals={
        "window": "30m", "mentions": 89, "expected": 37, "ratio": 2.4}))
    first = topic["attachments"][0]["blocks"][1]["fields"][0]["text"]
    assert first == "*Mentions (30m)*\n89 vs 37 expected (2.4x)"
    assert any("*Playbook*\nReply publicly within 15 minutes" in t for _, t in
               texts(render(page())))
    assert texts(render(page()))[-1][1] == \
        "Rule negative-thread-taking-off, thread reddit:t3_1abc, at 2024-05-01T09:40:00Z, " \
        "incident #4"


def test_updates_say_what_they_update_unless_threaded() -> None:
    alone = render(page("escalation", severity="critical"))
    head = alone["attachments"][0]["blocks"][0]["text"]["text"]
    assert "Escalated to CRITICAL (update to incident #4, a thread in acme): Negative" \
        in head and alone["attachments"][0]["color"] == "#d40e0d"
    threaded = render(page("escalation", severity="critical"), threaded=True)
    assert "Escalated to CRITICAL: Negative thread" in \
        threaded["attachments"][0]["blocks"][0]["text"]["text"]
    resolved = render(page("resolved"), threaded=True)
    assert resolved["attachments"][0]["color"] == "#2eb67d"
    assert not any("read this" in t for _, t in texts(resolved))  # no posts on resolution


@respx.mock
@pytest.mark.parametrize("status,body,headers,outcome,after,setting", [
    (200, "ok", {}, "sent", None, None),
    (400, "invalid_payload", {}, "permanent", None, "notify.slack.webhook_url"),
    (404, "no_service", {}, "permanent", None, "notify.slack.webhook_url"),
    (410, "channel_is_archived", {}, "permanent", None, "notify.slack.webhook_url"),
    (429, "rate_limited", {"Retry-After": "30"}, "retry", 30.0, None),
    (500, "rollup_error", {}, "retry", None, None),
])
def test_webhook_answers(status: int, body: str, headers: dict[str, str], outcome: str,
                         after: float | None, setting: str | None) -> None:
    route = respx.post(HOOK).respond(status, text=body, headers=headers)
    got = SlackWebhook(HOOK).send(render(page()), NOW)
    assert (got.outcome, got.retry_after, got.setting) == (outcome, after, setting)
    assert body in got.detail
    sent = json.loads(route.calls[0].request.content)
    assert sent["attachments"][0]["blocks"][0]["type"] == "header"


@respx.mock
def test_webhook_timeouts_and_refusals_are_retried() -> None:
    respx.post(HOOK).mock(side_effect=httpx.ReadTimeout("slow"))
    assert SlackWebhook(HOOK).send({"text": "x"}, NOW).outcome == "retry"
    respx.post(HOOK).mock(side_effect=httpx.ConnectError("refused"))
    got = SlackWebhook(HOOK).send({"text": "x"}, NOW)
    assert got.outcome == "retry" and "ConnectError" in got.detail


@respx.mock
@pytest.mark.parametrize("answer,outcome,setting", [
    ({"ok": True, "channel": "C024BE91L", "ts": "1714560000.000200"}, "sent", None),
    ({"ok": False, "error": "invalid_auth"}, "permanent", "notify.slack.bot_token"),
    ({"ok": False, "error": "channel_not_found"}, "permanent", "notify.slack.channel"),
    ({"ok": False, "error": "internal_error"}, "retry", None),
    ({"ok": False, "error": "msg_too_long"}, "permanent", "notify.slack"),
])
def test_bot_answers_with_http_200(answer: dict[str, Any], outcome: str,
                                   setting: str | None) -> None:
    route = respx.post("https://slack.com/api/chat.postMessage").respond(200, json=answer)
    got = SlackBot("xoxb-1-2-3", "C024BE91L").send(render(page()), NOW,
                                                   thread="1714559000.000100")
    assert (got.outcome, got.setting) == (outcome, setting)
    if outcome == "sent":
        assert got.ref == "1714560000.000200"
    request = route.calls[0].request
    assert request.headers["Authorization"] == "Bearer xoxb-1-2-3"
    body = json.loads(request.content)
    assert body["channel"] == "C024BE91L" and body["thread_ts"] == "1714559000.000100"
    assert body["unfurl_links"] is False and "xoxb" not in got.detail


@respx.mock
def test_bot_rate_limit_honours_retry_after() -> None:
    respx.post("https://slack.com/api/chat.postMessage").respond(
        429, headers={"Retry-After": "12"}, json={"ok": False, "error": "ratelimited"})
    got = SlackBot("xoxb-1", "C1").send({"text": "x"}, NOW)
    assert (got.outcome, got.retry_after) == ("retry", 12.0)
