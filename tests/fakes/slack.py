"""A local Slack incoming webhook over real HTTP: records each message, answers ``ok``
or, first, the failures queued (status, body) as Slack's webhooks answer them."""

from __future__ import annotations

import json
import threading
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
