"""The stages a batch of mentions goes through, and their one order.

    match -> dedup -> sentiment -> detect -> store

(``rules test`` runs the same stages without the store; the live daemon splits them at
the store: ``Intake`` stores, ``monitor.detector`` detects from the stored feed.) Each
stage is a small class with ``run(ctx, items) -> items``; an empty list ends the run of
that batch. Stages are built in ``monitor.app``; their order is written only here.
The store stage writes the batch's mentions and the alert events they caused in the
same transaction (``ctx.conn``), so what was counted and what was alerted never part.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import Connection

from monitor.engine import Engine
from monitor.models import AlertEvent, Mention
from monitor.notify.plan import Planner
from monitor.sentiment import SentimentScorer, sentiment_text
from monitor.store import Store
from monitor.topics import TopicMatcher


@dataclass
class RunContext:
    """What one batch carries between stages, and running totals for the summary."""

    conn: Connection | None = None
    events: list[AlertEvent] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


class Stage(Protocol):
    def run(self, ctx: RunContext, items: list[Mention]) -> list[Mention]: ...


class MatchStage:
    """Tag each mention with its topics; drop those in none."""

    def __init__(self, matcher: TopicMatcher) -> None:
        self.matcher = matcher

    def run(self, ctx: RunContext, items: list[Mention]) -> list[Mention]:
        topics_of = self.matcher.topics_of
        out = []
        for m in items:
            topics = topics_of(m)
            if topics:
                m.topics = topics
                out.append(m)
        ctx.counts["out_of_scope"] += len(items) - len(out)
        return out


class DedupStage:
    """Drop mentions already counted (by source-qualified id), before paying for sentiment."""

    def __init__(self, engine: Engine | None,
                 known_ids: Callable[[list[str]], set[str]] | None = None, *,
                 carry: bool = True) -> None:
        """``carry``: the previous batch is being counted while this one is selected
        (a replay), so its ids count as known; live, a batch is stored (or refused)
        before the next is selected, and the store knows."""
        self.engine = engine
        self.known_ids = known_ids  # the store's, for ids older than the engine remembers
        self.carry = carry
        self.in_flight: set[str] = set()  # the previous batch's ids, maybe not yet counted

    def run(self, ctx: RunContext, items: list[Mention]) -> list[Mention]:
        is_dup = self.engine.is_duplicate if self.engine is not None else _never
        batch: set[str] = set()
        in_flight = self.in_flight
        out = []
        for m in items:
            if m.id in batch or m.id in in_flight or is_dup(m.id):
                continue
            batch.add(m.id)
            out.append(m)
        if out and self.known_ids is not None:
            stored = self.known_ids([m.id for m in out])
            if stored:
                out = [m for m in out if m.id not in stored]
        if self.carry:
            self.in_flight = batch
        ctx.counts["duplicates"] += len(items) - len(out)
        return out


class SentimentStage:
    """VADER compound for each mention (title and text together)."""

    def __init__(self, scorer: SentimentScorer) -> None:
        self.scorer = scorer

    def run(self, ctx: RunContext, items: list[Mention]) -> list[Mention]:
        score = self.scorer.score
        for m in items:
            m.compound = score(sentiment_text(m.title, m.text))
        return items


class DetectStage:
    """Feed the engine in stream order; collect the alert events it returns."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.recorders: list[Any] = []  # chart recorders (monitor.report.Recorder)

    def run(self, ctx: RunContext, items: list[Mention]) -> list[Mention]:
        ingest = self.engine.ingest
        events = ctx.events
        if self.recorders:
            return self._recorded(ctx, items)
        for m in items:
            got = ingest(m)
            if got:
                events.extend(got)
        ctx.counts["in_scope"] += len(items)
        return items

    def _recorded(self, ctx: RunContext, items: list[Mention]) -> list[Mention]:
        for m in items:
            for r in self.recorders:
                r.before(m.created_at)
            ctx.events.extend(self.engine.ingest(m))
            for r in self.recorders:
                r.count(m)
        ctx.counts["in_scope"] += len(items)
        return items


class StoreStage:
    """Write mentions and alert events in the batch's transaction; with a ``planner``,
    the messages they are worth too (the outbox)."""

    def __init__(self, store: Store, planner: Planner | None = None) -> None:
        self.store, self.planner = store, planner

    def run(self, ctx: RunContext, items: list[Mention]) -> list[Mention]:
        assert ctx.conn is not None, "the store stage needs a transaction"
        self.store.add_mentions(ctx.conn, items)
        if self.planner is not None:
            self.planner.record(ctx.conn, ctx.events)
        else:
            self.store.add_events(ctx.conn, ctx.events)
        return items


class Intake:
    """Live, a page is stored before it is counted (``monitor.detector`` counts it from
    the feed, on whichever instance watches its topics): match -> dedup (against the
    store) -> sentiment -> store, in the transaction ``ctx.conn`` that also moves the
    source's cursor."""

    def __init__(self, matcher: TopicMatcher, scorer: SentimentScorer, store: Store) -> None:
        self.store = store
        self.stages: tuple[Stage, ...] = (MatchStage(matcher),
                                          DedupStage(None, store.known_ids, carry=False),
                                          SentimentStage(scorer))

    def run(self, ctx: RunContext, items: list[Mention]) -> list[Mention]:
        assert ctx.conn is not None, "the intake stores in the page's transaction"
        for stage in self.stages:
            items = stage.run(ctx, items)
            if not items:
                return items
        self.store.add_mentions(ctx.conn, items)
        return items


def _never(_: str) -> bool:
    return False


class Pipeline:
    """The one ordered list of stages.

    ``run`` takes a batch through all of them. A replay splits it to overlap batches:
    ``select`` (match, dedup), sentiment scored elsewhere (``SentimentPool``), then
    ``detect_only`` and ``store_only`` (the latter in a writer thread, while the next
    batch is detected) — the same stages in the same order for every batch.
    """

    def __init__(self, matcher: TopicMatcher, engine: Engine, scorer: SentimentScorer,
                 store: Store | None, *, check_store: bool = False,
                 planner: Planner | None = None) -> None:
        """``check_store``: also drop mentions the store already has, however old (live
        sources re-deliver old posts; a replay into a fresh database need not ask)."""
        known = store.known_ids if check_store and store is not None else None
        self.selecting: tuple[Stage, ...] = (MatchStage(matcher), DedupStage(engine, known))
        self.sentiment = SentimentStage(scorer)
        self.detect = DetectStage(engine)
        self.store_stage = StoreStage(store, planner) if store is not None else None

    def run(self, ctx: RunContext, items: list[Mention]) -> list[Mention]:
        """One batch through every stage; the store stage runs even for events alone."""
        items = self.select(ctx, items)
        if items:
            items = self.sentiment.run(ctx, items)
        return self.finish(ctx, items)

    def select(self, ctx: RunContext, items: list[Mention]) -> list[Mention]:
        for stage in self.selecting:
            items = stage.run(ctx, items)
            if not items:
                break
        return items

    def finish(self, ctx: RunContext, items: list[Mention]) -> list[Mention]:
        """Detect and store a batch whose sentiment is set."""
        items = self.detect_only(ctx, items)
        self.store_only(ctx, items)
        return items

    def detect_only(self, ctx: RunContext, items: list[Mention]) -> list[Mention]:
        return self.detect.run(ctx, items) if items else items

    def store_only(self, ctx: RunContext, items: list[Mention]) -> None:
        if self.store_stage is not None and (items or ctx.events):
            self.store_stage.run(ctx, items)
