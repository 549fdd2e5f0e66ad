"""Where Stormwatch's objects are built and wired: config -> matcher, rules, engine, store.

``replay(...)`` runs dumps through the very same pipeline the daemon uses, in event time,
batch by batch, each batch one transaction.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from connectors.dump import SkipReport, read_dump
from monitor.clock import Clock, SystemClock
from monitor.config import (
    BATCH_SIZE,
    DEFAULT_BASELINE_BIN,
    DEFAULT_BASELINE_WARMUP,
    Config,
    load_config,
)
from monitor.engine import Engine
from monitor.errors import UsageError
from monitor.models import AlertEvent, Mention
from monitor.pipeline import Pipeline, RunContext
from monitor.rules import RuleSet, load_rules
from monitor.sentiment import SentimentPool, SentimentScorer, sentiment_text
from monitor.store import Store, sqlite_url
from monitor.topics import TopicMatcher

STATE_NAME = "engine"


class Progress(Protocol):
    def start(self, path: str, total: int | None) -> None: ...

    def update(self, done: int) -> None: ...

    def stop(self) -> None: ...


class NoProgress:
    def start(self, path: str, total: int | None) -> None:
        pass

    def update(self, done: int) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class Setup:
    config: Config
    rules: RuleSet
    matcher: TopicMatcher


def setup(config_path: str | None, rules_paths: Sequence[str] = (),
          match: Sequence[str] = ()) -> Setup:
    """Validate config and rules before anything runs (bad ones raise ConfigError)."""
    config = load_config(config_path)
    rules = load_rules(list(rules_paths) or list(config.rules_paths()))
    matcher = TopicMatcher.for_match(match) if match else TopicMatcher(config.topics)
    for rule in rules.rules:
        unknown = (rule.topics or frozenset()) - set(matcher.names)
        if unknown:
            raise UsageError(f"rule '{rule.name}' names topic(s) {sorted(unknown)} that are "
                             f"not watched here (topics: {', '.join(matcher.names)})",
                             path=rule.path, line=rule.line)
    return Setup(config=config, rules=rules, matcher=matcher)


def build_engine(s: Setup) -> Engine:
    return Engine(s.rules, s.matcher.names, baseline_bin=DEFAULT_BASELINE_BIN,
                  baseline_warmup=DEFAULT_BASELINE_WARMUP)


@dataclass
class ReplayResult:
    report: SkipReport
    counts: Counter[str] = field(default_factory=Counter)
    events: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    elapsed: float = 0.0
    mentions_read: int = 0
    late: int = 0

    @property
    def rate(self) -> float:
        return self.mentions_read / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class TempDatabase:
    """A fresh SQLite file for one replay, removed afterwards."""

    dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="stormwatch-replay-"))

    @property
    def url(self) -> str:
        return sqlite_url(os.path.join(self.dir, "replay.db"))

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def replay(s: Setup, dumps: Sequence[str], *, fmt: str | None = None, db_url: str | None = None,
           on_event: Callable[[AlertEvent], None] = lambda e: None,
           progress: Progress | None = None, clock: Clock | None = None,
           workers: bool | None = None) -> ReplayResult:
    """Run dumps through the engine in event time; events go to ``on_event`` once stored.

    With ``workers`` (default: when there are two cores or more), sentiment is scored in a
    worker process while the previous batch is detected and stored; the events are the
    same, in the same order.
    """
    clock = clock or SystemClock()
    progress = progress or NoProgress()
    temp = None if db_url else TempDatabase()
    # a temporary database is deleted afterwards: it needs no fsync
    store = Store.open(db_url or temp.url, durable=db_url is not None)  # type: ignore[union-attr]
    scorer = SentimentScorer()
    use_pool = SentimentPool.usable() if workers is None else workers
    pool = SentimentPool(fallback=scorer) if use_pool else None
    try:
        engine = build_engine(s)
        saved = store.load_state(STATE_NAME) if db_url else None
        if saved:
            engine.restore(saved)
        pipeline = Pipeline(s.matcher, engine, scorer, store)
        result = ReplayResult(report=SkipReport())
        started = clock.monotonic()
        prefilter = s.matcher.prefilter_terms()

        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        writing: Future[RunContext] | None = None

        def write(ctx: RunContext, items: list[Mention]) -> RunContext:
            with store.transaction() as conn:
                ctx.conn = conn
                pipeline.store_only(ctx, items)
            return ctx

        def written() -> None:
            """Wait for the batch being written; its events go out once stored."""
            nonlocal writing
            if writing is None:
                return
            ctx, writing = writing.result(), None
            result.counts.update(ctx.counts)
            for ev in ctx.events:
                result.events[(ev.rule, ev.severity, ev.event)] += 1
                on_event(ev)

        def finish(ctx: RunContext, items: list[Mention]) -> None:
            # SQLite works without the GIL: this batch is stored while the next is detected
            nonlocal writing
            items = pipeline.detect_only(ctx, items)
            written()
            writing = writer.submit(write, ctx, items)

        pending: tuple[RunContext, list[Mention], Any] | None = None
        try:
            for batch in _batches(_read_all(dumps, fmt, prefilter, result, progress),
                                  BATCH_SIZE):
                result.mentions_read += len(batch)
                ctx = RunContext()
                items = pipeline.select(ctx, batch)
                if pool is None:
                    finish(ctx, pipeline.sentiment.run(ctx, items) if items else items)
                    continue
                job = pool.submit([sentiment_text(m.title, m.text) for m in items])
                if pending is not None:
                    _collect(pool, *pending[1:])
                    finish(*pending[:2])
                pending = (ctx, items, job)
            if pending is not None:
                _collect(pool, *pending[1:])  # type: ignore[union-attr]
                finish(*pending[:2])
            written()
        finally:
            writer.shutdown(wait=True)
        progress.stop()
        result.late = engine.stats.late
        if db_url:
            with store.transaction() as conn:
                store.save_state(conn, STATE_NAME, engine.state(), engine.now)
        result.elapsed = clock.monotonic() - started
        return result
    finally:
        if pool is not None:
            pool.close()
        store.close()
        if temp is not None:
            temp.remove()


def _collect(pool: SentimentPool, items: list[Mention], job: Any) -> None:
    for m, compound in zip(items, pool.result(job), strict=True):
        m.compound = compound


def _read_all(dumps: Sequence[str], fmt: str | None, prefilter: list[str] | None,
              result: ReplayResult, progress: Progress) -> Iterator[Mention]:
    for path in dumps:
        total = None
        if path != "-":
            try:
                total = os.path.getsize(path)
            except OSError:
                total = None
        progress.start(path, total)
        yield from read_dump(path, fmt=fmt, prefilter=prefilter, report=result.report,
                             on_progress=progress.update)


def _batches(items: Iterator[Mention], size: int) -> Iterator[list[Mention]]:
    batch: list[Mention] = []
    for m in items:
        batch.append(m)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
