"""Flatline rules (``scope: source``): the monitor watching itself.

A source that usually brings mentions and has gone quiet is a broken connector, revoked
credentials, a feed that moved, a subreddit gone private: the frontline believes it is
watching and it is not. Every minute, for each source this instance polls (its lease),
the source rules are evaluated on:

- ``mentions``: new mentions the source brought in the rule's window (arrival time);
- ``expected``: what it brought in the same window at this time of day, the median of
  the last 7 days (as many as it has; 0 before its first full day);
- ``ratio``: mentions / max(expected, 1);
- ``silent_minutes``: since its newest mention; ``failing_minutes``: since it last
  answered (0 when its last poll did).

They alert like every rule (``monitor.alerts``: for, resolve_after, realert), with the
key the source's name and the topic ``stormwatch`` (so a route can send the monitor's
own trouble to whoever runs it), through the same planner and outbox. Their state is
saved with the source's lease (``source:<name>`` in ``partitions``): it moves with the
source when another instance takes it over. Live only: a replay has no sources to lose.
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


class Flatline:
    def __init__(self, store: Store, rules: RuleSet, leases: Leases,
                 planner: Planner | None, *, clock: Clock | None = None) -> None:
        self.store, self.leases, self.planner = store, leases, planner
        self.rules = rules.for_scope("source")
        self.clock = clock or SystemClock()
        self.books: dict[str, tuple[int, AlertBook]] = {}  # source -> (lease epoch, book)

    def reload(self, rules: RuleSet) -> None:
        """New rules: open alerts of rules that still exist are kept."""
        self.rules = rules.for_scope("source")
        self.books.clear()  # reloaded from their saved state, filtered by the new rules

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
        """One look at each source this instance holds; returns the alert events."""
        if not self.rules:
            return 0
        now = self.clock.now()
        states = self.store.load_sources()
        done = 0
        for source in sources:
            lease = f"source:{source}"
            epoch = self.leases.held.get(lease)
            if epoch is None:
                self.books.pop(source, None)
                continue
            book = self._book(source, epoch)
            events: list[AlertEvent] = []
            for rule in self.rules:
                sig = self.signals(source, states.get(source), rule.window, now)
                ev = book.evaluate(rule, source, TOPIC, now, sig, lambda _: [])
                if ev is not None:
                    events.append(ev)
            try:
                with self.store.transaction() as conn:
                    self.leases.fence(conn, lease, epoch)
                    if events:
                        if self.planner is not None:
                            self.planner.record(conn, events)
                        else:
                            self.store.add_events(conn, events)
                    self.store.save_partition(conn, lease, 0, orjson.dumps(book.state()), now)
            except LeaseLost:
                self.books.pop(source, None)
                continue
            except Exception:
                self.books.pop(source, None)  # reloaded from what was committed
                raise
            for ev in events:
                on_event(ev)
            done += len(events)
        return done

    def _book(self, source: str, epoch: int) -> AlertBook:
        held = self.books.get(source)
        if held is not None and held[0] == epoch:
            return held[1]
        saved = self.store.load_partition(f"source:{source}")
        book = (AlertBook.from_state(saved[1], {r.name for r in self.rules})
                if saved is not None else AlertBook())
        self.books[source] = (epoch, book)
        return book
