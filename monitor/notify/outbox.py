"""The outbox: deliveries written with their alert events, sent until they are sent.

An alert event's deliveries (one per channel its route names) are rows written in the
same transaction as the event (DESIGN invariant 4), so a crash can lose neither. This
worker takes the due ones, oldest first and in order per alert and channel, renders and
sends each, and records every attempt: sent; retry (backoff doubling from 10 s to 15
min, never sooner than the service's ``Retry-After``, given up after a day); or
permanent (bad credentials, a refused payload: surfaced, not retried). A restart
resumes where it stopped: pending rows are just rows.

At least once: a crash between a send and its record sends it again after the restart;
the idempotency key (alert, event, step, channel) makes the row itself unique.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from monitor.backoff import backoff
from monitor.clock import Clock, SystemClock
from monitor.models import SEVERITY_RANK, AlertEvent
from monitor.notify.result import Result
from monitor.store import Store

log = logging.getLogger("stormwatch")

RETRY_FIRST = 10.0
GIVE_UP = 86400.0


class Channel(Protocol):
    """Renders and sends one event; ``thread`` is the first message's ref, if any;
    ``key`` the delivery's idempotency key (alert, event, step, channel)."""

    def deliver(self, ev: AlertEvent, thread: str | None, now: float, key: str) -> Result: ...


@dataclass(frozen=True)
class Route:
    """Which events a channel gets."""

    channel: str
    min_severity: str = "warning"
    send_resolved: bool = True

    def wants(self, ev: AlertEvent) -> bool:
        if ev.event == "resolved":
            return self.send_resolved
        return SEVERITY_RANK[ev.severity] >= SEVERITY_RANK[self.min_severity]


def router(routes: list[Route]) -> Callable[[AlertEvent], list[str]]:
    """The channels an event goes to (a resolution: those with ``send_resolved``)."""
    def route(ev: AlertEvent) -> list[str]:
        return [r.channel for r in routes if r.wants(ev)]
    return route


class Outbox:
    def __init__(self, store: Store, channels: Mapping[str, Channel],
                 clock: Clock | None = None) -> None:
        self.store, self.channels = store, dict(channels)
        self.clock = clock or SystemClock()

    def deliver_due(self, limit: int = 50) -> int:
        """Send what is due; returns how many were sent."""
        sent = 0
        for row in self.store.due_deliveries(self.clock.now(), limit):
            if self._deliver(row):
                sent += 1
        return sent

    def _deliver(self, row: dict[str, Any]) -> bool:
        now = self.clock.now()
        channel = self.channels.get(row["channel"])
        if channel is None:
            result = Result.permanent(f"no channel '{row['channel']}' is configured now",
                                      "notify")
        else:
            ev = _event(row)
            thread = self.store.thread_ref(row["alert_id"], row["channel"]) \
                if ev.event != "fired" else None
            try:
                result = channel.deliver(ev, thread, now, row["key"])
            except Exception as e:  # noqa: BLE001 - a notifier bug must not stop the outbox
                log.exception("%s: delivering failed unexpectedly", row["channel"])
                result = Result.retry(f"unexpected error: {type(e).__name__}")
        attempts = row["attempts"] + 1
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


def _event(row: dict[str, Any]) -> AlertEvent:
    return AlertEvent(event=row["event"], rule=row["rule"], severity=row["severity"],
                      scope=row["scope"], key=row["key"], topic=row["topic"], at=row["at"],
                      signals=row["signals"], summary=row["summary"],
                      playbook=row["playbook"], top_posts=tuple(row["top_posts"]),
                      step=row["step"])
