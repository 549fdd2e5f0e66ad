"""The alert lifecycle, after Prometheus: pending -> firing -> (escalated) -> resolved.

An alert is keyed by (rule, scope key). ``AlertBook.evaluate`` is called at each minute
of event time with whether the rule's conditions hold and the signals; it returns the
event that the transition causes, if any:

- conditions hold, ``for`` is 0 or has elapsed while they kept holding: ``fired``,
  at the severity of the highest escalation step that already holds;
- while firing, a higher escalation step holds: ``escalated`` (steps never go down);
- conditions have failed for ``resolve_after``: ``resolved``;
- a scope that fires again within ``realert`` of its last page, at a step no higher
  than the one last notified, fires *quietly*: no new ``fired`` event (a flapping
  thread does not page twice); anything worse still pages, and then its resolution.

Between minute boundaries the engine may ask again, ``prompt=True``, when a scope has
grown: then only the transitions that make things worse happen (fire, once ``for`` has
elapsed, and escalate). Going pending, staying quiet and resolving wait for the
minute's end, so a prompt look never hides what the minute as a whole shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from monitor.detect import Signals, rounded
from monitor.models import AlertEvent
from monitor.rules import Rule, render

PENDING, FIRING = "pending", "firing"


@dataclass(slots=True)
class AlertState:
    state: str
    since: float
    last_true: float
    step: int = 0
    severity: str = ""
    quiet: bool = False
    topic: str = ""
    scope: str = ""


class AlertBook:
    """Open alerts and recent pages, in memory, JSON-able (``state()``/``from_state()``)."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str], AlertState] = {}
        self.last_fired: dict[tuple[str, str], tuple[float, int]] = {}  # (at, step notified)

    def can_rise(self, rule: Rule, key: str) -> bool:
        """Could a prompt look change anything: not yet firing, or below the top step."""
        st = self.open.get((rule.name, key))
        return st is None or st.state == PENDING or st.step < len(rule.steps)

    def active_keys(self, scope: str) -> set[str]:
        return {k for (_, k), st in self.open.items() if st.scope == scope}

    def evaluate(self, rule: Rule, key: str, topic: str, at: float,
                 signals: Signals | dict[str, Any],
                 evidence: Callable[[float], list[dict[str, Any]]], *, prompt: bool = False
                 ) -> AlertEvent | None:
        ident = (rule.name, key)
        st = self.open.get(ident)
        if rule.holds(signals):
            if st is None:
                if rule.for_ > 0:
                    if prompt:
                        return None
                    self.open[ident] = AlertState(PENDING, at, at, topic=topic, scope=rule.scope)
                    return None
                return self._fire(rule, ident, topic, at, signals, evidence)
            st.last_true = at
            if st.state == PENDING:
                if at - st.since >= rule.for_:
                    return self._fire(rule, ident, topic, at, signals, evidence)
                return None
            step = rule.step_at(signals)
            if step > st.step:
                st.step, st.severity, st.quiet = step, rule.severity_at(step), False
                self.last_fired[ident] = (self.last_fired.get(ident, (at, 0))[0], step)
                return self._event("escalated", rule, key, st, at, signals, evidence)
            return None
        if st is None or prompt:
            return None
        if st.state == PENDING:
            del self.open[ident]
            return None
        if at - st.last_true >= rule.resolve_after:
            del self.open[ident]
            if not st.quiet:
                return self._event("resolved", rule, key, st, at, signals, None)
        return None

    def _fire(self, rule: Rule, ident: tuple[str, str], topic: str, at: float,
              signals: Signals | dict[str, Any], evidence: Callable[[float], list[dict[str, Any]]]
              ) -> AlertEvent | None:
        step = rule.step_at(signals)
        last = self.last_fired.get(ident)
        quiet = last is not None and at - last[0] < rule.realert and step <= last[1]
        st = AlertState(FIRING, at, at, step, rule.severity_at(step), quiet, topic, rule.scope)
        self.open[ident] = st
        if quiet:
            return None
        self.last_fired[ident] = (at, step)
        return self._event("fired", rule, ident[1], st, at, signals, evidence)

    def _event(self, kind: str, rule: Rule, key: str, st: AlertState, at: float,
               signals: Signals | dict[str, Any],
               evidence: Callable[[float], list[dict[str, Any]]] | None
               ) -> AlertEvent:
        shown = rounded(signals, rule.window)
        values = {**shown, "rule": rule.name, "severity": st.severity, "scope": rule.scope,
                  "key": key, "topic": st.topic}
        ann = rule.annotations
        return AlertEvent(
            event=kind, rule=rule.name, severity=st.severity, scope=rule.scope, key=key,
            topic=st.topic, at=at, signals=shown, summary=render(ann.summary, values),
            playbook=ann.playbook, step=st.step,
            top_posts=tuple(evidence(at - rule.window)) if evidence else ())

    def close_by_hand(self, rule: str, key: str) -> bool:
        """Forget an alert that a person closed (``stormwatch alerts resolve``), if it
        fired aloud here. Its realert memory stays, so if the trouble goes on it comes
        back quietly, and pages again only when it gets worse."""
        st = self.open.get((rule, key))
        if st is None or st.state != FIRING or st.quiet:
            return False
        del self.open[(rule, key)]
        return True

    def forget(self, older_than: float, horizon: dict[str, int]) -> None:
        """Drop realert memory past every rule's realert horizon."""
        for ident, (t, _) in list(self.last_fired.items()):
            if t < older_than - horizon.get(ident[0], 0):
                del self.last_fired[ident]

    def state(self) -> dict[str, Any]:
        return {"open": [[r, k, asdict(st)] for (r, k), st in self.open.items()],
                "last_fired": [[r, k, t, step] for (r, k), (t, step) in self.last_fired.items()]}

    @classmethod
    def from_state(cls, s: dict[str, Any], rule_names: set[str]) -> AlertBook:
        book = cls()
        for r, k, st in s.get("open", []):
            if r in rule_names:
                book.open[(r, k)] = AlertState(**st)
        for r, k, t, step in s.get("last_fired", []):
            if r in rule_names:
                book.last_fired[(r, k)] = (float(t), int(step))
        return book
