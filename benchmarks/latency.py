"""Alert latency: from the page holding the mention that triggers an alert entering the
ingest loop to the Slack request arriving at a local webhook server.

The daemon runs in-process with the shipped rules, a temporary SQLite database and a
local HTTP server standing in for Slack's incoming webhook. A scripted source hands
over, once a second, a page that makes a new complaint thread cross the
``negative-thread-taking-off`` threshold (30 angry replies from 30 people, spread over
ten minutes of event time, so the rule is evaluated while the page is ingested); each
page's alert goes through the outbox to the local Slack. Both times are read from the
same monotonic clock.

What this does not include: the engine evaluates rules at minute boundaries of event
time, so live, an alert fires when the first mention of the next minute arrives (or
the wall-clock tick passes it): up to a minute after the triggering mention.

    python benchmarks/latency.py            # 30 incidents
    python benchmarks/latency.py --incidents 100
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from connectors.base import Cursor, Fetched  # noqa: E402
from monitor import app  # noqa: E402
from monitor.models import Mention  # noqa: E402
from monitor.setup import setup  # noqa: E402
from monitor.store import Store  # noqa: E402
from tests.fakes.slack import FakeSlack  # noqa: E402

ANGRY = "acme lost my refund again, this is terrible and I am furious"


class Incidents:
    """A polling source: each poll, the next incident's page (one thread, 30 replies)."""

    name, interval = "reddit", 1.0

    def __init__(self, count: int) -> None:
        self.count = count
        self.base = time.time() - (count + 1) * 7200  # incidents two hours apart, past

    def close(self) -> None:
        pass

    def poll(self, cursor: Cursor | None) -> Iterator[Fetched]:
        k = (cursor or {}).get("next", 0)
        if k >= self.count:
            return
        t0 = self.base + k * 7200
        page = [Mention(id=f"reddit:t1_{k}x{i}", text=ANGRY, created_at=t0 + 20 * i,
                        source="reddit", thread_id=f"reddit:t3_incident{k}",
                        author=f"angry{k}_{i}") for i in range(30)]
        yield Fetched(page, {"next": k + 1})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--incidents", type=int, default=30)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="stormwatch-latency-")
    with FakeSlack() as slack:
        cfg = os.path.join(tmp, "sw.yaml")
        with open(cfg, "w") as f:
            f.write(f"database: sqlite:///{tmp}/l.db\ntopics:\n  acme: {{terms: [acme]}}\n"
                    f"notify:\n  slack:\n    webhook_url: {slack.url}\n")
        s = setup(cfg)
        store = Store.open(s.config.database)
        daemon = app.build_daemon(s, store)
        daemon.polling = [Incidents(a.incidents)]
        daemon.tick = 1e9  # event time from the pages alone (they replay the past)
        entered: dict[int, float] = {}
        arrived: list[tuple[float, str]] = []
        ingest = daemon._ingest

        def timed_ingest(work: Any) -> None:
            if work.fetched is not None and work.fetched.mentions:
                k = int(work.fetched.mentions[0].thread_id.rsplit("incident", 1)[1])
                entered[k] = time.monotonic()
            ingest(work)

        daemon._ingest = timed_ingest  # type: ignore[method-assign]
        handler = slack.server.RequestHandlerClass
        post = handler.do_POST  # type: ignore[attr-defined]

        def timed_post(self: Any) -> None:
            arrived.append((time.monotonic(), ""))
            post(self)

        handler.do_POST = timed_post  # type: ignore[attr-defined]
        t = threading.Thread(target=daemon.run, daemon=True)
        t.start()
        deadline = time.monotonic() + a.incidents * 2 + 30
        while time.monotonic() < deadline:
            fired = [m for m in slack.messages if "negative-thread-taking-off" in m["text"]
                     and " fired" in m["text"]]
            if len(fired) >= a.incidents:
                break
            time.sleep(0.2)
        daemon.stop()
        t.join(15)
        store.close()
    # pair each incident's page with the first Slack request that followed it
    latencies = []
    times = sorted(at for at, _ in arrived)
    for _, start in sorted(entered.items()):
        after = [at for at in times if at >= start]
        if after:
            latencies.append(after[0] - start)
    if len(latencies) < a.incidents:
        sys.exit(f"only {len(latencies)} of {a.incidents} alerts reached Slack")
    ms = sorted(x * 1000 for x in latencies)
    print(f"incidents                     {a.incidents}")
    print(f"alerts at the local Slack     {len(latencies)}")
    print(f"latency median                {statistics.median(ms):8.1f} ms  (bar: < 1000)")
    print(f"latency p90                   {ms[int(0.9 * (len(ms) - 1))]:8.1f} ms")
    print(f"latency max                   {ms[-1]:8.1f} ms")


if __name__ == "__main__":
    main()
