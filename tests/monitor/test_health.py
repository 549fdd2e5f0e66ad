"""``/healthz`` tells the truth: a source that stops answering, an outbox that cannot send
and a database that goes away each turn it to 503 within their thresholds, and it
comes back to 200 when they recover. ``/metrics`` counts what the daemon did.

The daemon runs in-process with scripted sources; the health server is real HTTP on
127.0.0.1, Slack a local fake, and the database a real PostgreSQL behind a TCP proxy
that the test cuts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from connectors.base import SourceError
from monitor import app as core
from monitor.clock import FixedClock
from monitor.daemon import Daemon
from monitor.models import AlertEvent
from monitor.notify.plan import Planner
from monitor.notify.routes import Route, Routing
from monitor.setup import setup
from monitor.store import Store
from tests.conftest import pg_store_url
from tests.fakes.slack import FakeSlack
from tests.fakes.tcpproxy import TcpProxy
from tests.monitor.test_daemon import Scripted, m


def until(cond: Callable[[], bool], timeout: float = 20.0) -> float:
    """Wait for ``cond``; returns how long it took."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)
    return time.monotonic() - t0


def healthz(d: Daemon) -> tuple[int, dict[str, Any]]:
    assert d.health is not None
    r = httpx.get(f"{d.health.url}/healthz", timeout=20)
    return r.status_code, r.json()


def sample(d: Daemon, name: str, **labels: str) -> float:
    """A value from the daemon's ``/metrics`` (Prometheus text, as a scraper reads it)."""
    assert d.health is not None
    text = httpx.get(f"{d.health.url}/metrics", timeout=20).text
    assert "example" not in text  # no URLs, no text from posts or errors
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def daemon(tmp_path: Path, db: str, extra: str = "", **run: str) -> Daemon:
    settings = {"health": '"127.0.0.1:0"', "stale": "1s", "outbox_stuck": "1s",
                "lease": "3s", **run}
    cfg = tmp_path / "stormwatch.yaml"
    cfg.write_text(f'database: "{db}"\n'
                   f"run: {{{', '.join(f'{k}: {v}' for k, v in settings.items())}}}\n"
                   + extra)
    s = setup(str(cfg))
    d = core.build_daemon(s, Store.open(db))
    d.backoff_first = 0.05
    return d


def running(d: Daemon) -> threading.Thread:
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    return t


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/h.db"


def test_a_source_that_stops_answering_fails_the_health_within_its_threshold(
        tmp_path: Path, sqlite_db: str) -> None:
    src = Scripted("rss:news", [[m(1)], [m(2)]], interval=0.1)
    d = daemon(tmp_path, sqlite_db)
    d.polling = [src]
    t = running(d)
    try:
        until(lambda: d.store.count_mentions() == 2)
        stored = sample(d, "stormwatch_mentions_stored_total", source="rss:news")
        errors = sample(d, "stormwatch_poll_errors_total", source="rss:news")
        code, report = healthz(d)
        assert code == 200 and report["sources"]["rss:news"]["ok"], report
        src.fail_with = [SourceError("https://news.example/feed answered 503")] * 10_000
        stopped = time.monotonic()
        until(lambda: healthz(d)[0] == 503)
        took = time.monotonic() - stopped
        code, report = healthz(d)
        assert report["status"] == "failing"
        assert any(p.startswith("source rss:news: no answer") for p in report["problems"])
        assert 0.8 <= took <= 1.0 + 1.5  # the threshold (1 s), give or take a poll
        assert "news.example" not in str(report)  # no URLs, no error texts
        assert sample(d, "stormwatch_poll_errors_total", source="rss:news") > errors
        src.fail_with.clear()
        src.pages.append([m(3)])
        until(lambda: healthz(d)[0] == 200)  # it answers again: healthy again
        assert sample(d, "stormwatch_mentions_stored_total", source="rss:news") == stored + 1
    finally:
        d.stop()
        t.join(10)


SLACK = "notify:\n  channels:\n    care: {{type: slack, webhook_url: '{url}'}}\n"


def fired(key: str) -> AlertEvent:
    return AlertEvent(event="fired", rule="negative-thread-taking-off", severity="warning",
                      scope="thread", key=key, topic="all", at=time.time(),
                      signals={"mentions": 30}, summary=f"angry thread {key}")


def test_an_outbox_that_cannot_send_fails_the_health_and_recovers(
        tmp_path: Path, sqlite_db: str) -> None:
    with FakeSlack() as slack:
        slack.failures.extend([(500, "rollup_error")] * 3)
        d = daemon(tmp_path, sqlite_db, SLACK.format(url=slack.url))
        t = running(d)
        try:
            until(lambda: healthz(d)[0] == 200)
            sent, retried = (sample(d, "stormwatch_deliveries_total", channel="care",
                                    outcome=o) for o in ("sent", "retry"))
            with d.store.transaction() as conn:
                Planner(Routing([Route("all", ("care",), "info")]), d.store,
                        FixedClock(time.time())).record(conn, [fired("reddit:t3_a")])
            queued = time.monotonic()
            until(lambda: healthz(d)[0] == 503)
            assert time.monotonic() - queued <= 1.0 + 1.5
            _, report = healthz(d)
            assert report["outbox"]["unsent"] == 1 and not report["outbox"]["ok"]
            assert any(p.startswith("outbox: a message has waited") for p in report["problems"])
            slack.failures.clear()  # Slack is back; the retry (10 s backoff) sends it
            until(lambda: healthz(d)[0] == 200, timeout=30)
            assert len(slack.messages) == 1
            assert sample(d, "stormwatch_deliveries_total", channel="care",
                          outcome="sent") == sent + 1
            assert sample(d, "stormwatch_deliveries_total", channel="care",
                          outcome="retry") >= retried + 1
            assert sample(d, "stormwatch_outbox_depth") == 0
        finally:
            d.stop()
            t.join(10)


@pytest.fixture
def proxied_pg() -> Iterator[tuple[str, TcpProxy]]:
    gen = pg_store_url()
    url = make_url(next(gen))
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        yield url.set(host="127.0.0.1", port=proxy.port).render_as_string(False), proxy
    next(gen, None)


@pytest.mark.postgres
def test_a_database_that_goes_away_fails_the_health_and_nothing_is_lost(
        tmp_path: Path, proxied_pg: tuple[str, TcpProxy]) -> None:
    url, proxy = proxied_pg
    src = Scripted("rss:news", [[m(1)], [m(2)]], interval=0.2)
    d = daemon(tmp_path, url, stale="30s")
    d.polling = [src]
    t = running(d)
    try:
        until(lambda: d.store.count_mentions() == 2)
        assert healthz(d)[0] == 200
        proxy.down()
        src.pages.append([m(3)])            # fetched while the database is away
        took = until(lambda: healthz(d)[0] == 503)
        _, report = healthz(d)
        assert report["database"] == "unreachable" and took < 5
        time.sleep(1.0)
        proxy.up()
        until(lambda: healthz(d)[0] == 200, timeout=30)
        until(lambda: d.store.count_mentions() == 3, timeout=30)  # fetched again, stored
    finally:
        d.stop()
        t.join(10)
    assert d.store.load_sources()["rss:news"].mentions_total == 3  # once each
