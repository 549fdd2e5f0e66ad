"""A local HTTP server for feeds, with ETag support and a "stall mid-body" fault."""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.server import LocalServer, QuietServer


def rss(title: str, items: list[tuple[str, str, str]]) -> bytes:
    """RSS 2.0 with items (guid, title, RFC 822 date)."""
    body = "".join(
        f"<item><title>{t}</title><link>https://news.example/{g}</link><guid>{g}</guid>"
        f"<pubDate>{d}</pubDate><description>{t}, more at eleven</description></item>"
        for g, t, d in items)
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>{title}</title>'
            f"<link>https://news.example/</link><description>news</description>{body}"
            "</channel></rss>").encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        srv = self.server
        with srv.lock:
            if srv.active.get(self.path):
                srv.overlaps.append(self.path)  # polled twice at once
            srv.active[self.path] = srv.active.get(self.path, 0) + 1
        try:
            time.sleep(srv.delay)
            self._serve()
        finally:
            with srv.lock:
                srv.active[self.path] -= 1

    def _serve(self) -> None:
        srv = self.server
        with srv.lock:
            srv.hits.append(self.path)
            body = srv.feeds.get(self.path)
            stall = self.path in srv.stall
            queue = srv.faults.get(self.path)
            fault = queue.pop(0) if queue else None
        if fault is not None:  # (status, body): served once, before the real feed
            status, payload = fault
            self.send_response(status)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.end_headers()
        if stall:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            srv.stalled.set()
            srv.release.wait(60)
            return
        self.wfile.write(body)


class _Server(QuietServer):
    feeds: dict[str, bytes]
    faults: dict[str, list[tuple[int, bytes]]]
    stall: set[str]
    hits: list[str]
    lock: threading.Lock
    stalled: threading.Event
    release: threading.Event
    active: dict[str, int]
    overlaps: list[str]
    delay: float


class FeedServer(LocalServer):
    """``with FeedServer() as fs: fs.feeds["/a.xml"] = rss(...); fs.url + "/a.xml"``.
    ``fs.server.delay``: seconds each answer waits (so that overlapping polls overlap)."""

    server_class = _Server

    def __init__(self) -> None:
        super().__init__(_Handler)
        srv: _Server = self.server  # type: ignore[assignment]
        srv.feeds, srv.stall, srv.hits, srv.faults = {}, set(), [], {}
        srv.lock = threading.Lock()
        srv.stalled, srv.release = threading.Event(), threading.Event()
        srv.active, srv.overlaps, srv.delay = {}, [], 0.0
        self.overlaps = srv.overlaps  # paths requested while a request for them was open
        self.feeds, self.stall, self.faults = srv.feeds, srv.stall, srv.faults
        self.stalled, self.release = srv.stalled, srv.release

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        super().__exit__(*exc)
