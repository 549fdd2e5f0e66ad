"""Alert latency, live: from the page holding the mention that triggers an alert entering
the ingest loop to the Slack request arriving at a local webhook server.

The daemon runs in-process with the shipped rules, a temporary SQLite database and a
local HTTP server standing in for Slack's incoming webhook. A scripted source plays, one
poll a second, incident after incident: a page of 24 angry replies from 24 people to a
new thread over the last eight minutes (not yet enough for
``negative-thread-taking-off``, which asks for 25), then a page with the 25th, dated now.
That reply makes the rule hold: the engine fires at once (a prompt look, not at the
minute's end), the commit wakes the outbox, and the message leaves for Slack. Each
incident's page is timed from entering the ingest loop to the request reaching the
local Slack, on one monotonic clock.

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
    """A polling source: each poll, the next page (24 replies, then the 25th, per thread)."""

    name, interval = "reddit", 1.0

    def __init__(self, count: int) -> None:
        self.count = count

    def close(self) -> None:
        pass

    def poll(self, cursor: Cursor | None) -> Iterator[Fetched]:
        n = (cursor or {}).get("next", 0)
        k, last = divmod(n, 2)
        if k >= self.count:
            return
        now = time.time()
        thread = f"reddit:t3_incident{k}"
        if last:
            page = [Mention(id=f"reddit:t1_{k}x24", text=ANGRY, created_at=now,
                            source="reddit", thread_id=thread, author=f"angry{k}_24")]
        else:
            page = [Mention(id=f"reddit:t1_{k}x{i}", text=ANGRY, created_at=now - 480 + 20 * i,
                            source="reddit", thread_id=thread, author=f"angry{k}_{i}")
                    for i in range(24)]
        yield Fetched(page, {"next": n + 1})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--incidents", type=int, default=30)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="stormwatch-latency-")
    with FakeSlack() as slack:
        cfg = os.path.join(tmp, "sw.yaml")
        with open(cfg, "w") as f:
            f.write(f"database: sqlite:///{tmp}/l.db\ntopics:\n  acme: {{terms: [acme]}}\n"
                    f"notify:\n  channels:\n    care: {{type: slack, webhook_url: {slack.url}}}\n"
                    "run: {health: null}\n")
        s = setup(cfg)
        store = Store.open(s.config.database)
        daemon = app.build_daemon(s, store)
        daemon.polling = [Incidents(a.incidents)]
        entered: dict[int, float] = {}
        arrived: list[tuple[float, str]] = []
        ingest = daemon._ingest

        def timed_ingest(work: Any) -> None:
            if work.fetched is not None and len(work.fetched.mentions) == 1:  # the 25th
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
        deadline = time.monotonic() + a.incidents * 3 + 30
        while time.monotonic() < deadline:
            fired = [m for m in slack.messages if "negative-thread-taking-off" in m["text"]]
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
