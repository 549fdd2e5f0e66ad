"""The outbox: messages written with their alert events, sent until they are sent.

A message about an incident (a page, an escalation, an update, a resolution: see
``monitor.notify.plan``) is a delivery row written in the same transaction as the alert
event behind it (DESIGN invariant 4), so a crash can lose neither. This worker takes
the due ones, oldest first and in order per incident and channel, renders each as a
:class:`~monitor.notify.notice.Notice` (the event, the incident's other alerts, the
chart of the last hours from the stored mentions) and sends it, and records every
attempt: sent; retry (backoff doubling from 10 s to 15 min, never sooner than the
service's ``Retry-After``, given up after a day); or permanent (bad credentials, a
refused payload: surfaced, not retried). A restart resumes where it stopped: pending
rows are just rows.

``remind(now)`` adds the messages that people's time calls for: an incident nobody
acknowledged within a route's ``escalate.after`` goes to its ``escalate.to`` channels
(once), and one still open and unacknowledged with nothing new for ``repeat`` is
mentioned again.

Exactly once in practice: a delivery is marked ``sending`` (committed) before its send,
so a process that dies mid-send leaves it in doubt, not merely pending. After the
restart the channel is asked whether it arrived where the service can tell (Slack's bot
API: each message carries its idempotency key as message metadata); otherwise it is
sent again with the same key (incident, kind, event, channel), which a webhook receiver
gets as ``Idempotency-Key`` and a mail client as the Message-ID.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from monitor import metrics
from monitor.backoff import backoff
from monitor.clock import Clock, SystemClock
from monitor.notify.notice import Notice
from monitor.notify.result import Result
from monitor.notify.routes import Routing
from monitor.store import Store, event_of

log = logging.getLogger("stormwatch")

RETRY_FIRST = 10.0
GIVE_UP = 86400.0
CHART_SPAN = 6 * 3600   # the chart in a message: the last six hours ...
CHART_STEP = 900        # ... in 15-minute bars


class Channel(Protocol):
    """Renders and sends one notice; ``thread`` is the service's handle on the first
    message about the incident, if any; ``key`` the delivery's idempotency key."""

    def deliver(self, notice: Notice, thread: str | None, now: float, key: str) -> Result: ...

    # optional: ``confirm(key, thread, since) -> Result | None``: did the message with this
    # key arrive (sent, with its ref), or is it known absent, or (None) cannot it tell


class Outbox:
    def __init__(self, store: Store, channels: Mapping[str, Channel],
                 clock: Clock | None = None, *, routing: Routing | None = None,
                 repeat: float = 0.0, holder: str = "local", claim: float = 60.0,
                 alive_within: float | None = None) -> None:
        """``holder``: this instance's name; a delivery it takes is claimed for ``claim``
        seconds (other instances leave it alone), longer than any send may take, or
        until its instance is not seen alive for ``alive_within`` (it died mid-send)."""
        self.store, self.channels = store, dict(channels)
        self.clock = clock or SystemClock()
        self.routing, self.repeat = routing, repeat
        self.holder, self.claim, self.alive_within = holder, claim, alive_within

    def deliver_due(self, limit: int = 10) -> int:
        """Send what is due; returns how many were sent."""
        sent = 0
        for row in self.store.due_deliveries(self.clock.now(), limit, holder=self.holder,
                                             claim=self.claim, alive_within=self.alive_within):
            if self._deliver(row):
                sent += 1
        return sent

    def remind(self) -> int:
        """Queue reminders and unacknowledged-escalations that are due; returns how many."""
        if self.routing is None:
            return 0
        escalations = {r.name: (r.escalate_after, r.escalate_to) for r in self.routing.routes
                       if r.escalate_after is not None}
        return self.store.queue_reminders(self.clock.now(), self.repeat, escalations,
                                          {r.name: r.to for r in self.routing.routes})

    def notice(self, row: dict[str, Any]) -> tuple[Notice, str | None]:
        """The notice a delivery row stands for, and the thread to reply in."""
        ev = event_of(row)
        incident, members, thread = self.store.message_context(
            row["incident_id"], row["channel"], ev.at)
        others = tuple(a for a in members if a["id"] != row["alert_id"])
        series = self.store.volume(
            thread=ev.key if ev.scope == "thread" else None, topic=ev.topic,
            end=ev.at + 1, span=CHART_SPAN, step=CHART_STEP) if ev.event != "resolved" else []
        return (Notice(kind=row["kind"], event=ev, incident=row["incident_id"], others=others,
                       series=tuple(series), step=CHART_STEP, acked_by=incident["acked_by"]),
                thread if row["kind"] != "page" else None)

    def _deliver(self, row: dict[str, Any]) -> bool:
        now = self.clock.now()
        channel = self.channels.get(row["channel"])
        if channel is None:
            result = Result.permanent(f"no channel '{row['channel']}' is configured now",
                                      "notify.channels")
        else:
            try:
                notice, thread = self.notice(row)
                result = None
                if row["status"] == "sending":
                    result = self._in_doubt(channel, row, thread)
                if result is None:
                    if not self.store.mark_sending(row["id"], now, holder=self.holder,
                                                   claim=self.claim):
                        return False  # another instance took it over: it sends it
                    result = channel.deliver(notice, thread, now, row["delivery_key"])
            except Exception as e:  # noqa: BLE001 - a notifier bug must not stop the outbox
                log.exception("%s: delivering failed unexpectedly", row["channel"])
                result = Result.retry(f"unexpected error: {type(e).__name__}")
        attempts = row["attempts"] + 1
        giving_up = result.outcome != "sent" and (result.outcome != "retry" or
                                                  now - row["created_at"] >= GIVE_UP)
        metrics.DELIVERIES.labels(row["channel"], "failed" if giving_up
                                  else result.outcome).inc()
        if result.outcome == "sent":
            self.store.record_attempt(row["id"], now, "sent", result.detail, status="sent",
                                      ref=result.ref)
            return True
        if result.outcome == "retry" and now - row["created_at"] < GIVE_UP:
            delay = backoff(attempts, 900.0, result.retry_after, first=RETRY_FIRST)
            log.warning("%s: %s (try %d; next in %.0f s)", row["channel"], result.detail,
                        attempts, delay)
            self.store.record_attempt(row["id"], now, "retry", result.detail,
                                      status="pending", next_at=now + delay)
            return False
        hint = f" (check {result.setting})" if result.setting else ""
        gave_up = " (given up after a day)" if result.outcome == "retry" else ""
        log.error("%s: alert %s not delivered: %s%s%s", row["channel"], row["rule"],
                  result.detail, hint, gave_up)
        self.store.record_attempt(row["id"], now, "failed", result.detail + hint + gave_up,
                                  status="failed")
        return False


    def _in_doubt(self, channel: Channel, row: dict[str, Any], thread: str | None
                  ) -> Result | None:
        """A send was under way when the process died: did it arrive? Asked of the
        service where it can tell (Slack's bot API: the message carries its key); else
        it is sent again, with the same key (a webhook receiver's Idempotency-Key, an
        email's Message-ID: receivers that dedupe see it once)."""
        confirm = getattr(channel, "confirm", None)
        found = (confirm(row["delivery_key"], thread, row["next_at"]) if confirm is not None
                 else None)
        if found is not None and found.outcome == "sent":
            log.info("%s: a message in doubt after a restart had arrived: not sent again",
                     row["channel"])
            return Result.sent("it had arrived before the restart (found by its key)",
                               ref=found.ref)
        log.warning("%s: a message in doubt after a restart is sent again (same key)",
                    row["channel"])
        return None

