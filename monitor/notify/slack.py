"""Slack: a notice as a Block Kit message a person reads in five seconds, sent by
incoming webhook or by the bot API.

The message, top to bottom: the headline (what, where, how fast) in the severity's
colour; the numbers (mentions in the window vs expected, negative share, people, reach);
a chart of the last six hours (a sparkline: text, so a webhook can carry it too); the
top posts, each with its link; the playbook; the incident's other alerts; and why it
fired. Everything that came
from social media travels as ``plain_text`` (Slack formats nothing in it: no mention,
no link, no bold) after :func:`~monitor.notify.text.one_line`; ``mrkdwn`` carries only
our own labels, numbers and sanitised links, escaped as Slack asks.

Later messages about an incident: with the bot token they reply in the first message's
thread (``thread_ts``); a webhook cannot, so they say what they update in the headline.
"""

from __future__ import annotations

from typing import Any

import httpx

from connectors.base import retry_after_seconds
from monitor.models import iso
from monitor.notify.notice import Notice
from monitor.notify.result import Result
from monitor.notify.text import excerpt, one_line, safe_url, slack_escape

COLOURS = {"info": "#439fe0", "warning": "#daa038", "critical": "#d40e0d"}
RESOLVED_COLOUR = "#2eb67d"
ICONS = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
POST_CHARS = 280
MAX_POSTS = 3
API = "https://slack.com/api"


HEADLINE = {"page": "", "escalation": "Escalated to {sev}: ", "update": "Another thread: ",
            "resolved": "Resolved: ", "reminder": "Still open, not acknowledged: ",
            "unacknowledged": "Nobody has acknowledged this yet: "}
MAX_OTHERS = 5


def render(notice: Notice, *, threaded: bool = False) -> dict[str, Any]:
    """The Block Kit payload (``text`` for notifications, ``attachments`` for colour)."""
    ev = notice.event
    s = ev.signals
    where = notice.where
    verb = HEADLINE[notice.kind].format(sev=ev.severity.upper())
    if notice.kind == "resolved":
        headline = one_line(f"Resolved: incident #{notice.incident} on {ev.topic} is back "
                            "to normal", 150)
        # the notification preview: our own words only (a summary may quote a thread id)
        text = slack_escape(f"RESOLVED: incident #{notice.incident} on {ev.topic}")
    else:
        if not threaded and notice.kind != "page":
            verb = verb.rstrip(": ") + f" (update to incident #{notice.incident}, {where}): "
        headline = one_line(f"{verb}{ev.summary or ev.rule}", 150)
        text = slack_escape(f"{ev.severity.upper()} {ev.event}: {ev.rule} on {where}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(f"{_plain_icon(notice)} {headline}", 150)},
    ]
    fields = []
    window = s.get("window", "")
    if "mentions" in s:
        line = f"*Mentions ({slack_escape(str(window))})*\n{s['mentions']}"
        if s.get("expected") is not None:
            line += f" vs {float(s['expected']):.0f} expected"
            if s.get("ratio") is not None:
                line += f" ({float(s['ratio']):.1f}x)"
        fields.append(_mrkdwn(line))
    if s.get("negative_share") is not None:
        fields.append(_mrkdwn(f"*Negative*\n{round(100 * float(s['negative_share']))}%"))
    if s.get("unique_authors") is not None:
        fields.append(_mrkdwn(f"*People*\n{s['unique_authors']}"))
    if s.get("reach"):
        fields.append(_mrkdwn(f"*Reach*\n{s['reach']:,}"))
    if fields:
        blocks.append({"type": "section", "fields": fields[:10]})
    chart = notice.chart()
    if chart:
        blocks.append({"type": "context", "elements": [_plain(chart, 200, emoji=False)]})
    if notice.kind != "resolved":
        for post in ev.top_posts[:MAX_POSTS]:
            blocks.extend(_post(post))
        if ev.playbook:
            blocks.append({"type": "section", "text": _mrkdwn(
                "*Playbook*\n" + slack_escape(excerpt(ev.playbook, 2000)))})
    if notice.others:
        lines = [f"{a['rule']} on {a['scope']} {a['key']}: {a['state']}, {a['severity']}"
                 for a in notice.others[:MAX_OTHERS]]
        more = len(notice.others) - MAX_OTHERS
        blocks.append({"type": "section", "text": _plain(
            "Also in this incident: " + "; ".join(lines)
            + (f"; and {more} more" if more > 0 else ""), 3000, emoji=False)})
    why = f"Rule {ev.rule}, {ev.scope} {ev.key}, at {iso(ev.at)}" + (
        f", step {ev.step}" if ev.step > 0 else "") + f", incident #{notice.incident}" + (
        f", acknowledged by {notice.acked_by}" if notice.acked_by else "")
    blocks.append({"type": "context", "elements": [_plain(why, 300)]})
    colour = RESOLVED_COLOUR if notice.kind == "resolved" else COLOURS.get(ev.severity,
                                                                            "#888888")
    return {"text": text, "attachments": [{"color": colour, "blocks": blocks}]}


def _post(post: dict[str, Any]) -> list[dict[str, Any]]:
    author = one_line(post.get("author") or "someone", 60)
    quote = excerpt(post.get("text"), POST_CHARS)
    block: list[dict[str, Any]] = [
        {"type": "section", "text": _plain(f"“{quote}” — {author}", 3000, emoji=False)}]
    details = f"*{slack_escape(one_line(post.get('why'), 40))}*"
    url = safe_url(post.get("url"))
    if url:
        details += f" · <{slack_escape(url)}|open the post>"
    block.append({"type": "context", "elements": [_mrkdwn(details)]})
    return block


def _plain(text: str, limit: int, *, emoji: bool = True) -> dict[str, Any]:
    return {"type": "plain_text", "text": one_line(text, limit) or " ", "emoji": emoji}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _plain_icon(notice: Notice) -> str:
    return (":white_check_mark:" if notice.kind == "resolved"
            else ICONS.get(notice.event.severity, ""))


# --------------------------------------------------------------------------- senders


class SlackWebhook:
    """An incoming webhook: ``POST`` the payload; Slack answers ``ok`` or a plain-text
    error (``invalid_payload``, ``no_service``, ``channel_is_archived``...)."""

    def __init__(self, url: str, client: httpx.Client | None = None, *,
                 setting: str = "notify.slack.webhook_url") -> None:
        self.url, self.setting = url, setting
        self.client = client or httpx.Client(timeout=TIMEOUT)

    def send(self, payload: dict[str, Any], now: float) -> Result:
        try:
            r = self.client.post(self.url, json=payload)
        except httpx.TimeoutException:
            return Result.retry("Slack timed out")
        except httpx.HTTPError as e:
            return Result.retry(f"cannot reach Slack: {type(e).__name__}")
        said = r.text.strip()[:100]
        if r.status_code == 200:
            return Result.sent(said or "ok")
        return _http(r, said, now, self.setting)


class SlackBot:
    """The bot token and ``chat.postMessage``: answers are HTTP 200 with ``{"ok": true,
    "ts"}`` or ``{"ok": false, "error"}``; the ``ts`` threads later updates."""

    def __init__(self, token: str, channel: str, client: httpx.Client | None = None, *,
                 api: str = API, setting: str = "notify.slack") -> None:
        self.channel, self.api, self.setting = channel, api.rstrip("/"), setting
        self._token = token
        self.client = client or httpx.Client(timeout=TIMEOUT)

    def send(self, payload: dict[str, Any], now: float, thread: str | None = None,
             key: str | None = None) -> Result:
        body = {**payload, "channel": self.channel, "unfurl_links": False,
                "unfurl_media": False}
        if thread:
            body["thread_ts"] = thread
        if key:  # so that after a crash mid-send, ``confirm`` can find it
            body["metadata"] = {"event_type": METADATA_TYPE, "event_payload": {"delivery": key}}
        try:
            r = self.client.post(f"{self.api}/chat.postMessage", json=body,
                                 headers={"Authorization": f"Bearer {self._token}"})
        except httpx.TimeoutException:
            return Result.retry("Slack timed out")
        except httpx.HTTPError as e:
            return Result.retry(f"cannot reach Slack: {type(e).__name__}")
        if r.status_code != 200:
            return _http(r, r.text.strip()[:100], now, self.setting)
        try:
            answer = r.json()
        except ValueError:
            return Result.retry("Slack answered something that is not JSON")
        if answer.get("ok"):
            return Result.sent("ok", ref=str(answer.get("ts") or "") or None)
        error = str(answer.get("error") or "unknown_error")[:80]
        if error == "ratelimited":
            return Result.retry(error, retry_after_seconds(r.headers.get("retry-after"), now))
        if error in BOT_RETRY:
            return Result.retry(error)
        if error in BOT_TOKEN:
            return Result.permanent(f"Slack refused the bot token: {error}",
                                    f"{self.setting}.bot_token")
        if error in BOT_CHANNEL:
            return Result.permanent(f"Slack cannot post to the channel: {error}",
                                    f"{self.setting}.channel")
        return Result.permanent(f"Slack refused the message: {error}", self.setting)


    def confirm(self, key: str, thread: str | None, since: float) -> Result | None:
        """Is the message with this delivery key in the channel (posted since ``since``)?
        ``conversations.history`` (or ``.replies`` for a thread) with its metadata; None
        when Slack cannot tell us (no ``channels:history`` scope, unreachable)."""
        method, params = ("conversations.replies", {"ts": thread}) if thread else (
            "conversations.history", {})
        try:
            r = self.client.get(f"{self.api}/{method}", params={
                "channel": self.channel, "oldest": f"{since - 60:.6f}",
                "include_all_metadata": "true", "limit": 200, **params},
                headers={"Authorization": f"Bearer {self._token}"})
            answer = r.json() if r.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return None
        if not answer.get("ok"):
            return None
        for m in answer.get("messages") or []:
            meta = m.get("metadata") or {}
            if (meta.get("event_type") == METADATA_TYPE
                    and (meta.get("event_payload") or {}).get("delivery") == key):
                return Result.sent("found", ref=str(m.get("ts") or "") or None)
        return Result.retry("not in the channel")


METADATA_TYPE = "stormwatch_alert"
BOT_RETRY = {"internal_error", "fatal_error", "service_unavailable", "request_timeout",
             "team_added_to_org"}
BOT_TOKEN = {"not_authed", "invalid_auth", "account_inactive", "token_revoked",
             "token_expired", "no_permission", "missing_scope", "ekm_access_denied"}
BOT_CHANNEL = {"channel_not_found", "not_in_channel", "is_archived", "restricted_action",
               "cannot_reply_to_message"}


def _http(r: httpx.Response, said: str, now: float, setting: str) -> Result:
    code = r.status_code
    if code == 429:
        return Result.retry(f"Slack answered 429 {said}".strip(),
                            retry_after_seconds(r.headers.get("retry-after"), now))
    if code == 408 or code >= 500:
        return Result.retry(f"Slack answered {code} {said}".strip())
    return Result.permanent(f"Slack answered {code} {said}".strip(), setting)


class SlackChannel:
    """A Slack destination for the outbox: renders, then sends by webhook or bot (which
    threads escalations and resolutions under the first message)."""

    def __init__(self, sender: SlackWebhook | SlackBot) -> None:
        self.sender = sender

    def deliver(self, notice: Notice, thread: str | None, now: float, key: str) -> Result:
        if isinstance(self.sender, SlackBot):
            return self.sender.send(render(notice, threaded=thread is not None), now,
                                    thread=thread, key=key)
        return self.sender.send(render(notice), now)

    def confirm(self, key: str, thread: str | None, since: float) -> Result | None:
        """Only the bot can read the channel back; a webhook cannot tell."""
        if isinstance(self.sender, SlackBot):
            return self.sender.confirm(key, thread, since)
        return None
