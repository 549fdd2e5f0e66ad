"""Routes: which channels hear of an alert, and when (after Alertmanager's routing tree,
kept flat).

A route matches an alert by its severity (at least ``min_severity``), topic, rule and
scope (each optional), and names the channels it goes to. ``active`` limits a route to
time intervals (business hours, on-call nights), judged on the wall clock in the
interval's own time zone. Every route that matches and is active adds its channels; a
channel named by two routes is told once, under the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from monitor.models import SEVERITY_RANK

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class TimeInterval:
    """Weekdays (0 = Monday) and minute ranges of the day ``[start, end)``, in ``zone``."""

    weekdays: frozenset[int]
    minutes: tuple[tuple[int, int], ...]
    zone: str = "UTC"

    def contains(self, ts: float) -> bool:
        local = datetime.fromtimestamp(ts, UTC).astimezone(ZoneInfo(self.zone))
        if self.weekdays and local.weekday() not in self.weekdays:
            return False
        minute = local.hour * 60 + local.minute
        return not self.minutes or any(a <= minute < b for a, b in self.minutes)


@dataclass(frozen=True)
class Route:
    name: str
    to: tuple[str, ...]
    min_severity: str = "warning"
    topics: frozenset[str] = frozenset()   # empty: any
    rules: frozenset[str] = frozenset()
    scope: str | None = None
    send_resolved: bool = True
    active: tuple[TimeInterval, ...] = ()  # empty: always
    escalate_after: float | None = None    # nobody acknowledged within this: tell ...
    escalate_to: tuple[str, ...] = ()      # ... these channels too

    def matches(self, rule: str, scope: str, topic: str, severity: str) -> bool:
        return (SEVERITY_RANK[severity] >= SEVERITY_RANK[self.min_severity]
                and (not self.topics or topic in self.topics)
                and (not self.rules or rule in self.rules)
                and (self.scope is None or scope == self.scope))

    def active_at(self, now: float) -> bool:
        return not self.active or any(i.contains(now) for i in self.active)


class Routing:
    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)

    def channels(self, rule: str, scope: str, topic: str, severity: str, now: float,
                 ) -> dict[str, Route]:
        """The channels to tell now, each with the route that chose it."""
        out: dict[str, Route] = {}
        for r in self.routes:
            if r.matches(rule, scope, topic, severity) and r.active_at(now):
                for channel in r.to:
                    out.setdefault(channel, r)
        return out
