"""The notification planner: from alert events to messages, in the events' transaction.

After Alertmanager's stages, each one small:

- **group**: an alert joins the open incident of its topic (or opens one); the incident
  closes when its last alert resolves.
- **silence**: an event that an active silence matches is kept, and tells nobody.
- **route**: the routes that match the alert and are active now name the channels.
- **inhibit and fold**: per channel, a message only when it changes what a person must
  do: the first message about the incident (``page``); a higher severity than any
  already sent (``escalation``); another thread to answer while no topic-wide alert
  covers them (``update``: a topic-wide incident mutes its own thread alerts); the
  incident's end (``resolved``, where the route asks). Anything else (a second topic
  rule at the same severity, a thread joining a topic-wide incident, one alert of
  several resolving) is folded: it shows in the incident's next message and in
  ``stormwatch alerts show``.

The messages become delivery rows (the outbox) in the same transaction as the events.
A page waits ``group_wait`` seconds, and the threads that join the incident meanwhile
go out in it (it lists the incident's alerts as they are when it is sent), so a burst
arrives as one message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from monitor.clock import Clock, SystemClock
from monitor.models import SEVERITY_RANK, AlertEvent
from monitor.notify.routes import Route, Routing
from monitor.store import Store


class Planner:
    def __init__(self, routing: Routing, store: Store, clock: Clock | None = None, *,
                 group_wait: float = 0.0) -> None:
        self.routing, self.store = routing, store
        self.clock = clock or SystemClock()
        self.group_wait = group_wait

    def record(self, conn: Connection, events: Sequence[AlertEvent]) -> None:
        """Store each event and plan its messages, one after the other (each is judged
        on the incident as the events before it left it)."""
        for ev in events:
            self.plan(conn, [ev], self.store.add_events(conn, [ev]))

    def plan(self, conn: Connection, events: Sequence[AlertEvent],
             ids: Sequence[tuple[int, int]]) -> None:
        """Group, silence, route and fold events just stored (``ids``: alert id, event
        id), which must be the latest of their incidents."""
        if not events:
            return
        store, now = self.store, self.clock.now()
        silences = store.active_silences(conn, now)
        for ev, (alert_id, event_id) in zip(events, ids, strict=True):
            incident_id, _ = store.incident_of(conn, alert_id, ev.topic, ev.severity, ev.at)
            members = store.incident_alerts(conn, incident_id)
            incident = store.get_incident(conn, incident_id)
            if incident["state"] == "resolved" and ev.event == "resolved":
                continue  # closed by hand already, and said so
            closed = all(a["state"] != "firing" for a in members)
            changes: dict[str, Any] = {}
            if SEVERITY_RANK[ev.severity] > SEVERITY_RANK[incident["severity"]]:
                changes["severity"] = ev.severity
            if closed:
                changes.update(state="resolved", resolved_at=ev.at)
            if changes:
                store.update_incident(conn, incident_id, **changes)
            if any(silenced(s, ev) for s in silences):
                continue
            topic_wide = any(a["scope"] == "topic" and a["state"] == "firing"
                             and a["id"] != alert_id for a in members)
            for channel, route in self.routing.channels(ev.rule, ev.scope, ev.topic,
                                                        ev.severity, now).items():
                sent = store.notified(conn, incident_id, channel)
                kind = message_kind(ev, route, sent, topic_wide=topic_wide, closed=closed)
                if kind is not None:
                    due = now + self.group_wait if kind == "page" else now
                    store.add_delivery(conn, event_id=event_id, alert_id=alert_id,
                                       incident_id=incident_id, channel=channel, kind=kind,
                                       now=now, due=due)


def message_kind(ev: AlertEvent, route: Route, sent: Sequence[tuple[str, str, str]], *,
                 topic_wide: bool, closed: bool) -> str | None:
    """What message, if any, this event is worth on a channel that already has the
    messages ``sent`` (kind, severity, status) about the incident."""
    told = [sev for kind, sev, _ in sent if kind != "resolved"]
    if ev.event == "resolved":
        return "resolved" if closed and told and route.send_resolved else None
    if not told:
        return "page"
    if SEVERITY_RANK[ev.severity] > max(SEVERITY_RANK[s] for s in told):
        return "escalation"
    if ev.event == "fired" and ev.scope == "thread" and not topic_wide:
        page_waiting = any(kind == "page" and status == "pending" for kind, _, status in sent)
        return None if page_waiting else "update"  # a waiting page will list it
    return None


def silenced(s: dict[str, Any], ev: AlertEvent) -> bool:
    """Does silence ``s`` (rule, topic, key, scope: None matches anything) cover ``ev``?"""
    return all(s[k] is None or s[k] == getattr(ev, k) for k in ("rule", "topic", "key", "scope"))
