"""The daemon's ingest loop, pollers and backoff, with scripted sources in-process.

(The command ``stormwatch run`` against real protocol peers, signals and SIGKILL, is in
tests/test_cli_run.py.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connectors.base import Cursor, Fetched, SourceError
from monitor import app as core
from monitor.backoff import backoff
from monitor.daemon import Daemon, _Work
from monitor.models import Mention
from monitor.setup import setup
from monitor.store import Store

T = 1_714_560_000.0


def m(i: int, text: str = "acme is late again") -> Mention:
    return Mention(id=f"reddit:t1_{i}", text=text, created_at=T + i, source="reddit",
                   thread_id="reddit:t3_x", author=f"u{i}")


class Scripted:
    """A polling source whose pages are numbered: the cursor says how many were committed."""

    def __init__(self, name: str, pages: list[list[Mention]], interval: float = 0.1) -> None:
        self.name, self.pages, self.interval = name, pages, interval
        self.polls: list[Cursor | None] = []
        self.fail_with: list[Exception] = []

    def poll(self, cursor: Cursor | None) -> Iterator[Fetched]:
        self.polls.append(cursor)
        if self.fail_with:
            raise self.fail_with.pop(0)
        done = (cursor or {}).get("pages", 0)
        for n in range(done, len(self.pages)):
            # every page also repeats the previous page's last mention (feeds do)
            again = self.pages[n - 1][-1:] if n else []
            yield Fetched(again + self.pages[n], {"pages": n + 1})

    def close(self) -> None:
        pass


def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def quiet_setup() -> Any:
    """The embedded defaults, without the health server (its port is the machine's)."""
    s = setup(None)
    s.config.run.health = None
    return s


def daemon(store: Store, *sources: Any) -> Daemon:
    s = quiet_setup()
    d = core.build_daemon(s, store)
    d.polling = list(sources)
    d.backoff_first = 0.05
    return d


def engine(d: Daemon) -> Any:
    """The detector of the topic 'all' (no topics configured)."""
    return d.detector.partitions["all"].engine


def running(d: Daemon) -> threading.Thread:
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    return t


@pytest.fixture
def store(tmp_path: Any) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path}/d.db")
    yield s
    s.close()


def test_pages_commit_with_their_cursor_and_a_restart_resumes(store: Store) -> None:
    src = Scripted("reddit", [[m(1), m(2)], [m(3)], [m(4), m(5)]])
    d = daemon(store, src)
    t = running(d)
    until(lambda: store.load_sources().get("reddit") is not None and
          store.load_sources()["reddit"].cursor == {"pages": 3})
    d.stop()
    t.join(10)
    assert not t.is_alive()
    assert store.count_mentions() == 5
    st = store.load_sources()["reddit"]
    assert st.mentions_total == 5 and st.last_error is None and st.lag is not None
    assert engine(d).topics["all"].total == 5  # the repeated mentions were not counted again

    src.pages.append([m(6)])
    d2 = daemon(store, src)
    t2 = running(d2)
    until(lambda: store.load_sources()["reddit"].cursor == {"pages": 4})
    d2.stop()
    t2.join(10)
    assert src.polls[-1] == {"pages": 3} or {"pages": 3} in src.polls
    assert store.count_mentions() == 6
    # the repeated mention was known to the store: only the new one was counted
    assert engine(d2).stats.mentions == 1
    assert engine(d2).topics["all"].total == 6


def test_a_failing_source_is_recorded_and_backs_off_while_others_go_on(store: Store) -> None:
    bad = Scripted("rss:bad", [[m(10)]])
    bad.fail_with = [SourceError("https://x.example/feed answered 503", retry_after=0.0)] * 2
    good = Scripted("rss:good", [[m(20)], [m(21)]])
    d = daemon(store, bad, good)
    t = running(d)
    until(lambda: store.count_mentions() == 3, timeout=30)
    d.stop()
    t.join(10)
    states = store.load_sources()
    assert states["rss:good"].mentions_total == 2
    bad_state = states["rss:bad"]
    assert bad_state.mentions_total == 1 and bad_state.errors_in_a_row == 0
    assert bad_state.last_error == "https://x.example/feed answered 503"
    assert len(bad.polls) == 3  # two failures, then the success


def test_a_connector_bug_does_not_stop_the_daemon(store: Store) -> None:
    src = Scripted("bluesky", [[m(30)]])
    src.fail_with = [KeyError("cid")]
    d = daemon(store, src)
    t = running(d)
    until(lambda: store.count_mentions() == 1, timeout=30)
    d.stop()
    t.join(10)
    assert "unexpected error: KeyError" in (store.load_sources()["bluesky"].last_error or "")


def test_a_database_failure_mid_commit_loses_nothing_and_counts_nothing_twice(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    src = Scripted("reddit", [[m(1), m(2)], [m(3)]])
    real = store.save_source
    failures = [RuntimeError("database is locked")]

    def flaky(conn: Any, st: Any) -> None:
        if failures and st.mentions_total:
            raise failures.pop()
        real(conn, st)

    monkeypatch.setattr(store, "save_source", flaky)
    d = daemon(store, src)
    t = running(d)
    until(lambda: "reddit" in store.load_sources() and
          store.load_sources()["reddit"].cursor == {"pages": 2}, timeout=30)
    d.stop()
    t.join(10)
    assert not failures and store.count_mentions() == 3
    assert engine(d).topics["all"].total == 3  # the rolled-back page was not counted twice


def test_stop_returns_promptly_while_a_poll_hangs(store: Store) -> None:
    release = threading.Event()

    class Hanging(Scripted):
        def poll(self, cursor: Cursor | None) -> Iterator[Fetched]:
            yield Fetched([m(1)], {"pages": 1})
            release.wait(30)  # the network never answers
            yield Fetched([m(2)], {"pages": 2})

    d = daemon(store, Hanging("rss:slow", []))
    t = running(d)
    until(lambda: store.count_mentions() == 1)
    t0 = time.monotonic()
    d.stop()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - t0 < 8
    release.set()
    assert store.load_sources()["rss:slow"].cursor == {"pages": 1}


def test_backoff_doubles_is_capped_and_honours_retry_after() -> None:
    mid = [backoff(n, 900, None, rnd=lambda: 0.5) for n in range(1, 10)]
    assert mid[:4] == [5, 10, 20, 40] and mid[-1] == 900
    assert backoff(10, 60, None, rnd=lambda: 0.5) == 60  # never slower than the interval
    assert backoff(1, 60, 300.0, rnd=lambda: 0.5) == 300  # as long as the service asked
    low, high = backoff(1, 60, None, rnd=lambda: 0.0), backoff(1, 60, None, rnd=lambda: 1.0)
    assert (low, high) == (pytest.approx(4), pytest.approx(6))


def test_a_dropped_jetstream_reconnects_from_its_cursor_without_loss_or_double_count(
        store: Store) -> None:
    from connectors.bluesky import JetstreamSubscription
    from tests.fakes.jetstream import FakeJetstream, Script, identity, post

    script = Script(frames=[post(1, "acme is down"), identity(2), post(3, "acme still down"),
                            post(4, "acme back up")], endings=["cut", "open"])
    with FakeJetstream(script) as js:
        d = daemon(store)
        d.subscriptions = [JetstreamSubscription(js.url, batch_seconds=0.05)]
        t = running(d)
        until(lambda: len(script.cursors) >= 2 and store.count_mentions() == 3 and
              "bluesky:jetstream" in store.load_sources() and
              store.load_sources()["bluesky:jetstream"].errors_in_a_row == 0 and
              store.load_sources()["bluesky:jetstream"].last_error is not None)
        d.stop()
        t.join(10)
    assert not t.is_alive()
    assert script.cursors[0] is None and script.cursors[1] is not None  # resumed, rewound
    st = store.load_sources()["bluesky:jetstream"]
    assert "dropped" in (st.last_error or "") and st.mentions_total == 3
    assert engine(d).topics["all"].total == 3


def test_refreshed_engagement_is_stored_and_counted_once(store: Store) -> None:
    post = Mention(id="bluesky:at://a/p/1", text="acme lost my parcel", created_at=T,
                   source="bluesky", author="ann", metrics={"likes": 2, "replies": 1})

    class Refreshing(Scripted):
        def poll(self, cursor: Cursor | None) -> Iterator[Fetched]:
            self.polls.append(cursor)
            if not cursor:
                yield Fetched([post], {"pages": 1})
                return
            likes = 2 + 40 * len(self.polls)
            yield Fetched([], None, updates=[("bluesky:at://a/p/1", {"likes": likes}),
                                             ("bluesky:at://never/stored", {"likes": 9})])

    src = Refreshing("bluesky:search", [])
    d = daemon(store, src)
    t = running(d)
    until(lambda: len(src.polls) >= 3)
    d.stop()
    t.join(10)
    [stored] = list(store.iter_mentions(latest=True))  # as last refreshed
    likes = stored.metrics["likes"]
    assert stored.metrics["replies"] == 1 and likes >= 82
    [counted] = list(store.iter_mentions())  # as first counted: what the feed re-reads
    assert counted.metrics == {"likes": 2, "replies": 1}
    topic = engine(d).topics["all"]
    window = next(w for (_, fkey), w in topic.windows.items() if not fkey)
    assert window.n == 1 and window.eng == likes + 1  # each growth counted once


def test_a_database_failure_does_not_end_a_subscription(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.bluesky import JetstreamSubscription
    from tests.fakes.jetstream import FakeJetstream, Script, post

    real = store.save_source
    failures = [RuntimeError("database is locked")]

    def flaky(conn: Any, st: Any) -> None:
        if failures and st.name == "bluesky:jetstream" and st.cursor:
            raise failures.pop()
        real(conn, st)

    monkeypatch.setattr(store, "save_source", flaky)
    script = Script(frames=[post(1, "acme is down"), post(2, "acme still down")])
    with FakeJetstream(script) as js:
        d = daemon(store)
        d.subscriptions = [JetstreamSubscription(js.url, batch_seconds=0.05)]
        t = running(d)
        until(lambda: store.count_mentions() == 2)
        d.stop()
        t.join(10)
    assert not failures and len(script.cursors) >= 2  # it reconnected after the failure
    assert engine(d).topics["all"].total == 2


def test_a_post_dated_in_the_future_counts_when_it_arrives(store: Store) -> None:
    from monitor.clock import SystemClock

    now = SystemClock().now()
    liar = Mention(id="rss:news#1", text="acme recall", created_at=now + 20 * 3600,
                   source="rss")
    fresh = Mention(id="rss:news#2", text="acme recall again", created_at=now - 5,
                    source="rss")
    d = daemon(store, Scripted("rss:news", [[liar, fresh]]))
    t = running(d)
    until(lambda: store.count_mentions() == 2)
    d.stop()
    t.join(10)
    got = {m.id: m for m in store.iter_mentions()}
    assert abs(got["rss:news#1"].created_at - now) < 60
    assert got["rss:news#1"].extra["claimed_created_at"] == pytest.approx(now + 20 * 3600)
    assert engine(d).now <= now + 60  # event time was not dragged 20 hours ahead


def test_a_rolled_back_page_leaves_no_trace_in_the_restored_engine(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    pages = [[m(1)], [Mention(id="reddit:t1_99", text="acme again", created_at=T + 2,
                              source="reddit", thread_id="reddit:t3_x", author="mallory")]]
    real = store.save_source
    failures = [RuntimeError("disk full")]

    def flaky(conn: Any, st: Any) -> None:
        if failures and st.cursor == {"pages": 2}:
            raise failures.pop()
        real(conn, st)

    monkeypatch.setattr(store, "save_source", flaky)
    d = daemon(store, Scripted("reddit", pages))
    d.start()
    try:
        until(lambda: d._queue.qsize() >= 1)
        d._ingest(d._queue.get())          # page 1: committed
        until(lambda: d._queue.qsize() >= 1)
        work = d._queue.get()
        d._ingest(work)                    # page 2: refused, rolled back
        assert work.result == "failed"
        d._catch_up()                      # the detector counts what was stored
        window = next(w for (_, fkey), w in engine(d).topics["all"].windows.items()
                      if not fkey)
        assert window.n == 1 and set(window.authors) == {"u1"}  # no mallory
    finally:
        d.stop()
        d.shutdown()


def test_a_poll_failing_after_shutdown_ends_instead_of_waiting_forever(store: Store) -> None:
    release, returned = threading.Event(), threading.Event()

    class FailsLate(Scripted):
        def poll(self, cursor: Cursor | None) -> Iterator[Fetched]:
            yield Fetched([m(1)], {"pages": 1})
            release.wait(30)
            raise SourceError("https://x.example answered 502")

    d = daemon(store, FailsLate("rss:late", []))
    poll = d._poll

    def watched(src: Any) -> None:
        try:
            poll(src)
        finally:
            returned.set()

    d._poll = watched  # type: ignore[method-assign]
    t = running(d)
    until(lambda: store.count_mentions() == 1)
    d.stop()
    t.join(10)
    release.set()  # the network answers after the daemon has stopped: the poll fails
    assert returned.wait(5), "the poller hung handing its failure to a loop that is gone"
    assert d._submit(_Work("rss:late")) == "stopping"


def test_log_lines_show_escapes_instead_of_obeying_them() -> None:
    import logging

    from monitor.output import InertFormatter

    record = logging.LogRecord("stormwatch", logging.WARNING, __file__, 1,
                               "ALERT %s: %s", ("reddit:t3_\x1b]0;pwned\x07", "\u202eevil"),
                               None)
    line = InertFormatter("%(message)s").format(record)
    assert "\x1b" not in line and "\x07" not in line and "\u202e" not in line
    assert "\\x1b]0;pwned\\x07" in line and "\\u202eevil" in line


def test_an_alert_resolved_by_hand_is_forgotten_and_pages_again_only_when_worse(
        store: Store) -> None:
    from monitor.clock import FixedClock
    from monitor.models import SourceState

    clock = FixedClock(T + 1800)
    d = core.build_daemon(quiet_setup(), store, clock)
    d.leases.names.append("source:reddit")  # a source fed by hand below
    d.start()
    d.states["reddit"] = SourceState(name="reddit")

    def page(first: int, n: int, start: float) -> None:
        mentions = [Mention(id=f"reddit:t1_a{i}", text="acme lost my refund, this is terrible",
                            created_at=start + 10 * (i - first), source="reddit",
                            thread_id="reddit:t3_angry", author=f"p{i}")
                    for i in range(first, first + n)]
        d._ingest(_Work("reddit", Fetched(mentions, {"n": first + n})))
        d._catch_up()

    page(0, 30, T)
    [alert] = store.list_alerts()
    assert alert["state"] == "firing" and ("negative-thread-taking-off",
                                           "reddit:t3_angry") in engine(d).book.open
    assert store.resolve_by_hand(alert["id"], "ana", "answered", clock.now()) is not None
    d.advance_clock()  # the daemon's tick learns of it: the alert is closed, and since
    st = engine(d).book.open.get(("negative-thread-taking-off", "reddit:t3_angry"))
    assert st is None or st.quiet  # the thread still holds, it is back, quietly
    page(30, 10, T + 300)  # still going: comes back quietly
    assert [e["event"] for e in store.list_events()] == ["fired", "resolved"]
    page(40, 60, T + 400)  # far worse: 90+ replies from 50+ people, the critical step
    kinds = sorted((e["id"], e["event"], e["severity"], e["summary"])
                   for e in store.list_events())
    assert [k[1:3] for k in kinds] == [("fired", "warning"), ("resolved", "warning"),
                                       ("escalated", "critical")]
    assert kinds[1][3] == "resolved by ana: answered"
    assert [a["state"] for a in store.list_alerts()] == ["resolved"]  # the record stays closed
    d.stop()
    d.shutdown()


RULE = """\
rules:
  - name: {name}
    scope: thread
    window: 30m
    when: {{mentions: ">= {n}"}}
    severity: warning
"""


def test_a_saved_rules_file_is_reloaded_and_a_broken_one_keeps_the_running_rules(
        tmp_path: Any, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE.format(name="busy-thread", n=5))
    cfg = tmp_path / "stormwatch.yaml"
    cfg.write_text(f"rules: [{rules}]\nrun: {{health: null}}\n")
    d = core.build_daemon(setup(str(cfg)), store)
    d.polling = [Scripted("reddit", [[m(1), m(2)]])]
    t = running(d)
    try:
        until(lambda: "all" in d.detector.partitions and
              engine(d).stats.mentions == 2)

        def rule_names() -> list[str]:
            return [r.name for r in engine(d).rules.rules]
        assert rule_names() == ["busy-thread"]
        rules.write_text(RULE.format(name="busy-thread", n="not a number"))
        until(lambda: "rules not reloaded" in caplog.text)
        assert f"{rules}:" in caplog.text  # where the mistake is
        assert rule_names() == ["busy-thread"]
        rules.write_text(RULE.format(name="very-busy-thread", n=50))
        until(lambda: rule_names() == ["very-busy-thread"])
        assert engine(d).topics["all"].total == 2  # the state went on under the new rules
    finally:
        d.stop()
        t.join(10)


def test_a_detector_without_state_is_warmed_from_stored_mentions_without_alerting(
        store: Store) -> None:
    """A new topic, or a state lost: the detector learns the stored mentions of the last
    two days (baseline, windows, threads) without alerting on that history; what still
    holds at its next evaluation alerts then, as new."""
    from monitor.clock import SystemClock

    now = SystemClock().now()
    angry = [Mention(id=f"reddit:t1_w{i}", text="acme lost my refund, this is terrible",
                     created_at=now - 3 * 86400 + i, source="reddit", thread_id="reddit:t3_old",
                     author=f"w{i}", topics=("all",), compound=-0.7) for i in range(40)]
    recent = [Mention(id=f"reddit:t1_r{i}", text="acme lost my refund, this is terrible",
                      created_at=now - 600 + 10 * i, source="reddit",
                      thread_id="reddit:t3_now", author=f"r{i}", topics=("all",),
                      compound=-0.7) for i in range(30)]
    with store.transaction() as conn:
        store.add_mentions(conn, angry + recent)
    d = daemon(store)
    d.start()
    try:
        e = engine(d)
        assert e.topics["all"].total == 30          # the last two days only
        assert "reddit:t3_now" in e.threads           # its threads, as they stand
        assert not e.book.open and store.list_alerts() == []  # history: no page for it
        assert d.detector.partitions["all"].seq == store.last_seq()
    finally:
        d.stop()
        d.shutdown()
