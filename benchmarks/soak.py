"""Soak: ``stormwatch run`` for a long while at ten times a busy brand's volume, with
faults, against local peers: Reddit (HTTP, the API's JSON), Bluesky (a Jetstream
websocket), four RSS feeds, Slack's Web API, and PostgreSQL behind a TCP proxy.

A busy brand is about 3,000 mentions an hour; this plays about ten times that, all of it
naming the brand: ~5/s Bluesky posts (plus 20/s posts about other things, which the
daemon reads and drops), ~2/s Reddit comments, ~1.3/s feed entries, and every ten
minutes (``--angry-every``) an angry thread (30 furious replies from 30 people in a
minute) that must page once; its incident closes before the next one starts. Faults,
spread over the run: Reddit answers 500 to a burst of requests, a feed answers 503, the
Jetstream connection is cut, Slack is down for 90 s, and PostgreSQL goes away for 10 s
(every connection cut and refused: a restart as the client sees it).

Measured: memory (RSS) of the daemon by time and its CPU time per 1,000 mentions, and
the mentions kept; judged: memory and the mentions kept are flat after warm-up (the
second half's peak within 10% of the first's, in runs of 40 minutes or more); checked:
every mention stored and counted once (stored per source = generated per source;
detector totals = stored), one ``fired`` alert per angry thread and none twice, every
message sent once (Slack's message keys).

    python benchmarks/soak.py                      # 10 minutes on the local PostgreSQL
    python benchmarks/soak.py --minutes 60 --keep 10m   # the README's figures
    STORMWATCH_TEST_PG_URL=postgresql+psycopg://... python benchmarks/soak.py
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import orjson  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from monitor.store import Store, alert_events, alerts, partitions, sources  # noqa: E402
from tests.fakes.feeds import FeedServer, rss  # noqa: E402
from tests.fakes.jetstream import LiveJetstream  # noqa: E402
from tests.fakes.reddit import CLIENT_ID, CLIENT_SECRET, FakeReddit, comment  # noqa: E402
from tests.fakes.slack import TOKEN, FakeSlackApi  # noqa: E402
from tests.fakes.tcpproxy import TcpProxy  # noqa: E402

PG = os.environ.get("STORMWATCH_TEST_PG_URL",
                    "postgresql+psycopg://postgres@127.0.0.1:5432/test")
FEEDS = ("a", "b", "c", "d")
WORDS = ["{b} support was quick and kind", "{b} app is slow today",
         "loving the new {b} release", "{b} billing charged me twice, annoying",
         "anyone else using {b} for this?", "{b} customer service never answers"]
ANGRY = "acme lost my refund again, this is terrible and I am furious"
HOUR_BUSY = 3000


class Load:
    """Generates the mentions, remembers how many of each source it made."""

    def __init__(self, reddit: FakeReddit, js: LiveJetstream, feeds: FeedServer) -> None:
        self.reddit, self.js, self.feeds = reddit, js, feeds
        self.made: Counter[str] = Counter()
        self.angry_threads: list[str] = []
        self.items: dict[str, list[tuple[str, str, str]]] = {f: [] for f in FEEDS}
        self.n = 0
        self.stop = threading.Event()

    def _id(self) -> int:
        self.n += 1
        return self.n

    def bluesky(self, per_tick_match: int, per_tick_noise: int) -> None:
        now = time.time()
        iso = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
        iso = iso.replace("+00:00", "Z")
        for k in range(per_tick_match + per_tick_noise):
            n = self._id()
            brand = "acme" if n % 2 else "globex"
            text = (WORDS[n % len(WORDS)].format(b=brand) if k < per_tick_match
                    else f"my cat did a thing {n}")
            did = f"did:plc:soak{n % 5000:05d}"
            self.js.add({"did": did, "time_us": int(now * 1e6) + k, "kind": "commit",
                         "commit": {"rev": f"r{n}", "operation": "create",
                                    "collection": "app.bsky.feed.post", "rkey": f"k{n}",
                                    "record": {"$type": "app.bsky.feed.post", "text": text,
                                               "createdAt": iso, "langs": ["en"]},
                                    "cid": f"bafy{n}"}})
            if k < per_tick_match:
                self.made["bluesky:jetstream"] += 1

    def reddit_comments(self, n: int) -> None:
        now = time.time()
        for _ in range(n):
            i = self._id()
            self.reddit.state.add(comment(f"c{i:07d}", now, WORDS[i % len(WORDS)].format(b="acme"),
                                          link=f"t3_bg{i % 40}", author=f"redditor{i % 3000}"))
            self.made["reddit"] += 1

    def angry_thread(self, k: int, seconds: float) -> None:
        tid = f"t3_angry{k}"
        self.angry_threads.append(f"reddit:{tid}")
        for j in range(30):
            if self.stop.wait(seconds / 30):
                return
            i = self._id()
            self.reddit.state.add(comment(f"x{i:07d}", time.time(), ANGRY, link=tid,
                                          author=f"angry{k}_{j}"))
            self.made["reddit"] += 1

    def feed_entry(self) -> None:
        for f in FEEDS:
            i = self._id()
            self.items[f].append((f"{f}-{i}", f"{'acme' if i % 2 else 'globex'} news item {i}",
                                  time.strftime("%a, %d %b %Y %H:%M:%S +0000",
                                                time.gmtime(time.time() - 5))))
            self.feeds.feeds[f"/{f}.xml"] = rss(f, self.items[f][-100:])
            self.made[f"rss:{f}"] += 1


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The shipped thread rule with a 5-minute window and a 1-minute resolve: the engine's
# horizon (a thread is kept twice the longest thread window, 11 minutes here) fits a
# 20-minute run, so it can show memory levelling off after it. With the shipped rules
# (30-minute windows) the same happens after an hour. Half the chatter is about a second
# brand, globex, that has no incident: acme's open incidents keep its mentions from
# retention (their charts), globex's go after `--keep`.
RULES = """rules:
  - name: negative-thread-taking-off
    scope: thread
    window: 5m
    when: {mentions: ">= 25", unique_authors: ">= 15", negative_share: ">= 0.35",
           sentiment: "<= 0", top_author_share: "<= 0.3"}
    severity: warning
    resolve_after: 1m
    realert: 1h
    annotations: {summary: "Negative thread taking off: {mentions} replies in {window}"}
  - name: source-gone-quiet
    scope: source
    window: 1h
    when: {mentions: "== 0", expected: ">= 5"}
"""


def config(path: str, db: str, reddit: FakeReddit, js: LiveJetstream, feeds: FeedServer,
           slack: FakeSlackApi, keep: str) -> None:
    feeds_yaml = "".join(f'    {f}: {{url: "{feeds.url}/{f}.xml", interval: 10s}}\n'
                         for f in FEEDS)
    rules = os.path.join(os.path.dirname(path), "rules.yaml")
    with open(rules, "w") as out:
        out.write(RULES)
    with open(path, "w") as out:
        out.write(f"""database: "{db}"
rules: [{rules}]
run: {{health: "127.0.0.1:0", lease: 10s, keep_mentions: {keep}}}
topics:
  acme: {{terms: [acme]}}
  globex: {{terms: [globex]}}
sources:
  reddit:
    client_id: {CLIENT_ID}
    client_secret: {CLIENT_SECRET}
    user_agent: stormwatch-soak/0.1
    subreddits: [acme]
    search: false
    interval: 10s
    oauth_url: {reddit.url}
    reddit_url: {reddit.url}
  bluesky:
    jetstream: {js.url}
  rss:
{feeds_yaml}notify:
  channels:
    care: {{type: slack, bot_token: {TOKEN}, channel: C0CARE, api_url: {slack.api}}}
""")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--keep", default="90d", help="run.keep_mentions (e.g. 10m)")
    ap.add_argument("--angry-every", type=float, default=600.0, metavar="SECONDS",
                    help="seconds between angry threads (600: each incident closes before "
                         "the next, so retention can prune both brands)")
    ap.add_argument("--trace", metavar="DIR",
                    help="run the daemon under tracemalloc and write a snapshot to DIR every "
                         "5 minutes (to find what grows; CPU figures are then not comparable)")
    args = ap.parse_args()
    span = args.minutes * 60

    schema = f"soak_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG)
    with admin.begin() as c:
        c.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = make_url(PG)
    with admin.connect() as c:
        wal0 = c.execute(sa.text("SELECT pg_current_wal_lsn()")).scalar_one()
        autovacuum = c.execute(sa.text("SHOW autovacuum")).scalar_one() == "on"
    if not autovacuum:  # Stormwatch relies on it, as every PostgreSQL deployment does
        print("this PostgreSQL server has autovacuum off: the soak vacuums its tables "
              "every 2.5 minutes in its place", flush=True)
    work = tempfile.mkdtemp(prefix="stormwatch-soak-")
    log_path = os.path.join(work, "daemon.log")
    with FakeReddit() as reddit, LiveJetstream() as js, FeedServer() as feeds, \
            FakeSlackApi() as slack, TcpProxy(url.host or "127.0.0.1", url.port or 5432) as pg:
        db = url.set(host="127.0.0.1", port=pg.port, query={
            **url.query, "options": f"-csearch_path={schema}"}).render_as_string(False)
        load = Load(reddit, js, feeds)
        for f in FEEDS:
            feeds.feeds[f"/{f}.xml"] = rss(f, [])
        cfg = os.path.join(work, "soak.yaml")
        config(cfg, db, reddit, js, feeds, slack, args.keep)
        with open(log_path, "wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(_daemon(cfg, args.trace), stdout=log, stderr=log, cwd=ROOT)
        t0 = time.monotonic()
        faults: list[tuple[float, str, Any]] = [
            (0.15, "Reddit answers 500 to 6 requests",
             lambda: reddit.state.fail("/r/acme/comments", 500, times=6)),
            (0.25, "feed a answers 503 three times",
             lambda: feeds.faults.__setitem__("/a.xml", [(503, b"busy")] * 3)),
            (0.40, "the Jetstream connection is cut", js.drop),
            (0.50, "Slack is down for 90 s", lambda: setattr(slack.server, "outage", True)),
            (0.50 + 90 / span, "Slack is back", lambda: setattr(slack.server, "outage", False)),
            (0.70, "PostgreSQL goes away for 10 s", pg.down),
            (0.70 + 10 / span, "PostgreSQL is back", pg.up),
        ]
        samples: list[tuple[float, int, float]] = []
        sizes: list[tuple[float, int, int, float]] = []
        threads: list[threading.Thread] = []
        next_angry, k, tick = 30.0, 0, 0
        try:
            while (elapsed := time.monotonic() - t0) < span:
                if proc.poll() is not None:
                    raise SystemExit(f"the daemon exited ({proc.returncode}); see {log_path}")
                tick += 1
                load.bluesky(1, 4)                 # every 0.2 s: 5/s matched, 20/s noise
                if tick % 5 == 0:
                    load.reddit_comments(2)        # 2/s
                if tick % 15 == 0:
                    load.feed_entry()              # 4 every 3 s
                if elapsed >= next_angry and elapsed < span - 90:
                    k += 1
                    t = threading.Thread(target=load.angry_thread, args=(k, 60.0))
                    t.start()
                    threads.append(t)
                    next_angry += args.angry_every
                while faults and elapsed >= faults[0][0] * span:
                    _, what, act = faults.pop(0)
                    print(f"{elapsed:6.0f} s  fault: {what}", flush=True)
                    act()
                if tick % 50 == 0:
                    samples.append((elapsed, rss_kb(proc.pid), cpu_seconds(proc.pid)))
                if tick % 750 == 0:  # every 2.5 minutes: the database's size
                    if not autovacuum:
                        _vacuum(admin, schema)
                    sizes.append((elapsed, *_size(admin, schema)))
                time.sleep(max(0.0, t0 + tick * 0.2 - time.monotonic()))
            load.stop.set()
            for t in threads:
                t.join()
            made = sum(load.made.values())
            print(f"generated {made} mentions in {span / 60:.0f} min "
                  f"({made / span * 3600:,.0f}/h = {made / span * 3600 / HOUR_BUSY:.1f}x a "
                  f"busy brand's {HOUR_BUSY:,}/h), {k} angry threads", flush=True)
            store = Store.open(db)
            check = _settle(store, load, slack, deadline=time.monotonic() + 180)
            cpu = cpu_seconds(proc.pid)
            rss_end = rss_kb(proc.pid)
            proc.send_signal(signal.SIGTERM)
            stopped = proc.wait(30)
            with store.engine.connect() as c:  # the detectors checkpoint at a clean stop
                states = [orjson.loads(x) for x in c.execute(sa.select(partitions.c.state)
                          .where(partitions.c.name.like("topic:%"))).scalars()]
            counted = sum(t["total"] for st in states for t in st["topics"])
            check["report"].insert(2, f"counted by the detectors: {counted} (stored: "
                                      f"{check['stored']}); the daemon exited {stopped}")
            check["ok"] = check["ok"] and counted == check["stored"] and stopped == 0
            store.close()
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    with admin.begin() as c:
        wal = c.execute(sa.text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), :a)"),
                        {"a": wal0}).scalar_one()
        c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    mem = [(t, kb / 1024) for t, kb, _ in samples]
    print(f"memory (RSS): {mem[0][1]:.0f} MiB at {mem[0][0]:.0f} s, {rss_end / 1024:.0f} MiB "
          f"at the end (after settling), max {max(m for _, m in mem):.0f} MiB")
    marks = [x for x in mem if int(x[0]) % 300 < 10]  # one sample every 5 minutes
    print("memory by time: " + ", ".join(f"{t / 60:.0f} min {m:.0f} MiB" for t, m in marks))
    flat_mem = _flat("memory (RSS, MiB)", mem, span)
    print(f"CPU: {cpu:.0f} s for {check['stored']} mentions stored = "
          f"{cpu / check['stored'] * 1000:.2f} s per 1,000 (and "
          f"{check['noise']:,} other posts read and dropped)")
    print(f"database: {check['rows']} mention rows kept, {check['mb']:.1f} MB of mentions "
          f"table at the end; {float(wal) / 1e6 / (span / 3600):,.0f} MB of WAL written per "
          f"hour (the whole server's)")
    print("database size: " + ", ".join(
        f"{t / 60:.0f} min: {n:,} mentions (acme {n - g:,}, globex {g:,}), {mb:.1f} MB"
        for t, n, g, mb in sizes))
    flat_db = (_flat("mentions kept (rows)", [(t, n) for t, n, _, _ in sizes], span),
               _flat("database (MB)", [(t, mb) for t, _, _, mb in sizes], span))
    for line in check["report"]:
        print(line)
    ok = check["ok"] and flat_mem is not False and False not in flat_db
    print("PASS" if ok else "FAIL")
    print(f"daemon log: {log_path}")
    sys.exit(0 if ok else 1)


# Under --trace: the daemon is started by a few lines that take a tracemalloc snapshot
# every 5 minutes (compare two with `python -m tracemalloc`-style code, see README).
TRACED = """
import os, runpy, sys, threading, tracemalloc
tracemalloc.start(12)
out = sys.argv.pop(1)
def dump():
    k = 0
    while True:
        threading.Event().wait(300)
        k += 1
        tracemalloc.take_snapshot().dump(os.path.join(out, f"snap{k:03d}.bin"))
threading.Thread(target=dump, daemon=True).start()
sys.argv[0] = "stormwatch"
runpy.run_module("monitor", run_name="__main__", alter_sys=True)
"""


def _daemon(cfg: str, trace: str | None) -> list[str]:
    if trace is None:
        return [sys.executable, "-m", "monitor", "run", "--config", cfg]
    os.makedirs(trace, exist_ok=True)
    return [sys.executable, "-c", TRACED, trace, "run", "--config", cfg]


WARM_UP = 20 * 60  # the engine's horizon (11 min here) and a sweep of idle threads (10)
GROWTH = 1.10      # the later half may peak at most 10% above the earlier half


def _flat(what: str, points: list[tuple[float, float]], span: float) -> bool | None:
    """Flat after warm-up: the peak in the second half of what follows the warm-up is
    at most ``GROWTH`` times the peak in its first half (sawtooth-proof: retention and
    the engine's sweeps go in steps). None when the run is too short to tell."""
    if span < 2 * WARM_UP:
        print(f"{what}: a run under {2 * WARM_UP / 60:.0f} min is too short to judge "
              "flatness after warm-up")
        return None
    mid = (WARM_UP + span) / 2
    early = max(v for t, v in points if WARM_UP <= t < mid)
    late = max(v for t, v in points if t >= mid)
    flat = late <= GROWTH * early
    print(f"{what}: peak {early:,.1f} from {WARM_UP / 60:.0f} to {mid / 60:.0f} min, "
          f"{late:,.1f} from {mid / 60:.0f} min to the end ({late / early:.2f}x): "
          f"{'flat' if flat else 'GROWING'}")
    return flat


def _vacuum(admin: Any, schema: str) -> None:
    """What autovacuum does: dead rows' space made reusable (plain VACUUM, no lock)."""
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        for table in c.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = :s"),
                               {"s": schema}).scalars().all():
            c.execute(sa.text(f'VACUUM {schema}."{table}"'))


def _size(admin: Any, schema: str) -> tuple[int, int, float]:
    """Mentions kept (all, globex's), and the MB the schema's tables and indexes take."""
    with admin.connect() as c:
        n = c.execute(sa.text(f"SELECT count(*) FROM {schema}.mentions")).scalar_one()
        g = c.execute(sa.text(f"SELECT count(*) FROM {schema}.mentions "
                              "WHERE topics = 'globex'")).scalar_one()
        mb = c.execute(sa.text(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relkind = 'r'"), {"s": schema}).scalar_one()
    return int(n), int(g), float(mb) / 1e6


def _settle(store: Store, load: Load, slack: FakeSlackApi, deadline: float) -> dict[str, Any]:
    """Wait until what was generated is stored, counted and sent; then check it all."""
    while True:
        with store.engine.connect() as c:
            totals = dict(c.execute(sa.select(sources.c.name, sources.c.mentions_total)).all())
            fired = Counter(k for k, in c.execute(
                sa.select(alerts.c.key).join(alert_events, alert_events.c.alert_id == alerts.c.id)
                .where(alert_events.c.event == "fired")))
            rows = c.execute(sa.text("SELECT count(*) FROM mentions")).scalar_one()
            mb = c.execute(sa.text("SELECT pg_total_relation_size('mentions')")).scalar_one() / 1e6
        deliveries = store.list_deliveries()
        done = (all(totals.get(n, 0) >= m for n, m in load.made.items())
                and all(t in fired for t in load.angry_threads)
                and (deliveries or not load.angry_threads)
                and all(d["status"] == "sent" for d in deliveries))
        if done or time.monotonic() > deadline:
            break
        time.sleep(2)
    keys = [p["metadata"]["event_payload"]["delivery"] for p in slack.posted]
    stored = sum(totals.values())
    report = [f"stored per source: {dict(sorted(totals.items()))}",
              f"generated per source: {dict(sorted(load.made.items()))}",

              f"angry threads paged: {sum(1 for t in load.angry_threads if fired[t] == 1)} of "
              f"{len(load.angry_threads)}; alerts fired twice: "
              f"{[k for k, n in fired.items() if n > 1]}",
              f"messages: {len(deliveries)} deliveries, "
              f"{sum(d['status'] == 'sent' for d in deliveries)} sent; "
              f"{len(keys)} Slack posts, {len(set(keys))} distinct keys"]
    ok = (totals == dict(load.made)
          and all(fired[t] == 1 for t in load.angry_threads)
          and all(n == 1 for n in fired.values())
          and sorted(keys) == sorted(d["key"] for d in deliveries)
          and all(d["status"] == "sent" for d in deliveries))
    return {"ok": ok, "report": report, "stored": stored, "rows": rows, "mb": mb,
            "noise": load.n - sum(load.made.values())}


if __name__ == "__main__":
    main()
