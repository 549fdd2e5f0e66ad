"""Topic detectors: the feed of stored mentions in, alert events out, exactly once.

Live, a mention is stored first (by whichever instance polls its source, in the feed's
commit order: ``Store.next_seq``) and counted after, by the detector of each of its
topics. A topic's detector (a *partition*: one :class:`~monitor.engine.Engine` owning
that topic, leased as ``topic:<name>``) keeps its place in the feed; each batch it
reads commits, in one transaction, the alert events it caused (and the messages they
are worth: the planner), the engine's state and the new place, fenced by the lease.
A crash loses nothing (the feed is re-read from the committed place) and counts
nothing twice (the place moves with the state that counted it).

Event time is the feed's: every partition is moved to each minute boundary the feed
passes, as one engine for every topic would be, so a quiet topic resolves as the
others talk. A partition with no saved state (a new topic; a lost state) is warmed on
the stored mentions of its topic of the last two days, without alerting on them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from monitor import metrics
from monitor.alerts import AlertBook
from monitor.clock import Clock, SystemClock
from monitor.engine import Engine
from monitor.leases import LeaseLost, Leases
from monitor.models import AlertEvent, Mention
from monitor.notify.plan import Planner
from monitor.stats import BUCKET
from monitor.store import Store

log = logging.getLogger("stormwatch")

WARM_SPAN = 2 * 86400   # seconds of stored mentions a partition without state learns from
BATCH = 2000            # feed rows per transaction


@dataclass
class Partition:
    topic: str
    engine: Engine
    seq: int           # the last feed number it has seen
    epoch: int         # of its lease, when it was loaded
    committed: bytes   # its state as last committed (a failed batch goes back to it)

    @property
    def lease(self) -> str:
        return f"topic:{self.topic}"


class Detector:
    def __init__(self, store: Store, engine_factory: Callable[[str], Engine],
                 planner: Planner | None, leases: Leases, *, clock: Clock | None = None,
                 on_event: Callable[[AlertEvent], None] | None = None) -> None:
        self.store, self.planner, self.leases = store, planner, leases
        self.engine_factory = engine_factory
        self.clock = clock or SystemClock()
        self.on_event = on_event or (lambda ev: None)
        self.partitions: dict[str, Partition] = {}
        self.feed_now = 0.0   # event time of the feed: the newest minute it passed
        self.events_since_wake = 0  # alert events committed since the outbox was woken

    # -- which topics are here -------------------------------------------------------
    def sync(self) -> None:
        """Load the partitions whose lease this instance got; drop those it lost."""
        held = {n.removeprefix("topic:"): e for n, e in self.leases.held.items()
                if n.startswith("topic:")}
        for topic, p in list(self.partitions.items()):
            if held.get(topic) != p.epoch:
                del self.partitions[topic]
                log.info("detector for topic %s handed over", topic)
        for topic, epoch in held.items():
            if topic not in self.partitions:
                self.partitions[topic] = self._load(topic, epoch)

    def _load(self, topic: str, epoch: int) -> Partition:
        engine = self.engine_factory(topic)
        saved = self.store.load_partition(f"topic:{topic}")
        if saved is not None:
            seq, state = saved
            engine.restore(state)
        else:
            seq = self.store.last_seq()
            n = self._warm(engine, topic, seq)
            log.info("detector for topic %s warmed on %d stored mention(s)", topic, n)
        self.feed_now = max(self.feed_now, engine.now)
        return Partition(topic, engine, seq, epoch, orjson.dumps(engine.state()))

    def _warm(self, engine: Engine, topic: str, seq: int) -> int:
        """Learn the stored mentions up to feed number ``seq`` (the feed goes on from
        there: none is seen twice)."""
        newest = self.store.mention_span()[1]
        if newest is None:
            return 0
        n = 0
        for m in self.store.iter_mentions(since=newest - WARM_SPAN, topic=topic,
                                          until_seq=seq):
            engine.ingest(m)
            n += 1
        engine.book = AlertBook()  # what it saw is history: alert on what holds from now
        return n

    # -- the feed --------------------------------------------------------------------
    def step(self, limit: int = BATCH) -> int:
        """Count the next batch of the feed; returns how many rows it read (0: caught up)."""
        if not self.partitions:
            return 0
        since = min(p.seq for p in self.partitions.values())
        rows = self.store.feed(since, limit)
        if not rows:
            return 0
        with metrics.DETECT_SECONDS.time():
            self._count(rows)
        return len(rows)

    def _count(self, rows: list[tuple[int, Any]]) -> None:
        events: list[AlertEvent] = []
        counted: Counter[str] = Counter()
        touched: set[str] = set()
        parts = list(self.partitions.values())
        for seq, item in rows:
            if isinstance(item, Mention):
                ts = item.created_at
                if ts >= self.feed_now + BUCKET:
                    self._advance_all(ts, events, touched)
                for p in parts:
                    if seq > p.seq and p.topic in item.topics:
                        events += p.engine.ingest(item)
                        touched.add(p.topic)
                        counted[p.topic] += 1
            else:
                thread, topics, growth = item
                for p in parts:
                    if seq > p.seq and p.topic in topics:
                        p.engine.add_engagement(thread, [p.topic], growth)
                        touched.add(p.topic)
        if self._commit(events, touched, rows[-1][0]):
            for topic, n in counted.items():
                metrics.COUNTED.labels(topic).inc(n)

    def _advance_all(self, t: float, events: list[AlertEvent], touched: set[str]) -> None:
        for p in self.partitions.values():
            got = p.engine.advance(t)
            if got or p.engine.now > self.feed_now:
                touched.add(p.topic)
            events += got
        self.feed_now = max(self.feed_now, float(int(t) // BUCKET * BUCKET))

    def advance(self, t: float) -> None:
        """Move event time to ``t`` without a mention (the wall clock, less lateness):
        windows close and alerts resolve when nothing arrives. Alerts a person resolved
        by hand are forgotten first."""
        if not self.partitions or not self.feed_now or t < self.feed_now + BUCKET:
            return  # nothing here, or no mention yet: the clock starts with the first
        firing: dict[str, set[tuple[str, str]]] = {}
        if any(p.engine.book.open for p in self.partitions.values()):
            for rule, key, topic in self.store.firing_alerts():
                firing.setdefault(topic, set()).add((rule, key))
        for p in self.partitions.values():
            if p.engine.book.open:
                closed = p.engine.book.close_by_hand(firing.get(p.topic, set()))
                if closed:
                    log.info("%s: %d alert(s) resolved by hand", p.topic, closed)
        events: list[AlertEvent] = []
        touched: set[str] = set()
        self._advance_all(t, events, touched)
        self._commit(events, touched, None)

    def _commit(self, events: list[AlertEvent], touched: set[str], seq: int | None) -> bool:
        """One transaction for the batch: its alert events, and the state and place of
        each partition it changed, fenced by their leases. A partition it did not change
        keeps its saved place (re-reading rows not about its topic changes nothing). On
        any failure every partition goes back to its committed state and place."""
        if touched or events:
            now = self.clock.now()
            saved: dict[str, bytes] = {}
            try:
                with self.store.transaction() as conn:
                    for topic in sorted(touched):
                        p = self.partitions[topic]
                        self.leases.fence(conn, p.lease, p.epoch)
                        saved[topic] = orjson.dumps(p.engine.state())
                        self.store.save_partition(conn, p.lease, max(p.seq, seq or 0),
                                                  saved[topic], now)
                    if self.planner is not None:
                        self.planner.record(conn, events)
                    else:
                        self.store.add_events(conn, events)
            except LeaseLost as e:
                log.warning("%s: its batch is left to the new holder", e)
                self._roll_back()
                self.sync()
                return False
            except Exception:
                self._roll_back()
                raise
            for topic, blob in saved.items():
                self.partitions[topic].committed = blob
        if seq is not None:
            for p in self.partitions.values():
                p.seq = max(p.seq, seq)
        self.events_since_wake += len(events)
        for ev in events:
            metrics.ALERT_EVENTS.labels(ev.event, ev.severity).inc()
            self.on_event(ev)
        return True

    def reload(self, engine_factory: Callable[[str], Engine]) -> None:
        """New rules: every partition goes on from its committed state (all of it is
        committed between batches) under engines built by ``engine_factory``; what
        still applies is kept (``Engine.restore``)."""
        self.engine_factory = engine_factory
        self._roll_back()

    def _roll_back(self) -> None:
        for topic, p in list(self.partitions.items()):
            engine = self.engine_factory(topic)
            engine.restore(orjson.loads(p.committed))
            p.engine = engine
        self.feed_now = max((p.engine.now for p in self.partitions.values()), default=0.0)

    # -- for the sources -------------------------------------------------------------
    def active_threads(self, prefix: str, since_span: float, limit: int) -> list[str]:
        """Threads under ``prefix`` with a mention in the last ``since_span`` seconds of
        event time, most recent first, across this instance's partitions."""
        found: list[str] = []
        for p in self.partitions.values():
            found += p.engine.active_threads(prefix, p.engine.now - since_span, limit)
        return found[:limit]
