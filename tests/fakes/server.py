"""What every local HTTP peer here shares: a threaded server on 127.0.0.1, a free port,
started and stopped with ``with``, quiet about clients the tests kill mid-request."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client killed mid-request (the point of some tests)


class LocalServer:
    """``with Peer() as peer: peer.url``. Subclasses set ``server_class`` and call
    ``super().__init__(handler)`` before filling the server's state."""

    server_class: type[QuietServer] = QuietServer

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = self.server_class(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
