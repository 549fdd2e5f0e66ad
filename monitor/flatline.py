"""Flatline rules (``scope: source``): the monitor watching itself.

A source that usually brings mentions and has gone quiet is a broken connector, revoked
credentials, a feed that moved, a subreddit gone private: the frontline believes it is
watching and it is not. Every minute, for each source, the source rules are evaluated
on:

- ``mentions``: new mentions the source brought in the rule's window (arrival time);
- ``expected``: what it brought in the same window at this time of day, the median of
  the last 7 days (as many as it has; 0 before its first full day);
- ``ratio``: mentions / max(expected, 1);
- ``silent_minutes``: since its newest mention; ``failing_minutes``: since it last
  answered (0 when its last poll did).

They alert like every rule (``monitor.alerts``: for, resolve_after, realert), with the
key the source's name and the topic ``stormwatch`` (so a route can send the monitor's
own trouble to whoever runs it), through the same planner and outbox. One instance
evaluates them for every source (the ``job:flatline`` lease: their alerts are one
incident, with one writer); their state is saved under that lease and moves with it.
Live only: a replay has no sources to lose.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable

import orjson

from monitor.alerts import AlertBook
from monitor.clock import Clock, SystemClock
from monitor.leases import LeaseLost, Leases
from monitor.models import AlertEvent, SourceState
from monitor.notify.plan import Planner
from monitor.rules import RuleSet
from monitor.store import Store

log = logging.getLogger("stormwatch")

TOPIC = "stormwatch"   # the topic of alerts about the monitor itself
DAYS = 7
LEASE = "job:flatline"


class Flatline:
    def __init__(self, store: Store, rules: RuleSet, leases: Leases,
                 planner: Planner | None, *, clock: Clock | None = None) -> None:
        self.store, self.leases, self.planner = store, leases, planner
        self.rules = rules.for_scope("source")
        self.clock = clock or SystemClock()
        self._book: tuple[int, AlertBook] | None = None  # (lease epoch, book)

    def reload(self, rules: RuleSet) -> None:
        """New rules: open alerts of rules that still exist are kept."""
        self.rules = rules.for_scope("source")
        self._book = None  # reloaded from its saved state, filtered by the new rules

    def signals(self, source: str, state: SourceState | None, window: float,
                now: float) -> dict[str, float]:
        counts = self.store.source_counts(source, now, window, DAYS)
        current, history = counts[0], counts[1:]
        expected = float(statistics.median(history)) if history else 0.0
        newest = state.newest_at if state is not None else None
        failing = 0.0
        if state is not None and state.last_error_at and (
                not state.last_success or state.last_error_at > state.last_success):
            failing = (now - (state.last_success or state.last_error_at)) / 60
        return {"mentions": current, "expected": expected,
                "ratio": current / max(expected, 1.0),
                "silent_minutes": (now - newest) / 60 if newest else 0.0,
                "failing_minutes": max(0.0, failing)}

    def evaluate(self, sources: list[str], on_event: Callable[[AlertEvent], None]) -> int:
        """One look at every source, by the one instance holding ``job:flatline`` (the
        alerts are one incident, written by one writer); returns the alert events."""
        epoch = self.leases.held.get(LEASE)
        if not self.rules or epoch is None:
            self._book = None
            return 0
        now = self.clock.now()
        states = self.store.load_sources()
        windows = {r.window for r in self.rules}
        signals = {(src, w): self.signals(src, states.get(src), w, now)
                   for src in sources for w in windows}  # every read before any change
        book = self._load(epoch)
        events = [ev for src in sources for rule in self.rules
                  if (ev := book.evaluate(rule, src, TOPIC, now, signals[(src, rule.window)],
                                          lambda _: [])) is not None]
        try:
            with self.store.transaction() as conn:
                self.leases.fence(conn, LEASE, epoch)
                if events:
                    if self.planner is not None:
                        self.planner.record(conn, events)
                    else:
                        self.store.add_events(conn, events)
                self.store.save_partition(conn, LEASE, 0, orjson.dumps(book.state()), now)
        except LeaseLost:
            self._book = None
            return 0
        except Exception:
            self._book = None  # back to what was committed
            raise
        for ev in events:
            on_event(ev)
        return len(events)

    def _load(self, epoch: int) -> AlertBook:
        if self._book is not None and self._book[0] == epoch:
            return self._book[1]
        saved = self.store.load_partition(LEASE)
        book = (AlertBook.from_state(saved[1], {r.name for r in self.rules})
                if saved is not None else AlertBook())
        self._book = (epoch, book)
        return book
