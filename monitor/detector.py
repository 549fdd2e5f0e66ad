"""Topic detectors: the feed of stored mentions in, alert events out, exactly once.

Live, a mention is stored first (by whichever instance polls its source, in the feed's
commit order: ``Store.next_seq``) and counted after, by the detector of each of its
topics. A topic's detector (a *partition*: one :class:`~monitor.engine.Engine` owning
that topic, leased as ``topic:<name>``) reads the feed from its place. Everything that
moves it is in the feed: mentions, engagement growth, clock ticks (event time moving
with the wall clock) and alerts closed by hand, so reading the same stretch of feed
from the same state always gives the same events.

That makes exactly-once cheap. Each batch commits, in one transaction fenced by the
leases, the alert events it caused (and their messages: the planner) and, per
partition, the place up to which its events are stored (``emitted``). The engine's
state, which is large for a busy brand (every thread of the last hours with its
evidence), is checkpointed with its place every ``CHECKPOINT`` seconds, at a clean stop
and after a rules reload. After a crash or a takeover the detector goes on from its
checkpoint and reads the feed again: up to ``emitted`` it drops the events (stored
already), after it they are new. Nothing is lost, nothing is counted or sent twice.

A partition with no checkpoint (a new topic; a lost state) is warmed on the stored
mentions of its topic of the last two days, without alerting on them.
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
CHECKPOINT = 60.0       # seconds between checkpoints of a detector's state


@dataclass
class Partition:
    topic: str
    engine: Engine
    seq: int           # the last feed number it has counted
    epoch: int         # of its lease, when it was loaded
    committed: bytes   # its state at its checkpoint ...
    saved_seq: int     # ... which is as of this feed number
    emitted: int       # its events are stored up to this feed number
    due: bool = False  # checkpoint at the next chance (warmed, or rules reloaded)

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
        self.events_since_wake = 0  # alert events committed since the outbox was woken
        self._checkpointed = self.clock.monotonic()

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
        if any(p.due for p in self.partitions.values()):
            self.checkpoint()  # a warmed partition gets its first checkpoint at once

    def _load(self, topic: str, epoch: int) -> Partition:
        engine = self.engine_factory(topic)
        saved = self.store.load_partition(f"topic:{topic}")
        if saved is not None:
            seq, state, emitted = saved
            engine.restore(state)
            return Partition(topic, engine, seq, epoch, orjson.dumps(state), seq, emitted)
        seq = self.store.last_seq()
        n = self._warm(engine, topic, seq)
        log.info("detector for topic %s warmed on %d stored mention(s)", topic, n)
        return Partition(topic, engine, seq, epoch, orjson.dumps(engine.state()), seq, seq,
                         due=True)

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
        """Count the next batch of the feed; returns how many rows it read (0: caught up).
        Checkpoints when one is due."""
        if not self.partitions:
            return 0
        since = min(p.seq for p in self.partitions.values())
        rows = self.store.feed(since, limit)
        if rows:
            with metrics.DETECT_SECONDS.time():
                try:
                    self._count(rows)
                except Exception:
                    self._roll_back()  # half-counted: back to the checkpoints, read again
                    raise
        if self.clock.monotonic() - self._checkpointed >= CHECKPOINT:
            self.checkpoint()
        return len(rows)

    def _count(self, rows: list[tuple[int, Any]]) -> None:
        events: list[tuple[Partition, AlertEvent]] = []
        counted: Counter[str] = Counter()
        parts = list(self.partitions.values())
        for seq, item in rows:
            for p in parts:
                if seq <= p.seq:
                    continue
                got = self._apply(p, item)
                if got and seq > p.emitted:  # up to ``emitted``: stored before a restart
                    events += [(p, ev) for ev in got]
                if isinstance(item, Mention) and p.topic in item.topics:
                    counted[p.topic] += 1
        if self._commit(events, rows[-1][0]):
            for topic, n in counted.items():
                metrics.COUNTED.labels(topic).inc(n)

    @staticmethod
    def _apply(p: Partition, item: Any) -> list[AlertEvent]:
        """One feed entry into one partition's engine (the same, however often read)."""
        engine = p.engine
        if isinstance(item, Mention):
            ts = item.created_at
            got = engine.advance(ts) if engine.now and ts >= engine.now + BUCKET else []
            if p.topic in item.topics:
                got += engine.ingest(item)
            return got
        kind = item[0]
        if kind == "clock":
            at = item[1]
            return engine.advance(at) if engine.now and at >= engine.now + BUCKET else []
        if kind == "engagement":
            _, thread, topics, growth = item
            if p.topic in topics:
                engine.add_engagement(thread, [p.topic], growth)
            return []
        _, rule, key, topic = item  # closed by hand
        if topic == p.topic and engine.book.close_by_hand(rule, key):
            log.info("%s: alert %s %s resolved by hand", topic, rule, key)
        return []

    def _commit(self, events: list[tuple[Partition, AlertEvent]], seq: int) -> bool:
        """The batch's events and their partitions' ``emitted`` place, in one transaction
        fenced by those partitions' leases. On failure every partition goes back to its
        checkpoint (the feed is read again from there)."""
        with_events = {p.topic: p for p, _ in events}
        evs = [ev for _, ev in events]
        if evs:
            try:
                with self.store.transaction() as conn:
                    for topic in sorted(with_events):
                        p = with_events[topic]
                        self.leases.fence(conn, p.lease, p.epoch)
                        self.store.mark_emitted(conn, p.lease, seq)
                    if self.planner is not None:
                        self.planner.record(conn, evs)
                    else:
                        self.store.add_events(conn, evs)
            except LeaseLost as e:
                log.warning("%s: its batch is left to the new holder", e)
                self._roll_back()
                self.sync()
                return False
            except Exception:
                self._roll_back()
                raise
            for p in with_events.values():
                p.emitted = seq
        for p in self.partitions.values():
            p.seq = max(p.seq, seq)
        self.events_since_wake += len(evs)
        for ev in evs:
            metrics.ALERT_EVENTS.labels(ev.event, ev.severity).inc()
            self.on_event(ev)
        return True

    def checkpoint(self) -> None:
        """Save every partition's state as of its place (fenced by its lease)."""
        self._checkpointed = self.clock.monotonic()
        if not self.partitions:
            return
        now = self.clock.now()
        blobs: dict[str, bytes] = {}
        try:
            with self.store.transaction() as conn:
                for p in self.partitions.values():
                    if p.seq == p.saved_seq and not p.due:
                        continue  # nothing new since the last checkpoint
                    self.leases.fence(conn, p.lease, p.epoch)
                    blobs[p.topic] = orjson.dumps(p.engine.state())
                    self.store.save_partition(conn, p.lease, p.seq, blobs[p.topic], now)
                    self.store.mark_emitted(conn, p.lease, p.emitted)
        except LeaseLost as e:
            log.warning("%s: not checkpointed, the new holder goes on", e)
            self.sync()
            return
        for topic, blob in blobs.items():
            p = self.partitions[topic]
            p.committed, p.saved_seq, p.due = blob, p.seq, False

    def reload(self, engine_factory: Callable[[str], Engine]) -> None:
        """New rules: every partition goes on from its state as it is (between batches)
        under engines built by ``engine_factory``; what still applies is kept
        (``Engine.restore``). Checkpointed at once: a re-read after a crash is read
        under the rules that first read it."""
        self.engine_factory = engine_factory
        for topic, p in self.partitions.items():
            engine = engine_factory(topic)
            engine.restore(orjson.loads(orjson.dumps(p.engine.state())))
            p.engine, p.due = engine, True
        try:
            self.checkpoint()
        except Exception as e:  # noqa: BLE001 - due: the next checkpoint saves them
            log.warning("rules reloaded; their first checkpoint is deferred: %s", e)

    def _roll_back(self) -> None:
        for topic, p in list(self.partitions.items()):
            engine = self.engine_factory(topic)
            engine.restore(orjson.loads(p.committed))
            p.engine, p.seq = engine, p.saved_seq
