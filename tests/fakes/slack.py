"""A local Slack incoming webhook over real HTTP: records each message, answers ``ok``
or, first, the failures queued (status, body) as Slack's webhooks answer them."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.server import LocalServer, QuietServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            failure = self.server.failures.pop(0) if self.server.failures else None
            if failure is None:
                self.server.messages.append(json.loads(body))
        status, text = failure or (200, "ok")
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(QuietServer):
    messages: list[dict[str, Any]]
    failures: list[tuple[int, str]]
    lock: threading.Lock


class FakeSlack(LocalServer):
    """``with FakeSlack() as slack:`` -> ``slack.url`` (a webhook), ``slack.messages``."""

    server_class = _Server

    def __init__(self) -> None:
        super().__init__(_Handler)
        srv: _Server = self.server  # type: ignore[assignment]
        srv.messages, srv.failures, srv.lock = [], [], threading.Lock()
        self.messages, self.failures = srv.messages, srv.failures
        self.url = f"{self.url}/services/T0/B0/X"


TOKEN = "xoxb-test-token"


class _ApiHandler(BaseHTTPRequestHandler):
    """Slack's Web API as its reference documents it: HTTP 200 with ``ok`` true or false;
    ``chat.postMessage`` (JSON body) answers the message's ``ts``; ``conversations.history``
    lists the channel's top-level messages newest first and ``conversations.replies`` a
    thread's, each with its ``metadata`` only when ``include_all_metadata`` is true."""

    server: _ApiServer

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authed(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer({"ok": False, "error": "invalid_auth"})
            return False
        return True

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        if not self._authed():
            return
        if not self.path.endswith("/chat.postMessage"):
            self._answer({"ok": False, "error": "unknown_method"})
            return
        srv = self.server
        if srv.outage:  # Slack is down: a 503 from its edge, nothing posted
            data = b"upstream connect error"
            self.send_response(503)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        with srv.lock:  # a ts is the posting time, in microseconds, unique in the channel
            srv.seq = max(srv.seq + 1, int(time.time() * 1e6))
            ts = f"{srv.seq // 1_000_000}.{srv.seq % 1_000_000:06d}"
            srv.posted.append({**body, "ts": ts})
            stall = srv.stall
        if stall:  # recorded, but the answer takes its time (the sender dies meanwhile)
            stall.wait(60)
        self._answer({"ok": True, "channel": body.get("channel"), "ts": ts,
                      "message": {"type": "message", "text": body.get("text"), "ts": ts}})

    def do_GET(self) -> None:  # noqa: N802
        from urllib.parse import parse_qs, urlsplit

        if not self._authed():
            return
        parts = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with_meta = q.get("include_all_metadata") == "true"
        oldest = float(q.get("oldest", 0))
        with self.server.lock:
            posted = list(self.server.posted)
        if parts.path.endswith("/conversations.history"):
            found = [p for p in posted if not p.get("thread_ts")]
        elif parts.path.endswith("/conversations.replies"):
            found = [p for p in posted if p["ts"] == q.get("ts") or
                     p.get("thread_ts") == q.get("ts")]
        else:
            self._answer({"ok": False, "error": "unknown_method"})
            return
        messages = []
        for p in reversed(found):
            if float(p["ts"]) < oldest and p["ts"] != q.get("ts"):
                continue
            m = {"type": "message", "text": p.get("text"), "ts": p["ts"]}
            if with_meta and p.get("metadata"):
                m["metadata"] = p["metadata"]
            messages.append(m)
        self._answer({"ok": True, "messages": messages, "has_more": False})


class _ApiServer(QuietServer):
    posted: list[dict[str, Any]]
    lock: threading.Lock
    seq: int
    stall: threading.Event | None
    outage: bool


class FakeSlackApi(LocalServer):
    """``with FakeSlackApi() as slack:`` -> ``slack.api`` (the Web API base URL),
    ``slack.posted`` (every message posted, with its ``ts``). ``slack.stall()`` makes the
    next answers to ``chat.postMessage`` wait (after recording) until ``slack.release()``."""

    server_class = _ApiServer

    def __init__(self) -> None:
        super().__init__(_ApiHandler)
        srv: _ApiServer = self.server  # type: ignore[assignment]
        srv.posted, srv.lock, srv.seq, srv.stall = [], threading.Lock(), 0, None
        srv.outage = False  # set it (``slack.server.outage = True``) for a Slack outage
        self.posted = srv.posted
        self.api = f"{self.url}/api"

    def stall(self) -> None:
        self.server.stall = threading.Event()  # type: ignore[attr-defined]

    def release(self) -> None:
        srv: _ApiServer = self.server  # type: ignore[assignment]
        if srv.stall is not None:
            srv.stall.set()
        srv.stall = None
