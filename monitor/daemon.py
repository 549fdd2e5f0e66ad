"""``stormwatch run``: live sources feed the engine; nothing lost, nothing counted twice.

Threads, and who owns what:

- **the ingest loop** (the caller's thread) owns the engine and is the only writer: it
  takes each fetched page off a queue and commits, in one transaction, the page's new
  mentions, the alert events they caused, the source's cursor and health, and the engine
  state. A crash at any point leaves the database at a page boundary: on restart the
  engine, the cursors and the mentions agree, and the next poll starts where the last
  committed page ended. Between pages it advances the engine on the wall clock (less a
  lateness allowance), so windows close and alerts resolve when nothing arrives.
- **polling sources** run as APScheduler jobs on their interval with jitter, never two
  runs of one source at once; each waits for its page to be committed before fetching
  the next. A failure is logged, recorded in the source's health and retried with
  exponential backoff (or after the ``Retry-After`` the service asked for).
- **subscriptions** run as asyncio tasks in one thread, restarted with the same backoff
  when their connection fails.

``stop()`` (SIGINT / SIGTERM) ends it within seconds: the scheduler stops, subscriptions
are cancelled, pages already fetched are committed, and a poll still waiting on the
network is abandoned (its page was not committed, so it is fetched again next time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from apscheduler.executors.pool import ThreadPoolExecutor as JobPool
from apscheduler.schedulers.background import BackgroundScheduler

from connectors.base import Fetched, PollingSource, SourceError, Subscription
from monitor.backoff import FIRST, MAX, backoff
from monitor.clock import Clock, SystemClock
from monitor.engine import Engine
from monitor.models import AlertEvent, SourceState
from monitor.notify.outbox import Outbox
from monitor.notify.plan import Planner
from monitor.pipeline import Pipeline, RunContext
from monitor.sentiment import SentimentScorer
from monitor.store import ENGINE_STATE, Store

log = logging.getLogger("stormwatch")

TICK = 15.0            # seconds between wall-clock advances when idle
LATENESS = 120.0       # event time trails the wall clock by this much (slow sources)
ACTIVE_WINDOW = 3600.0  # threads with a mention in the last hour are "active"
ACTIVE_MAX = 250        # at most this many are offered for an engagement refresh
STOP_GRACE = 5.0       # seconds to commit pages already fetched when stopping
OUTBOX_EVERY = 1.0     # seconds between looks at the outbox
REMIND_EVERY = 30.0    # seconds between looks for reminders and unacknowledged incidents
FUTURE_SKEW = 300.0    # a post dated further ahead than this is counted when it arrives


@dataclass
class _Work:
    source: str
    fetched: Fetched | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    result: str = "stopping"   # committed | failed (the database refused it) | stopping


class Daemon:
    def __init__(self, *, engine_factory: Callable[[], Engine], pipeline_factory:
                 Callable[[Engine], Pipeline], store: Store,
                 polling: Sequence[PollingSource] = (),
                 subscriptions: Sequence[Subscription] = (),
                 clock: Clock | None = None, on_event: Callable[[AlertEvent], None] | None =
                 None, tick: float = TICK, lateness: float = LATENESS,
                 backoff_first: float = FIRST, outbox: Outbox | None = None) -> None:
        self.store = store
        self.clock = clock or SystemClock()
        self.polling = list(polling)
        self.subscriptions = list(subscriptions)
        self.on_event = on_event or _log_event
        self.tick, self.lateness, self.backoff_first = tick, lateness, backoff_first
        self.outbox = outbox
        self._outbox_thread: threading.Thread | None = None
        self._outbox_wake = threading.Event()  # set when a commit wrote alert events
        self._engine_factory, self._pipeline_factory = engine_factory, pipeline_factory
        self._queue: queue.Queue[_Work] = queue.Queue()
        self._stopping = threading.Event()
        self._drained = threading.Event()   # shutdown took what it will take off the queue
        self._scheduler: BackgroundScheduler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sub_thread: threading.Thread | None = None
        self.states: dict[str, SourceState] = {}
        self._cursors: dict[str, Any] = {}   # committed cursors, read by the pollers
        self._errors: dict[str, int] = {}
        self._lock = threading.Lock()
        self.engine: Engine = engine_factory()
        self.pipeline: Pipeline = pipeline_factory(self.engine)
        self._committed_state: bytes | None = None   # the engine state last committed
        self._active: dict[str, list[str]] = {}   # prefix -> active thread ids (snapshot)

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> None:
        """Restore state and cursors, start the pollers and subscriptions."""
        saved = self.store.load_state(ENGINE_STATE)
        if saved:
            self.engine.restore(saved)
            self._committed_state = orjson.dumps(saved)
            self._refresh_active()
        self.states = self.store.load_sources()
        new = []
        for src in [*self.polling, *self.subscriptions]:
            if src.name not in self.states:
                new.append(self.states.setdefault(src.name, SourceState(name=src.name)))
            st = self.states[src.name]
            self._cursors[src.name] = st.cursor
            self._errors[src.name] = st.errors_in_a_row
        if new:  # so that `status` lists them (waiting) before their first page
            with self.store.transaction() as conn:
                for st in new:
                    self.store.save_source(conn, st)
        if self.polling:
            self._scheduler = BackgroundScheduler(
                executors={"default": JobPool(max_workers=len(self.polling))}, timezone=UTC)
            now = self._wall()
            for src in self.polling:
                self._scheduler.add_job(
                    self._poll, "interval", args=[src], id=src.name, name=src.name,
                    seconds=src.interval, jitter=min(src.interval * 0.1, 30.0),
                    next_run_time=now, max_instances=1, coalesce=True,
                    misfire_grace_time=None)
            self._scheduler.start()
        if self.outbox is not None:
            self._outbox_thread = threading.Thread(target=self._run_outbox, name="outbox",
                                                   daemon=True)
            self._outbox_thread.start()
        if self.subscriptions:
            self._sub_thread = threading.Thread(target=self._run_subscriptions,
                                                name="subscriptions", daemon=True)
            self._sub_thread.start()
        log.info("watching %d source(s): %s", len(self.states),
                 ", ".join(sorted(self.states)) or "none")

    def active_threads(self, prefix: str) -> list[str]:
        """Active threads under ``prefix`` (``bluesky:``), most recent first: a snapshot
        the ingest loop refreshes every tick, safe to read from a poller's thread."""
        return self._active.setdefault(prefix, [])

    def _refresh_active(self) -> None:
        since = self.engine.now - ACTIVE_WINDOW
        for prefix in list(self._active):
            self._active[prefix] = self.engine.active_threads(prefix, since, ACTIVE_MAX)

    def _wall(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now(), UTC)

    def stop(self) -> None:
        """Ask the daemon to stop (safe from a signal handler)."""
        self._stopping.set()
        self._outbox_wake.set()

    def run(self) -> None:
        """Start, then ingest until ``stop()``; commits what was fetched before returning."""
        self.start()
        try:
            self.serve()
        finally:
            self.shutdown()

    def serve(self) -> None:
        next_tick = self.clock.monotonic() + self.tick
        while not self._stopping.is_set():
            wait = max(0.0, min(0.5, next_tick - self.clock.monotonic()))
            try:
                work = self._queue.get(timeout=wait)
            except queue.Empty:
                work = None
            if work is not None:
                self._ingest(work)
            if self.clock.monotonic() >= next_tick:
                self.advance_clock()
                self._refresh_active()
                next_tick = self.clock.monotonic() + self.tick

    def shutdown(self) -> None:
        self._stopping.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._loop is not None:
            loop = self._loop
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(loop)])
        deadline = self.clock.monotonic() + STOP_GRACE
        while self.clock.monotonic() < deadline:
            try:
                work = self._queue.get_nowait()
            except queue.Empty:
                break
            self._ingest(work)
        self._drained.set()  # from now on a page handed over is not taken: its poll ends
        for src in self.polling:
            try:
                src.close()
            except Exception:  # noqa: BLE001 - closing must not stop the shutdown
                log.exception("closing %s", src.name)
        log.info("stopped")

    # -- the ingest loop ---------------------------------------------------------------
    def _ingest(self, work: _Work) -> None:
        fetched = work.fetched
        try:
            if fetched is None:
                self._commit(work.source, [], None, work.error or "unknown error")
                return
            for w in fetched.warnings:
                log.warning("%s: %s", work.source, w)
            stored = self._commit(work.source, fetched.mentions, fetched, None)
            work.result = "committed"
            if stored:
                log.info("%s: %d new mention(s)", work.source, stored)
        except Exception as e:  # noqa: BLE001 - a database fault must not end the daemon
            work.result = "failed"
            log.error("%s: could not store %s: %s", work.source,
                      "its health" if fetched is None else
                      f"a page of {len(fetched.mentions)} mention(s) (it is fetched again)", e)
        finally:
            work.done.set()

    def _commit(self, name: str, mentions: list[Any], fetched: Fetched | None,
                error: str | None) -> int:
        """One transaction: mentions, alert events, cursor and health, engine state.
        On failure nothing changes: the engine goes back to the state last committed."""
        st = replace(self.states[name])
        ctx = RunContext()
        mentions = self._no_future(name, mentions)
        try:
            with self.store.transaction() as conn:
                ctx.conn = conn
                stored = self.pipeline.run(ctx, list(mentions)) if mentions else []
                if fetched is not None and fetched.updates:
                    for thread, topics, growth in self.store.refresh_metrics(
                            conn, fetched.updates):
                        self.engine.add_engagement(thread, topics, growth)
                if fetched is not None:
                    if fetched.cursor is not None:
                        st.cursor = fetched.cursor
                    st.succeeded(self.clock.now(), len(stored), fetched.newest)
                else:
                    st.failed(self.clock.now(), error or "")
                self.store.save_source(conn, st)
                state = self.store.save_state(conn, ENGINE_STATE, self.engine.state(),
                                              self.engine.now)
        except BaseException:
            self._reset_engine()
            raise
        self._committed_state = state
        self.states[name] = st
        if stored:
            self._refresh_active()
        with self._lock:
            self._cursors[name] = st.cursor
        for ev in ctx.events:
            self.on_event(ev)
        if ctx.events:
            self._outbox_wake.set()
        return len(stored)

    def _no_future(self, name: str, mentions: list[Any]) -> list[Any]:
        """A post dated ahead of the wall clock (an author's clock, a feed's typo) would
        drag event time into the future and make every real mention late: it counts now,
        and keeps the time it claimed in ``extra``."""
        limit = self.clock.now() + FUTURE_SKEW
        fixed = 0
        for m in mentions:
            if m.created_at > limit:
                m.extra = {**m.extra, "claimed_created_at": m.created_at}
                m.created_at = self.clock.now()
                fixed += 1
        if fixed:
            log.warning("%s: %d post(s) dated in the future were counted at the time they "
                        "arrived", name, fixed)
        return mentions

    def advance_clock(self) -> None:
        """Move event time to the wall clock less the lateness allowance."""
        target = self.clock.now() - self.lateness
        if not self.engine.now or target <= self.engine.now:
            return
        ctx = RunContext()
        try:
            if self.engine.book.open:
                closed = self.engine.book.close_by_hand(self.store.firing_keys())
                if closed:
                    log.info("%d alert(s) resolved by hand", closed)
            with self.store.transaction() as conn:
                ctx.conn = conn
                ctx.events.extend(self.engine.advance(target))
                self.pipeline.store_only(ctx, [])
                state = self.store.save_state(conn, ENGINE_STATE, self.engine.state(),
                                              self.engine.now)
        except Exception as e:  # noqa: BLE001
            log.error("could not advance the clock: %s", e)
            self._reset_engine()
            return
        self._committed_state = state
        for ev in ctx.events:
            self.on_event(ev)
        if ctx.events:
            self._outbox_wake.set()

    def _reset_engine(self) -> None:
        self.engine = self._engine_factory()
        if self._committed_state:  # a fresh copy: nothing shared with the failed engine
            self.engine.restore(orjson.loads(self._committed_state))
        self.pipeline = self._pipeline_factory(self.engine)

    def _submit(self, work: _Work) -> str:
        """Hand a page to the ingest loop and wait for it: "committed", "failed" (the
        database refused it: the caller fetches it again later) or "stopping"."""
        if self._drained.is_set():
            return "stopping"
        self._queue.put(work)
        while not work.done.wait(0.2):
            if self._drained.is_set():
                return "stopping"
        return work.result

    def _handed(self, work: _Work) -> bool:
        """Submit a page; False when stopping; SourceError when it could not be stored."""
        result = self._submit(work)
        if result == "failed":
            raise SourceError("the database could not store what was fetched; "
                              "it is fetched again")
        return result == "committed"

    # -- polling -----------------------------------------------------------------------
    def _poll(self, src: PollingSource) -> None:
        if self._stopping.is_set():
            return
        with self._lock:
            cursor = self._cursors.get(src.name)
        try:
            for fetched in src.poll(cursor):
                if self._stopping.is_set() or not self._handed(_Work(src.name, fetched)):
                    return
            self._errors[src.name] = 0
        except SourceError as e:
            self._failed(src, str(e), e.retry_after, e.setting)
        except Exception as e:  # noqa: BLE001 - a connector bug must not stop the daemon
            log.exception("%s: unexpected error", src.name)
            self._failed(src, f"unexpected error: {type(e).__name__}: {e}", None, None)

    def _failed(self, src: PollingSource, message: str, retry_after: float | None,
                setting: str | None) -> None:
        n = self._errors[src.name] = self._errors.get(src.name, 0) + 1
        delay = backoff(n, src.interval, retry_after, first=self.backoff_first)
        hint = f" (check {setting})" if setting else ""
        log.warning("%s: %s%s; try %d, next in %.0f s", src.name, message, hint, n, delay)
        self._submit(_Work(src.name, error=message + hint))
        if self._scheduler is not None and not self._stopping.is_set():
            with contextlib.suppress(Exception):  # the scheduler may be shutting down
                self._scheduler.modify_job(src.name, next_run_time=self._wall() +
                                           timedelta(seconds=delay))

    # -- delivery ----------------------------------------------------------------------
    def _run_outbox(self) -> None:
        """Send due deliveries every second (at once after a commit with alert events),
        queue reminders every half minute; a database fault is logged and retried."""
        assert self.outbox is not None
        next_remind = self.clock.monotonic()
        while not self._stopping.is_set():
            self._outbox_wake.clear()
            try:
                if self.clock.monotonic() >= next_remind:
                    next_remind = self.clock.monotonic() + REMIND_EVERY
                    self.outbox.remind()
                for _ in range(10):  # a message sent may free the next of its incident
                    if not self.outbox.deliver_due():
                        break
            except Exception as e:  # noqa: BLE001 - the outbox must outlive faults
                log.error("outbox: %s", e)
            self._outbox_wake.wait(OUTBOX_EVERY)  # at once when an alert was just stored

    # -- subscriptions -----------------------------------------------------------------
    def _run_subscriptions(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        async def all_subscriptions() -> None:
            await asyncio.gather(*(self._subscribe(sub) for sub in self.subscriptions),
                                 return_exceptions=True)

        try:
            with contextlib.suppress(asyncio.CancelledError):  # stop() cancels every task
                loop.run_until_complete(all_subscriptions())
        finally:
            loop.close()

    async def _subscribe(self, sub: Subscription) -> None:
        async def emit(fetched: Fetched) -> None:
            if not await asyncio.to_thread(self._handed, _Work(sub.name, fetched)):
                raise asyncio.CancelledError  # stopping
            self._errors[sub.name] = 0

        while not self._stopping.is_set():
            with self._lock:
                cursor = self._cursors.get(sub.name)
            try:
                await sub.stream(cursor, emit)
                message, retry_after = "the stream ended", None
            except asyncio.CancelledError:
                return
            except SourceError as e:
                message, retry_after = str(e), e.retry_after
            except Exception as e:  # noqa: BLE001
                log.exception("%s: unexpected error", sub.name)
                message, retry_after = f"unexpected error: {type(e).__name__}: {e}", None
            n = self._errors[sub.name] = self._errors.get(sub.name, 0) + 1
            delay = backoff(n, MAX, retry_after, first=self.backoff_first)
            log.warning("%s: %s; reconnecting in %.0f s", sub.name, message, delay)
            await asyncio.to_thread(self._submit, _Work(sub.name, error=message))
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                return


def _log_event(ev: AlertEvent) -> None:
    log.warning("ALERT %s %s %s %s %s: %s", ev.event.upper(), ev.severity, ev.rule, ev.scope,
                ev.key, ev.summary)


def build_pipeline(matcher: Any, store: Store, planner: Planner | None = None,
                   ) -> Callable[[Engine], Pipeline]:
    scorer = SentimentScorer()
    return lambda engine: Pipeline(matcher, engine, scorer, store, check_store=True,
                                   planner=planner)

