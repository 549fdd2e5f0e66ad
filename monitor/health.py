"""``/healthz`` and ``/metrics``: is this instance watching, and what is it doing.

A monitor that silently stops is worse than none, so ``/healthz`` answers 503 (with
the reasons, as JSON) when:

- the database does not answer;
- a source this instance polls has not answered for longer than its threshold (the
  ``run.stale`` setting, or three of its intervals if longer): a stopped source, bad
  credentials, a feed that moved;
- the outbox is stuck: a message has waited longer than ``run.outbox_stuck`` (Slack or
  the mail server refusing, a channel misconfigured);

and 200 otherwise. ``/metrics`` is the Prometheus text format (``monitor.metrics``).
Both show names, times and counts only: no URLs, no error texts (they can carry
tokens or private feed addresses; ``stormwatch status`` shows them to whoever can
read the database), nothing from posts.

The server binds to 127.0.0.1 by default (``run.health``): put a proxy or the scraper
on the same host, or bind wider knowingly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from monitor import metrics
from monitor.clock import Clock, SystemClock
from monitor.store import Store

log = logging.getLogger("stormwatch")


@dataclass
class Watched:
    """What this instance answers for: its sources (name -> interval) and since when."""

    sources: Callable[[], dict[str, float]]   # held now: name -> polling interval (s)
    started: float
    behind: Callable[[], int] = field(default=lambda: 0)  # feed entries not counted yet


class Health:
    def __init__(self, store: Store, watched: Watched, *, stale: float,
                 outbox_stuck: float, clock: Clock | None = None) -> None:
        self.store, self.watched = store, watched
        self.stale, self.outbox_stuck = stale, outbox_stuck
        self.clock = clock or SystemClock()

    def check(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, report). Every check runs; the report says which failed and why."""
        now = self.clock.now()
        problems: list[str] = []
        report: dict[str, Any] = {"status": "ok", "problems": problems}
        try:
            self.store.ping()
            report["database"] = "ok"
        except Exception:  # noqa: BLE001 - the point of the check
            report["database"] = "unreachable"
            problems.append("database: does not answer")
            report["status"] = "failing"
            return False, report
        try:
            states = self.store.load_sources()
            held = self.watched.sources()
            srcs: dict[str, Any] = {}
            for name, interval in sorted(held.items()):
                st = states.get(name)
                last = st.last_success if st is not None and st.last_success else None
                limit = max(self.stale, 3 * interval)
                age = now - (last if last is not None else self.watched.started)
                ok = age <= limit
                srcs[name] = {"ok": ok, "last_success_age": round(age, 1),
                              "threshold": limit,
                              "errors_in_a_row": st.errors_in_a_row if st else 0}
                if not ok:
                    problems.append(f"source {name}: no answer for {age:.0f} s "
                                    f"(threshold {limit:.0f} s)")
            report["sources"] = srcs
            depth, oldest = self.store.outbox_backlog()
            metrics.OUTBOX_DEPTH.set(depth)
            wait = now - oldest if oldest is not None else 0.0
            report["outbox"] = {"ok": wait <= self.outbox_stuck, "unsent": depth,
                                "oldest_age": round(wait, 1), "threshold": self.outbox_stuck}
            if wait > self.outbox_stuck:
                problems.append(f"outbox: a message has waited {wait:.0f} s "
                                f"(threshold {self.outbox_stuck:.0f} s)")
            behind = self.watched.behind()
            metrics.FEED_BEHIND.set(behind)
            report["detectors"] = {"behind": behind}
        except Exception:  # noqa: BLE001 - the database went away mid-check
            report["database"] = "unreachable"
            problems.append("database: failed mid-check")
        if problems:
            report["status"] = "failing"
        return not problems, report


class HealthServer:
    """``/healthz`` and ``/metrics`` on ``host:port`` (port 0: any free one; ``url`` says
    which), in a thread of its own."""

    def __init__(self, health: Health, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        handler = _handler(health)
        self.server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), handler)
        self.server.daemon_threads = True
        bound = self.server.server_address
        self.url = f"http://{bound[0]}:{bound[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="health",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("health and metrics on %s/healthz and %s/metrics", self.url, self.url)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass  # scrapes every few seconds are not news

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                ok, report = health.check()
                self._send(200 if ok else 503, orjson.dumps(report, option=orjson.OPT_INDENT_2),
                           "application/json")
            elif path == "/metrics":
                health.check()  # refreshes the gauges read from the database
                self._send(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b"not found: try /healthz or /metrics\n", "text/plain")

    return Handler
