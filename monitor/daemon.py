"""``stormwatch run``: live sources feed the engine; nothing lost, nothing counted twice.

Threads, and who owns what:

- **the ingest loop** (the caller's thread) is the only writer of this instance: it takes
  each fetched page off a queue and commits, in one transaction fenced by the source's
  lease, the page's new mentions (numbered in the feed), the source's cursor and health.
  Then it lets the topic detectors (``monitor.detector``) count what the feed holds
  now, theirs and other instances' alike, and commit the alert events that caused. A
  crash at any point leaves the database at a page boundary, and each detector at a
  batch boundary of the feed: on restart the next poll starts where the last committed
  page ended, and the detectors where they last committed. Between pages it advances
  the detectors on the wall clock (less a lateness allowance), so windows close and
  alerts resolve when nothing arrives.
- **the lease keeper** renews this instance's leases (``monitor.leases``): which sources
  it polls and which topics it detects. Alone, an instance holds them all; with others
  on one PostgreSQL, each its share, and a dead one's after a lease period.
- **polling sources** run as APScheduler jobs on their interval with jitter, never two
  runs of one source at once, and only while this instance holds the source's lease;
  each waits for its page to be committed before fetching the next. A failure is
  logged, recorded in the source's health and retried with exponential backoff (or
  after the ``Retry-After`` the service asked for).
- **subscriptions** run as asyncio tasks in one thread, restarted with the same backoff
  when their connection fails, connected only while their lease is held.
- **the outbox** sends what the detectors queued (claims: ``Store.due_deliveries``).

``stop()`` (SIGINT / SIGTERM) ends it within seconds: the scheduler stops, subscriptions
are cancelled, pages already fetched are committed, a poll still waiting on the
network is abandoned (its page was not committed, so it is fetched again next time),
and the leases are handed back for a successor to take at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor as JobPool
from apscheduler.schedulers.background import BackgroundScheduler

from connectors.base import Fetched, PollingSource, SourceError, Subscription
from monitor import metrics, retention
from monitor.backoff import FIRST, MAX, backoff
from monitor.clock import Clock, SystemClock
from monitor.detector import Detector
from monitor.flatline import Flatline
from monitor.health import HealthServer, Watched
from monitor.leases import LeaseLost, Leases
from monitor.models import AlertEvent, SourceState
from monitor.notify.outbox import Outbox
from monitor.pipeline import Intake, RunContext
from monitor.rules import RuleSet
from monitor.store import Store

log = logging.getLogger("stormwatch")

TICK = 15.0            # seconds between wall-clock advances when idle
LATENESS = 120.0       # event time trails the wall clock by this much (slow sources)
FLATLINE_EVERY = 60.0   # seconds between looks at the sources' volume (flatline rules)
RULES_LOOK = 2.0        # seconds between looks at the rules files' modification times
RETENTION_EVERY = 600.0  # seconds between prunes (at most; a short retention prunes more often)
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
    epoch: int | None = None  # of the source's lease when its cursor was read
    done: threading.Event = field(default_factory=threading.Event)
    result: str = "stopping"  # committed | failed (the database refused it) | lost (the
    # source's lease went to another instance) | stopping


class Daemon:
    def __init__(self, *, intake: Intake, detector: Detector, store: Store,
                 polling: Sequence[PollingSource] = (),
                 subscriptions: Sequence[Subscription] = (),
                 clock: Clock | None = None, on_event: Callable[[AlertEvent], None] | None =
                 None, tick: float = TICK, lateness: float = LATENESS,
                 backoff_first: float = FIRST, outbox: Outbox | None = None,
                 keep_mentions: float | None = None) -> None:
        """``keep_mentions``: seconds of mentions to keep (None: keep everything)."""
        self.store = store
        self.keep_mentions = keep_mentions
        self.clock = clock or SystemClock()
        self.polling = list(polling)
        self.subscriptions = list(subscriptions)
        self.intake, self.detector = intake, detector
        self.leases: Leases = detector.leases
        self.detector.on_event = on_event or _log_event
        self.tick, self.lateness, self.backoff_first = tick, lateness, backoff_first
        self.outbox = outbox
        self._outbox_thread: threading.Thread | None = None
        self._outbox_wake = threading.Event()  # set when a commit wrote alert events
        self._queue: queue.Queue[_Work] = queue.Queue()
        self._stopping = threading.Event()
        self._drained = threading.Event()   # shutdown took what it will take off the queue
        self._scheduler: BackgroundScheduler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._leases_changed = threading.Event()
        self.states: dict[str, SourceState] = {}
        self._cursors: dict[str, tuple[int, Any]] = {}  # name -> (lease epoch, cursor)
        self._errors: dict[str, int] = {}
        self._lock = threading.Lock()
        self.health: HealthServer | None = None   # /healthz and /metrics, when configured
        # rules: (the files, a loader that validates them and returns an engine factory)
        self.rules_files: list[str] = []
        self.load_rules: Callable[[], tuple[RuleSet, Callable[[str], Any]]] | None = None
        self.flatline: Flatline | None = None   # source rules, when there are any
        self._reload = threading.Event()
        self._rules_mtimes: dict[str, float | None] = {}
        self.started = self.clock.now()

    def watched(self) -> Watched:
        """What this instance answers for, for ``/healthz``."""
        def held() -> dict[str, float]:
            out = {src.name: float(src.interval) for src in self.polling}
            out.update({sub.name: 0.0 for sub in self.subscriptions})
            return {n: i for n, i in out.items() if self.leases.holds(f"source:{n}")}

        def behind() -> int:
            places = [p.seq for p in list(self.detector.partitions.values())]
            return max(0, self.store.last_seq() - min(places)) if places else 0

        return Watched(sources=held, started=self.started, behind=behind)

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> None:
        """Take the leases that are free, restore what they cover, start the threads."""
        sources = [*self.polling, *self.subscriptions]
        jobs = ["job:clock", *(["job:retention"] if self.keep_mentions else []),
                *(["job:flatline"] if self.flatline is not None else [])]
        self.leases.names = sorted({*self.leases.names, *jobs,
                                    *(f"source:{src.name}" for src in sources)})
        self.states = self.store.load_sources()
        new = []
        for src in sources:
            if src.name not in self.states:
                new.append(self.states.setdefault(src.name, SourceState(name=src.name)))
            self._errors[src.name] = self.states[src.name].errors_in_a_row
        if new:  # so that `status` lists them (waiting) before their first page
            with self.store.transaction() as conn:
                for st in new:
                    self.store.save_source(conn, st)
        self._keep_leases()
        self.detector.sync()
        self._catch_up()
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
        self._spawn("leases", self._run_leases)
        if self.health is not None:
            self.health.start()
        if self.outbox is not None:
            self._spawn("outbox", self._run_outbox)
        if self.subscriptions:
            self._spawn("subscriptions", self._run_subscriptions)
        log.info("instance %s: watching %d source(s): %s; holds %d of %d lease(s)",
                 self.leases.holder, len(sources),
                 ", ".join(sorted(s.name for s in sources)) or "none",
                 len(self.leases.held), len(self.leases.names))

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def active_threads(self, prefix: str) -> list[str]:
        """Threads under ``prefix`` (``bluesky:``) active in the last hour, most recent
        first, whichever instance counts them (a poller's thread asks the database)."""
        return self.store.active_threads(prefix, self.clock.now() - ACTIVE_WINDOW, ACTIVE_MAX)

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
        next_prune = self.clock.monotonic() + self.tick
        next_look = self.clock.monotonic() + RULES_LOOK
        next_flat = self.clock.monotonic() + FLATLINE_EVERY
        self._rules_mtimes = self._mtimes()
        while not self._stopping.is_set():
            wait = max(0.0, min(0.5, next_tick - self.clock.monotonic()))
            try:
                work = self._queue.get(timeout=wait)
            except queue.Empty:
                work = None
            if work is not None:
                self._ingest(work)
            if self._leases_changed.is_set():
                self._leases_changed.clear()
                self._sync_detector()
            self._catch_up()  # this instance's pages, and other instances'
            if self.clock.monotonic() >= next_tick:
                self.advance_clock()
                next_tick = self.clock.monotonic() + self.tick
            if self._reload.is_set() or self.clock.monotonic() >= next_look:
                next_look = self.clock.monotonic() + RULES_LOOK
                if self._reload.is_set() or self._rules_mtimes != self._mtimes():
                    self._reload.clear()
                    self.reload_rules()
            if self.flatline is not None and self.clock.monotonic() >= next_flat:
                next_flat = self.clock.monotonic() + FLATLINE_EVERY
                self._look_at_sources()
            if self.keep_mentions and self.clock.monotonic() >= next_prune:
                next_prune = self.clock.monotonic() + min(RETENTION_EVERY,
                                                          self.keep_mentions / 4)
                self._prune()

    # -- rules ---------------------------------------------------------------------
    def request_reload(self) -> None:
        """Reload the rules files at the next turn of the ingest loop (SIGHUP; safe from
        a signal handler)."""
        self._reload.set()

    def _mtimes(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for path in self.rules_files:
            try:
                out[path] = os.stat(path).st_mtime
            except OSError:
                out[path] = None
        return out

    def reload_rules(self) -> bool:
        """Load the rules files again; all or nothing: a file with a mistake keeps the
        rules running as they are, and the log says where the mistake is."""
        if self.load_rules is None:
            return False
        self._rules_mtimes = self._mtimes()
        try:
            rules, factory = self.load_rules()
        except Exception as e:  # noqa: BLE001 - a bad file must not stop the daemon
            log.error("rules not reloaded, the running rules stay: %s", e)
            return False
        try:
            self.detector.reload(factory)
        except Exception as e:  # noqa: BLE001 - the database went away: next change
            log.error("rules not reloaded (detector state unreadable): %s", e)
            return False
        if self.flatline is not None:
            self.flatline.reload(rules)
        log.info("rules reloaded from %s", ", ".join(self.rules_files) or "the defaults")
        return True

    def _look_at_sources(self) -> None:
        """Flatline rules: has a source this instance polls gone quiet?"""
        assert self.flatline is not None
        names = [src.name for src in [*self.polling, *self.subscriptions]]
        try:
            if self.flatline.evaluate(names, self.detector.on_event):
                self._outbox_wake.set()
        except Exception as e:  # noqa: BLE001 - looked at again next minute
            log.error("could not evaluate the source rules: %s", e)

    def _prune(self) -> None:
        if not self.leases.holds("job:retention") or self.keep_mentions is None:
            return
        try:
            retention.prune(self.store, self.clock.now(), self.keep_mentions)
        except Exception as e:  # noqa: BLE001 - tried again next time
            log.error("retention: could not delete old mentions: %s", e)

    def _sync_detector(self) -> None:
        try:
            self.detector.sync()
        except Exception as e:  # noqa: BLE001 - retried when the leases next change
            log.error("could not load a topic's detector: %s", e)
            self._leases_changed.set()

    def _catch_up(self) -> None:
        """Count what the feed holds beyond each detector's place."""
        try:
            for _ in range(50):  # then back to the queue: pollers wait on their commits
                if not self.detector.step():
                    break
        except Exception as e:  # noqa: BLE001 - a database fault must not end the daemon
            log.error("could not count the stored mentions (tried again shortly): %s", e)
            return
        if self.detector.events_since_wake:
            self.detector.events_since_wake = 0
            self._outbox_wake.set()

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
        with contextlib.suppress(Exception):
            self._catch_up()
        try:
            self.detector.checkpoint()  # a successor starts where this one stopped
        except Exception as e:  # noqa: BLE001 - it re-reads from the last checkpoint
            log.warning("could not checkpoint the detectors: %s", e)
        for src in self.polling:
            try:
                src.close()
            except Exception:  # noqa: BLE001 - closing must not stop the shutdown
                log.exception("closing %s", src.name)
        for t in self._threads:
            if t.name != "subscriptions":
                t.join(STOP_GRACE)
        self.leases.release_all()
        if self.health is not None:
            self.health.stop()
        log.info("stopped")

    # -- the ingest loop ---------------------------------------------------------------
    def _ingest(self, work: _Work) -> None:
        fetched = work.fetched
        timer = metrics.INGEST_SECONDS.time() if fetched is not None else contextlib.nullcontext()
        try:
            if fetched is None:
                self._commit(work.source, [], None, work.error or "unknown error",
                             work.epoch)
                return
            for w in fetched.warnings:
                log.warning("%s: %s", work.source, w)
            with timer:
                stored = self._commit(work.source, fetched.mentions, fetched, None,
                                      work.epoch)
            work.result = "committed"
            if stored:
                log.info("%s: %d new mention(s)", work.source, stored)
        except LeaseLost as e:
            work.result = "lost"
            log.warning("%s: %s: the page is left to the new holder", work.source, e)
        except Exception as e:  # noqa: BLE001 - a database fault must not end the daemon
            work.result = "failed"
            log.error("%s: could not store %s: %s", work.source,
                      "its health" if fetched is None else
                      f"a page of {len(fetched.mentions)} mention(s) (it is fetched again)", e)
        finally:
            work.done.set()

    def _commit(self, name: str, mentions: list[Any], fetched: Fetched | None,
                error: str | None, epoch: int | None = None) -> int:
        """One transaction, fenced by the source's lease (at ``epoch``: the one its cursor
        was read under): mentions, engagement growth, cursor and health. On failure
        nothing changes (the page is fetched again)."""
        st = replace(self.states[name])
        ctx = RunContext()
        mentions = self._no_future(name, mentions)
        with self.store.transaction() as conn:
            self.leases.fence(conn, f"source:{name}", epoch)
            ctx.conn = conn
            stored = self.intake.run(ctx, list(mentions)) if mentions else []
            if stored:
                self.store.add_volume(conn, name, len(stored), self.clock.now())
            if fetched is not None and fetched.updates:
                self.store.add_engagement(conn, self.store.refresh_metrics(
                    conn, fetched.updates))
            if fetched is not None:
                if fetched.cursor is not None:
                    st.cursor = fetched.cursor
                st.succeeded(self.clock.now(), len(stored), fetched.newest)
            else:
                st.failed(self.clock.now(), error or "")
            self.store.save_source(conn, st)
        self.states[name] = st
        if stored:
            metrics.MENTIONS.labels(name).inc(len(stored))
        if fetched is not None:
            metrics.SOURCE_SUCCESS.labels(name).set(st.last_success or 0)
            if st.lag is not None:
                metrics.SOURCE_LAG.labels(name).set(st.lag)
        with self._lock:
            self._cursors[name] = (epoch or self.leases.held.get(f"source:{name}", 0),
                                   st.cursor)
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
        """Event time moves to the wall clock less the lateness allowance: a clock entry
        in the feed (by the one instance holding ``job:clock``), counted by every
        detector where it stands."""
        if not self.leases.holds("job:clock"):
            return
        try:
            with self.store.transaction() as conn:
                self.leases.fence(conn, "job:clock")
                self.store.add_clock(conn, self.clock.now() - self.lateness)
        except LeaseLost:
            return
        except Exception as e:  # noqa: BLE001
            log.error("could not advance the clock: %s", e)
            return
        self._catch_up()

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
        """Submit a page; False when stopping or the lease was lost; SourceError when it
        could not be stored."""
        result = self._submit(work)
        if result == "failed":
            raise SourceError("the database could not store what was fetched; "
                              "it is fetched again")
        return result == "committed"

    # -- polling -----------------------------------------------------------------------
    def _cursor(self, name: str) -> tuple[int | None, Any]:
        """(epoch, cursor): the epoch of this instance's lease on the source (None: not
        held), and the cursor to go on from (re-read from the database when the lease
        was newly taken: another instance may have moved it)."""
        epoch = self.leases.held.get(f"source:{name}")
        if epoch is None:
            return None, None
        with self._lock:
            known = self._cursors.get(name)
        if known is not None and known[0] == epoch:
            return epoch, known[1]
        st = self.store.load_sources().get(name) or SourceState(name=name)
        self.states[name] = st
        with self._lock:
            self._cursors[name] = (epoch, st.cursor)
        return epoch, st.cursor

    def _poll(self, src: PollingSource) -> None:
        if self._stopping.is_set():
            return
        try:
            epoch, cursor = self._cursor(src.name)
        except Exception as e:  # noqa: BLE001 - the database is down: next interval
            log.error("%s: could not read its cursor: %s", src.name, e)
            return
        if epoch is None:
            return
        try:
            for fetched in src.poll(cursor):
                if self._stopping.is_set() or not self._handed(
                        _Work(src.name, fetched, epoch=epoch)):
                    return
            self._errors[src.name] = 0
        except SourceError as e:
            self._failed(src, str(e), e.retry_after, e.setting, epoch)
        except Exception as e:  # noqa: BLE001 - a connector bug must not stop the daemon
            log.exception("%s: unexpected error", src.name)
            self._failed(src, f"unexpected error: {type(e).__name__}: {e}", None, None, epoch)

    def _failed(self, src: PollingSource, message: str, retry_after: float | None,
                setting: str | None, epoch: int) -> None:
        n = self._errors[src.name] = self._errors.get(src.name, 0) + 1
        metrics.POLL_ERRORS.labels(src.name).inc()
        delay = backoff(n, src.interval, retry_after, first=self.backoff_first)
        hint = f" (check {setting})" if setting else ""
        log.warning("%s: %s%s; try %d, next in %.0f s", src.name, message, hint, n, delay)
        self._submit(_Work(src.name, error=message + hint, epoch=epoch))
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

    # -- leases ----------------------------------------------------------------------
    def _keep_leases(self) -> None:
        before = dict(self.leases.held)
        try:
            self.leases.keep()
        except Exception as e:  # noqa: BLE001 - a lease not renewed expires and is fenced
            log.error("could not renew leases: %s", e)
        metrics.LEASES.set(len(self.leases.held))
        if self.leases.held != before:
            self._leases_changed.set()
            self._schedule_taken([n for n in self.leases.held if n not in before])

    def _schedule_taken(self, names: list[str]) -> None:
        """A source whose lease was just taken is polled when its interval since its last
        poll (by whichever instance) is up: at once, after a takeover from a dead one."""
        if self._scheduler is None or self._stopping.is_set():
            return
        by_name = {f"source:{src.name}": src for src in self.polling}
        for name in names:
            src = by_name.get(name)
            if src is None:
                continue
            try:
                st = self.store.load_sources().get(src.name)
                last = st.last_poll if st is not None and st.last_poll else 0.0
                due = max(self.clock.now(), last + src.interval)
                self._scheduler.modify_job(src.name,
                                           next_run_time=datetime.fromtimestamp(due, UTC))
            except Exception as e:  # noqa: BLE001 - it runs on its interval anyway
                log.warning("%s: could not schedule its first poll here: %s", src.name, e)

    def _run_leases(self) -> None:
        while not self._stopping.wait(self.leases.period / 3):
            self._keep_leases()

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
        epoch: int | None = None

        async def emit(fetched: Fetched) -> None:
            if not await asyncio.to_thread(self._handed, _Work(sub.name, fetched,
                                                               epoch=epoch)):
                if self._stopping.is_set():
                    raise asyncio.CancelledError
                raise SourceError("this instance no longer holds the source's lease")
            self._errors[sub.name] = 0

        while not self._stopping.is_set():
            try:
                epoch, cursor = await asyncio.to_thread(self._cursor, sub.name)
            except Exception as e:  # noqa: BLE001 - the database is down: try again
                log.error("%s: could not read its cursor: %s", sub.name, e)
                epoch = None
            if epoch is None:
                try:
                    await asyncio.sleep(min(1.0, self.leases.period / 3))
                except asyncio.CancelledError:
                    return
                continue
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
            metrics.POLL_ERRORS.labels(sub.name).inc()
            delay = backoff(n, MAX, retry_after, first=self.backoff_first)
            log.warning("%s: %s; reconnecting in %.0f s", sub.name, message, delay)
            await asyncio.to_thread(self._submit, _Work(sub.name, error=message, epoch=epoch))
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                return


def _log_event(ev: AlertEvent) -> None:
    log.warning("ALERT %s %s %s %s %s: %s", ev.event.upper(), ev.severity, ev.rule, ev.scope,
                ev.key, ev.summary)


