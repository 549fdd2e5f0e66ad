"""A notice: one message about an incident, as a channel renders it.

``kind`` says why it is sent: ``page`` (the first message about the incident on this
channel), ``escalation`` (it got worse: a higher severity), ``update`` (another thread
to answer, while no topic-wide alert covers them), ``resolved`` (every alert of the
incident is back to normal), ``reminder`` (still open, unacknowledged, nothing new for
a while), ``unacknowledged`` (to the next people: nobody acknowledged it in time).
``event`` is the alert event behind it, with the numbers and the evidence; ``others``
the incident's other alerts; ``series`` the mentions per ``step`` seconds over the
hours before the event (the chart).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from monitor.models import AlertEvent

KINDS = ("page", "escalation", "update", "resolved", "reminder", "unacknowledged")
SPARKS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Notice:
    kind: str
    event: AlertEvent
    incident: int = 0
    others: tuple[dict[str, Any], ...] = ()
    series: tuple[int, ...] = ()
    step: int = 900
    acked_by: str | None = None

    @property
    def where(self) -> str:
        ev = self.event
        return f"topic {ev.topic}" if ev.scope == "topic" else f"a thread in {ev.topic}"

    def chart(self) -> str:
        """The series as a sparkline with its scale: ``▁▁▂▅█ (15 min bars, peak 42)``."""
        if not self.series:
            return ""
        peak = max(self.series)
        bars = "".join(SPARKS[0] if peak == 0 else
                       SPARKS[min(len(SPARKS) - 1, round(v / peak * (len(SPARKS) - 1)))]
                       for v in self.series)
        hours = len(self.series) * self.step / 3600
        return (f"{bars}  last {hours:g} h, {self.step // 60} min bars, "
                f"peak {peak} mention{'s' if peak != 1 else ''}")
