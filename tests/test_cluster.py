"""Two ``stormwatch run`` processes on one PostgreSQL, against local Reddit, feed and
Slack servers; one is killed with SIGKILL mid-run. Every mention is stored once and
counted once, every alert reaches Slack once, no feed is polled twice at once, and the
dead instance's work is taken over within a lease period."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from monitor.store import Store, leases, mentions, partitions
from tests.fakes.feeds import FeedServer, rss
from tests.fakes.reddit import CLIENT_ID, CLIENT_SECRET, FakeReddit, comment
from tests.fakes.slack import TOKEN, FakeSlackApi

pytestmark = pytest.mark.postgres

LEASE = 3.0
FEEDS = ("a", "b", "c", "d")
NOW = time.time()


def rfc822(t: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(t))


class Feeds:
    """Four news feeds, each item naming acme or globex; more items as the test goes."""

    def __init__(self, server: FeedServer) -> None:
        self.server = server
        self.items: dict[str, list[tuple[str, str, str]]] = {f: [] for f in FEEDS}
        self.n = 0

    def add(self, per_feed: int) -> None:
        for f in FEEDS:
            for _ in range(per_feed):
                self.n += 1
                brand = "acme" if self.n % 2 else "globex"
                self.items[f].append((f"{f}-{self.n}", f"{brand} story number {self.n}",
                                      rfc822(time.time() - 30)))
            self.server.feeds[f"/{f}.xml"] = rss(f, self.items[f][-50:])

    def ids(self) -> set[str]:
        base = self.server.url  # feedparser resolves a relative guid against the feed
        return {f"rss:{f}#{base}/{guid}" for f, items in self.items.items()
                for guid, _, _ in items}


def angry(reddit: FakeReddit, brand: str, first: int, n: int) -> None:
    """Angry comments from different people in one thread per brand, minutes ago."""
    reddit.state.add(*(comment(f"{brand[:1]}{i:03d}", NOW - 1500 + 20 * i,
                               f"{brand} lost my refund again, this is terrible and I am "
                               "furious", link=f"t3_{brand}", sub=brand,
                               author=f"{brand}{i}") for i in range(first, first + n)))


def config(tmp: Path, db: str, reddit: FakeReddit, feeds: FeedServer,
           slack: FakeSlackApi) -> Path:
    path = tmp / "cluster.yaml"
    rss_yaml = "".join(f'    {f}: {{url: "{feeds.url}/{f}.xml", interval: 10s}}\n'
                       for f in FEEDS)
    path.write_text(textwrap.dedent(f"""\
        database: "{db}"
        run: {{lease: {LEASE:g}s, health: "127.0.0.1:0"}}
        topics:
          acme: {{terms: [acme]}}
          globex: {{terms: [globex]}}
        sources:
          reddit:
            client_id: {CLIENT_ID}
            client_secret: ${{TEST_REDDIT_SECRET}}
            user_agent: stormwatch-tests/0.1
            subreddits: [acme, globex]
            search: false
            interval: 10s
            oauth_url: {reddit.url}
            reddit_url: {reddit.url}
          rss:
        """) + rss_yaml + textwrap.dedent(f"""\
        notify:
          channels:
            care:
              type: slack
              bot_token: {TOKEN}
              channel: C0CARE
              api_url: {slack.api}
        """))
    return path


STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def no_daemon_left_behind() -> Iterator[None]:
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def start(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TEST_REDDIT_SECRET=CLIENT_SECRET)
    with open(log, "wb") as out:  # a file: a pipe nobody reads would block the daemon
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(cfg)],
                                stdout=out, stderr=out, env=env)
    STARTED.append(proc)
    return proc


def until(cond: Callable[[], bool], timeout: float, what: str, logs: list[Path],
          seen: dict[str, object] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs
                              if p.exists())
            raise AssertionError(f"timed out waiting for {what} (last seen: {seen})\n{tails}")
        time.sleep(0.1)


def holders(store: Store) -> dict[str, str | None]:
    """Lease name -> the instance holding it now (None: free or expired)."""
    now = time.time()
    with store.engine.connect() as c:
        return {r.name: r.holder if r.expires_at >= now else None
                for r in c.execute(sa.select(leases))}


def instance_of(store: Store, proc: subprocess.Popen[bytes]) -> str | None:
    with store.engine.connect() as c:
        return c.execute(sa.text("SELECT name FROM instances WHERE pid = :p"),
                         {"p": proc.pid}).scalar()


def test_two_instances_share_the_work_and_one_killed_loses_nothing(
        tmp_path: Path, pg_url: str) -> None:
    with FakeReddit() as reddit, FeedServer() as feed_server, FakeSlackApi() as slack:
        feed_server.server.delay = 0.3  # polls overlapping in time would be seen
        feeds = Feeds(feed_server)
        feeds.add(3)
        angry(reddit, "acme", 0, 15)
        angry(reddit, "globex", 0, 15)
        cfg = config(tmp_path, pg_url, reddit, feed_server, slack)
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        a = start(cfg, logs[0])
        until(lambda: _migrated(pg_url), 60, "the first instance to migrate", logs)
        store = Store.open(pg_url)
        try:
            names = 2 + 1 + len(FEEDS) + 3  # topics, reddit, feeds; clock, retention, flatline
            until(lambda: len(holders(store)) == names and all(holders(store).values()),
                  60, "the first instance to take every lease", logs)
            b = start(cfg, logs[1])
            until(lambda: instance_of(store, b) is not None, 60, "the second instance", logs)
            name_a, name_b = instance_of(store, a), instance_of(store, b)

            def shared() -> bool:
                h = holders(store).values()
                return name_a in h and name_b in h
            until(shared, 3 * LEASE + 5, "the two instances to share the leases", logs)
            feeds.add(3)
            angry(reddit, "acme", 15, 10)
            time.sleep(2)

            a.send_signal(signal.SIGKILL)  # mid-run: polls, counts and sends under way
            a.wait(10)
            killed = time.monotonic()
            until(lambda: set(holders(store).values()) == {name_b}, 3 * LEASE + 10,
                  "the survivor to take over", logs)
            takeover = time.monotonic() - killed
            feeds.add(3)
            angry(reddit, "globex", 15, 10)

            expected = feeds.ids() | {f"reddit:t1_{b}{i:03d}" for b in "ag" for i in range(25)}

            seen: dict[str, object] = {}

            def settled() -> bool:
                with store.engine.connect() as c:
                    ids = set(c.execute(sa.select(mentions.c.id)).scalars())
                sent = [d["status"] for d in store.list_deliveries()]
                seen.update(missing=sorted(expected - ids)[:5], extra=sorted(ids - expected)[:5],
                            expected=len(expected), sent=sent)
                return (ids == expected and len(sent) >= 2
                        and all(s == "sent" for s in sent))
            until(settled, 90, "every mention stored and every message sent", logs, seen)
            b.send_signal(signal.SIGTERM)
            assert b.wait(15) == 0, logs[1].read_text()[-3000:]
            with store.engine.connect() as c:  # checkpointed at the clean stop
                parts = [orjson.loads(s) for s in c.execute(
                    sa.select(partitions.c.state).where(partitions.c.name.like("topic:%")))
                    .scalars()]
            counted = sum(t["total"] for p in parts for t in p["topics"])
            assert counted == len(expected)  # each mention counted once, across the kill
            deliveries = store.list_deliveries()
            alerts = store.list_alerts(limit=100)
        finally:
            store.close()
        posted = list(slack.posted)

    keys = [p["metadata"]["event_payload"]["delivery"] for p in posted]
    assert sorted(keys) == sorted(d["key"] for d in deliveries)  # each message once
    assert len(keys) == len(set(keys))
    fired = {(a["rule"], a["key"]) for a in alerts}
    assert ("negative-thread-taking-off", "reddit:t3_acme") in fired
    assert ("negative-thread-taking-off", "reddit:t3_globex") in fired
    pages = [p for p in posted if "fired" in p["text"]]
    assert len(pages) == len({a["incident_id"] for a in alerts})  # one page per incident
    assert not feed_server.overlaps, feed_server.overlaps
    assert takeover <= LEASE + LEASE / 3 + 2.0, takeover
    for log in logs:
        assert "Traceback" not in log.read_text()


def _migrated(url: str) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() \
                == "0005"
    except Exception:  # noqa: BLE001 - not yet
        return False
    finally:
        engine.dispose()
