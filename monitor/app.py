"""Where Stormwatch's objects are built and wired: config -> matcher, rules, engine, store.

``replay(...)`` runs dumps through the very same pipeline the daemon uses, in event time,
batch by batch, each batch one transaction. ``build_daemon(...)`` wires the live sources
of the config to that pipeline (``stormwatch run``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connectors.dump import SkipReport
from monitor.clock import Clock, SystemClock
from monitor.config import BATCH_SIZE, BATCH_WAIT, DEFAULT_BASELINE_BIN, DEFAULT_BASELINE_WARMUP
from monitor.engine import Engine
from monitor.errors import UsageError
from monitor.inputs import DumpInputs
from monitor.models import AlertEvent, Mention
from monitor.pipeline import Pipeline, RunContext
from monitor.rules import RuleSet
from monitor.sentiment import SentimentPool, SentimentScorer, sentiment_text
from monitor.setup import Setup
from monitor.store import ENGINE_STATE, Store, sqlite_url

if TYPE_CHECKING:
    from monitor.daemon import Daemon
    from monitor.notify.outbox import Outbox
    from monitor.notify.plan import Planner
    from monitor.notify.routes import Routing

NOTIFY_WAIT = 60.0  # seconds a `replay --notify` goes on sending after the replay


def build_sources(s: Setup, clock: Clock | None = None) -> tuple[list[Any], list[Any]]:
    """The config's live sources: (polling sources, subscriptions)."""
    from connectors.rss import FeedSpec, RssFeed

    polling: list[Any] = []
    src = s.config.sources
    for name, feed in src.rss.items():
        polling.append(RssFeed(FeedSpec(name=name, url=feed.url, interval=float(feed.interval),
                                        topic=feed.topic, max_bytes=feed.max_bytes),
                               clock=clock))
    if src.reddit is not None:
        from connectors.reddit import RedditSource

        polling.append(RedditSource.from_spec(src.reddit, s.matcher.topics, clock))
    subscriptions: list[Any] = []
    if src.bluesky is not None:
        from connectors.bluesky import BlueskySearch, FirehoseSubscription, JetstreamSubscription

        bs = src.bluesky
        if bs.jetstream:
            subscriptions.append(JetstreamSubscription(bs.jetstream))
        if bs.firehose:
            subscriptions.append(FirehoseSubscription(bs.firehose))
        if bs.handle and bs.app_password:
            polling.append(BlueskySearch(
                handle=bs.handle, app_password=bs.app_password, topics=s.matcher.topics,
                service=bs.service, interval=float(bs.search_interval), clock=clock,
                timeout=bs.timeout))
    return polling, subscriptions


def source_intervals(s: Setup) -> dict[str, float]:
    """Each configured source's polling interval, by source name (for health)."""
    src = s.config.sources
    out = {f"rss:{name}": float(feed.interval) for name, feed in src.rss.items()}
    if src.reddit is not None:
        out["reddit"] = float(src.reddit.interval)
    if src.bluesky is not None:
        for kind in ("jetstream", "firehose"):
            if getattr(src.bluesky, kind):  # a live stream: a minute without news is stale
                out[f"bluesky:{kind}"] = 60.0
        if src.bluesky.handle:
            out["bluesky:search"] = float(src.bluesky.search_interval)
    return out


def build_notify(s: Setup, store: Store, clock: Clock | None = None, *,
                 holder: str = "local", claim: float = 60.0,
                 alive_within: float | None = None) -> tuple[Outbox | None, Planner]:
    """The configured channels and the outbox that sends to them (None without channels),
    and the planner that groups alert events into incidents and, by the routes, into
    messages (without channels: incidents only)."""
    from monitor.notify.outbox import Outbox
    from monitor.notify.plan import Planner
    from monitor.notify.routes import Routing

    notify = s.config.notify
    if not notify.channels:
        return None, Planner(Routing([]), store, clock)
    channels = {name: build_channel(name, spec) for name, spec in notify.channels.items()}
    routing = build_routing(s)
    planner = Planner(routing, store, clock, group_wait=float(notify.group_wait))
    return Outbox(store, channels, clock, routing=routing, repeat=float(notify.repeat),
                  holder=holder, claim=claim, alive_within=alive_within), planner


def build_routing(s: Setup) -> Routing:
    """The config's routes (none: warning and above to every channel; no channel: one
    channel named ``all``, for counting what a person would receive)."""
    from monitor.notify.routes import WEEKDAYS, Route, Routing, TimeInterval

    notify = s.config.notify
    intervals = {
        name: tuple(TimeInterval(frozenset(WEEKDAYS.index(d) for d in i.weekdays),
                                 tuple(_minutes(t) for t in i.times), i.timezone)
                    for i in spec)
        for name, spec in notify.time_intervals.items()}
    routes = [Route(name=r.name, to=tuple(r.to), min_severity=r.min_severity,
                    topics=frozenset(r.topics), rules=frozenset(r.rules), scope=r.scope,
                    send_resolved=r.send_resolved,
                    active=tuple(i for name in r.active for i in intervals[name]),
                    escalate_after=float(r.escalate.after) if r.escalate else None,
                    escalate_to=tuple(r.escalate.to) if r.escalate else ())
              for r in notify.routes]
    return Routing(routes or [Route(name="default", to=tuple(notify.channels) or ("all",))])


def build_channel(name: str, spec: Any) -> Any:
    """One channel of ``notify.channels`` (its settings named in its errors)."""
    from monitor.notify.slack import SlackBot, SlackChannel, SlackWebhook
    from monitor.notify.webhook import Webhook

    setting = f"notify.channels.{name}"
    if spec.type == "slack":
        sender = (SlackWebhook(spec.webhook_url, setting=setting) if spec.webhook_url else
                  SlackBot(spec.bot_token or "", spec.channel or "", api=spec.api_url,
                           setting=setting))
        return SlackChannel(sender)
    if spec.type == "email":
        from monitor.notify.email import EmailChannel

        return EmailChannel(host=spec.host, port=spec.port, sender=spec.sender, to=spec.to,
                            security=spec.security, username=spec.username,
                            password=spec.password, setting=setting)
    return Webhook(spec.url, spec.secret, setting=setting)


def _minutes(span: str) -> tuple[int, int]:
    a, b = span.split("-")
    return (int(a[:2]) * 60 + int(a[3:]), int(b[:2]) * 60 + int(b[3:]))


def build_daemon(s: Setup, store: Store, clock: Clock | None = None) -> Daemon:
    from connectors.bluesky import BlueskySearch
    from monitor.daemon import Daemon
    from monitor.detector import Detector
    from monitor.leases import Leases
    from monitor.pipeline import Intake

    clock = clock or SystemClock()  # one clock for sources, outbox and the daemon
    period = float(s.config.run.lease)
    polling, subscriptions = build_sources(s, clock)
    leases = Leases(store, [f"topic:{t}" for t in s.matcher.names],
                    holder=s.config.run.instance,
                    period=period, clock=clock)
    # a claimed message is another instance's when its claim ran out (longer than any
    # send: HTTP and SMTP time out well within a minute) or its instance died
    outbox, planner = build_notify(s, store, clock, holder=leases.holder,
                                   claim=max(120.0, 2 * period), alive_within=period)
    detector = Detector(store, lambda topic: build_engine(s, owns=frozenset([topic])),
                        planner, leases, clock=clock)
    daemon = Daemon(intake=Intake(s.matcher, SentimentScorer(), store), detector=detector,
                    store=store, polling=polling, subscriptions=subscriptions, clock=clock,
                    outbox=outbox, keep_mentions=float(s.config.run.keep_mentions))
    for src in polling:
        if isinstance(src, BlueskySearch):  # refreshes the engagement of active threads
            src.targets = lambda: daemon.active_threads("bluesky:")
    def load_rules() -> tuple[RuleSet, Callable[[str], Engine]]:
        from monitor.setup import checked_rules

        rules = checked_rules(list(s.config.rules_paths()), s.matcher)
        return rules, lambda topic: build_engine(s, rules, owns=frozenset([topic]))

    from monitor.flatline import Flatline

    daemon.flatline = Flatline(store, s.rules, leases, planner, clock=clock)
    # watched: the configured paths (a directory changes when a file is added) and files
    daemon.rules_files = sorted({*s.config.rules_paths(), *s.rules.paths})
    daemon.load_rules = load_rules
    run = s.config.run
    if run.health:
        from monitor.health import Health, HealthServer

        try:
            daemon.health = HealthServer(
                Health(store, daemon.watched(), stale=float(run.stale),
                       outbox_stuck=float(run.outbox_stuck), clock=clock), run.health)
        except OSError as e:
            raise UsageError(f"cannot serve health and metrics on {run.health}: {e.strerror}",
                             path=s.config.path,
                             hint="another process has the port: set run.health to another "
                                  "HOST:PORT, or null to turn it off") from None
    return daemon


def build_engine(s: Setup, rules: RuleSet | None = None, *,
                 owns: frozenset[str] | None = None) -> Engine:
    """One engine for every topic (replay, backtest), or a live topic partition's
    (``owns``: the feed brings each mention once, so it remembers no ids)."""
    return Engine(rules or s.rules, s.matcher.names, baseline_bin=DEFAULT_BASELINE_BIN,
                  baseline_warmup=DEFAULT_BASELINE_WARMUP, owns=owns, dedup=owns is None)


@dataclass
class ReplayResult:
    report: SkipReport
    counts: Counter[str] = field(default_factory=Counter)
    events: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    elapsed: float = 0.0
    mentions_read: int = 0
    late: int = 0
    outbox: dict[str, Any] | None = None  # with notify: messages sent, pending, failed
    charts: list[str] = field(default_factory=list)  # files written

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


def replay(s: Setup, inputs: DumpInputs, *, db_url: str | None = None,
           on_event: Callable[[AlertEvent], None] = lambda e: None,
           clock: Clock | None = None, workers: bool | None = None,
           notify: bool = False, send_for: float = NOTIFY_WAIT,
           chart: str | None = None) -> ReplayResult:
    """Run the inputs through the engine in event time; events go to ``on_event`` once
    stored. The caller opens the inputs (early: a scan starts reading at once) and
    closes them.

    With ``notify``, the events are planned into messages as live (the config's routes,
    grouping, silences) and sent through the outbox, for up to ``send_for`` seconds
    after the replay (what is still pending then stays in a kept database, ``db_url``,
    for a later ``run`` to send).

    With ``chart``, each topic's chart over the whole dump is written there (``chart``.png
    and .html; with several topics, ``chart``-TOPIC.png and .html).

    With ``workers`` (default: when there are two cores or more), sentiment is scored in a
    worker process while the previous batch is detected and stored; the events are the
    same, in the same order.
    """
    clock = clock or SystemClock()
    progress = inputs.progress
    result = ReplayResult(report=inputs.report)
    started = clock.monotonic()
    temp = None if db_url else TempDatabase()
    # a temporary database is deleted afterwards: it needs no fsync
    store = Store.open(db_url or temp.url, durable=db_url is not None)  # type: ignore[union-attr]
    scorer = SentimentScorer()
    use_pool = SentimentPool.usable() if workers is None else workers
    pool = SentimentPool(fallback=scorer) if use_pool else None
    try:
        engine = build_engine(s)
        saved = store.load_state(ENGINE_STATE) if db_url else None
        if saved:
            engine.restore(saved)
        outbox, planner = build_notify(s, store, clock)
        if not notify:  # incidents are recorded; nobody is told
            from monitor.notify.plan import Planner
            from monitor.notify.routes import Routing

            outbox, planner = None, Planner(Routing([]), store, clock)
        elif outbox is None:
            raise UsageError("--notify: no channels are configured",
                             hint="add notify.channels to the config (see `stormwatch init`)")
        pipeline = Pipeline(s.matcher, engine, scorer, store, planner=planner)
        charted: list[AlertEvent] = []
        if chart:
            from monitor.report import Recorder

            pipeline.detect.recorders = [Recorder(engine, topic=t) for t in s.matcher.names]

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
            if chart:
                charted.extend(ctx.events)

        def finish(ctx: RunContext, items: list[Mention]) -> None:
            # SQLite works without the GIL: this batch is stored while the next is detected
            nonlocal writing
            items = pipeline.detect_only(ctx, items)
            written()
            writing = writer.submit(write, ctx, items)

        try:
            for ctx, items in scored(pipeline, inputs, pool, result):
                finish(ctx, items)
            written()
        finally:
            writer.shutdown(wait=True)
        progress.stop()
        result.late = engine.stats.late
        if db_url:
            with store.transaction() as conn:
                store.save_state(conn, ENGINE_STATE, engine.state(), engine.now)
        if outbox is not None:
            result.outbox = send_pending(outbox, store, clock, send_for)
        if chart:
            result.charts = write_charts(pipeline.detect.recorders, charted, chart)
        result.elapsed = clock.monotonic() - started
        return result
    finally:
        if pool is not None:
            pool.close()
        store.close()
        if temp is not None:
            temp.remove()


def write_charts(recorders: list[Any], events: list[AlertEvent], base: str,
                 label: str = "") -> list[str]:
    """Each recorded topic's chart of a pass, with its alert events (``monitor.report``):
    ``base``.png and .html, or ``base``-TOPIC.* when there are several topics."""
    from monitor import report

    written = []
    for r in recorders:
        t = r.timeline()
        if label:
            t.title = f"{t.title}, alerts of {label}"
        t.events = [ev for ev in events if ev.topic == r.topic]
        written += report.write(t, base if len(recorders) == 1 else f"{base}-{r.topic}")
    return written


def send_pending(outbox: Outbox, store: Store, clock: Clock, send_for: float,
                 ) -> dict[str, Any]:
    """Send what the outbox holds, retrying as it would live, for up to ``send_for``
    seconds; returns the outbox summary then."""
    deadline = clock.monotonic() + send_for
    while True:
        sent = outbox.deliver_due()
        summary = store.outbox_summary()
        if not summary["pending"] or clock.monotonic() >= deadline:
            return summary
        if not sent:  # what is left waits for a retry (or for an earlier message)
            clock.sleep(min(1.0, max(0.0, deadline - clock.monotonic())))


def scored(pipeline: Pipeline, inputs: DumpInputs, pool: SentimentPool | None,
           result: ReplayResult) -> Iterator[tuple[RunContext, list[Mention]]]:
    """The inputs in batches, selected (matched, deduplicated) and with their sentiment,
    in order. With a pool, a batch's sentiment is scored in the worker while the caller
    works on the batch before it."""
    pending: tuple[RunContext, list[Mention], Any] | None = None
    for batch in _batches(iter(inputs), BATCH_SIZE):
        result.mentions_read += len(batch)
        ctx = RunContext()
        items = pipeline.select(ctx, batch)
        if pool is None:
            yield ctx, pipeline.sentiment.run(ctx, items) if items else items
            continue
        job = pool.submit([sentiment_text(m.title, m.text) for m in items])
        if pending is not None:
            _collect(pool, *pending[1:])
            yield pending[0], pending[1]
        pending = (ctx, items, job)
    if pending is not None:
        assert pool is not None
        _collect(pool, *pending[1:])
        yield pending[0], pending[1]


def _collect(pool: SentimentPool, items: list[Mention], job: Any) -> None:
    for m, compound in zip(items, pool.result(job), strict=True):
        m.compound = compound


def _batches(items: Iterator[Mention], size: int,
             max_wait: float = BATCH_WAIT) -> Iterator[list[Mention]]:
    """Batches of ``size``, or fewer when they took ``max_wait`` seconds to gather (a
    scan finds mentions sparsely: they are scored and detected while it goes on)."""
    batch: list[Mention] = []
    clock = time.monotonic
    due = clock() + max_wait
    for m in items:
        batch.append(m)
        if len(batch) >= size or clock() >= due:
            yield batch
            batch = []
            due = clock() + max_wait
    if batch:
        yield batch
