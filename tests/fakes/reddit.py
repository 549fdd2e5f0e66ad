"""A local Reddit API for praw to talk to, over real HTTP on 127.0.0.1.

It answers what praw asks of a read-only script app, in the shapes Reddit documents:

- ``POST /api/v1/access_token`` (HTTP Basic client id and secret, form
  ``grant_type=client_credentials``) -> ``{"access_token", "token_type": "bearer",
  "expires_in", "scope"}``; a wrong secret -> 401 ``{"message": "Unauthorized", "error":
  401}``;
- ``GET /r/{a+b}/comments``, ``/r/{a+b}/new``, ``/user/{u}/m/{multi}/comments`` and
  ``/new``, and ``/r/all/search?q=...&sort=new`` ->
  ``{"kind": "Listing", "data": {"after", "before", "dist", "modhash", "children":
  [{"kind": "t1" | "t3", "data": {...}}]}}``, newest first, ``limit`` and ``after`` paging;
- ``x-ratelimit-remaining`` / ``-used`` / ``-reset`` headers on API answers; a 401 on the
  API carries ``www-authenticate: Bearer realm="reddit", error="invalid_token"``.

Faults are queued per path: ``fail(path, status, times, headers=..., delay=...)``.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.server import LocalServer, QuietServer

CLIENT_ID, CLIENT_SECRET, TOKEN = "cid-123", "secret-456", "token-789"


def comment(cid: str, t: float, body: str, *, link: str = "t3_p1", sub: str = "acme",
            author: str = "alice", score: int = 1) -> dict[str, Any]:
    return {"kind": "t1", "data": {
        "id": cid, "name": f"t1_{cid}", "body": body, "author": author,
        "created_utc": t, "link_id": link, "parent_id": link, "score": score,
        "permalink": f"/r/{sub}/comments/{link[3:]}/post/{cid}/", "subreddit": sub,
        "subreddit_id": "t5_2qh1i", "link_title": "A post", "ups": score, "downs": 0}}


def submission(sid: str, t: float, title: str, *, selftext: str = "", sub: str = "acme",
               author: str = "bob", comments: int = 0) -> dict[str, Any]:
    return {"kind": "t3", "data": {
        "id": sid, "name": f"t3_{sid}", "title": title, "selftext": selftext,
        "author": author, "created_utc": t, "score": 1, "num_comments": comments,
        "permalink": f"/r/{sub}/comments/{sid}/post/", "subreddit": sub,
        "url": f"https://www.reddit.com/r/{sub}/comments/{sid}/post/", "is_self": True,
        "upvote_ratio": 1.0, "over_18": False}}


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: Any = None


@dataclass
class RedditState:
    items: list[dict[str, Any]] = field(default_factory=list)   # comments and submissions
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    multis: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # -> subreddits
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, *items: dict[str, Any]) -> None:
        with self.lock:
            self.items.extend(items)

    def fail(self, path: str, status: int, times: int = 1, **kw: Any) -> None:
        with self.lock:
            self.faults.setdefault(path, []).extend(Fault(status, **kw) for _ in range(times))

    def paths(self) -> list[str]:
        with self.lock:
            return [p for _, p, _ in self.requests]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        st = self.server.state
        u = urlsplit(self.path)
        path = u.path.rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        with st.lock:
            st.requests.append((self.command, path, q))
            queue = st.faults.get(path)
            fault = queue.pop(0) if queue else None
        if fault is not None:
            time.sleep(fault.delay)
            if fault.status:
                self._send(fault.status, fault.body if fault.body is not None else
                           {"message": "error", "error": fault.status}, fault.headers)
                return
        if path == "/api/v1/access_token":
            self._token(body)
            return
        if self.headers.get("Authorization") != f"bearer {TOKEN}":
            self._send(401, {"message": "Unauthorized", "error": 401},
                       {"www-authenticate": 'Bearer realm="reddit", error="invalid_token"'})
            return
        m = re.fullmatch(r"/r/([A-Za-z0-9_+]+)/(comments|new|search)", path)
        multi = re.fullmatch(r"/user/([\w-]+)/m/(\w+)/(comments|new)", path)
        if multi is not None and (multi.group(1), multi.group(2)) in st.multis:
            self._listing(st.multis[(multi.group(1), multi.group(2))], multi.group(3), q)
            return
        if m is None:
            self._send(404, {"message": "Not Found", "error": 404})
            return
        self._listing(m.group(1).split("+"), m.group(2), q)

    def _token(self, body: str) -> None:
        want = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if self.headers.get("Authorization") != want:
            self._send(401, {"message": "Unauthorized", "error": 401})
            return
        if parse_qs(body).get("grant_type") != ["client_credentials"]:
            self._send(400, {"error": "unsupported_grant_type"})
            return
        self._send(200, {"access_token": TOKEN, "token_type": "bearer", "expires_in": 86400,
                         "scope": "*"})

    def _listing(self, subs: list[str], kind: str, q: dict[str, str]) -> None:
        st = self.server.state
        with st.lock:
            items = list(st.items)
        want = "t1" if kind == "comments" else "t3"
        chosen = [i for i in items if i["kind"] == want]
        if kind == "search":
            words = [w.strip('"').lower() for w in re.split(r"\s+OR\s+", q.get("q", ""))]
            chosen = [i for i in chosen if any(
                w and w in (i["data"]["title"] + " " + i["data"]["selftext"]).lower()
                for w in words)]
        elif subs != ["all"]:
            chosen = [i for i in chosen if i["data"]["subreddit"] in subs]
        chosen.sort(key=lambda i: (i["data"]["created_utc"], int(i["data"]["id"], 36)),
                    reverse=True)
        if q.get("after"):
            names = [i["data"]["name"] for i in chosen]
            start = names.index(q["after"]) + 1 if q["after"] in names else len(names)
            chosen = chosen[start:]
        limit = min(int(q.get("limit", 25)), 100)
        page = chosen[:limit]
        after = page[-1]["data"]["name"] if len(chosen) > limit else None
        self._send(200, {"kind": "Listing", "data": {
            "after": after, "before": None, "dist": len(page), "modhash": None,
            "geo_filter": "", "children": page}},
            {"x-ratelimit-remaining": "995.0", "x-ratelimit-used": "5",
             "x-ratelimit-reset": "300"})

    do_GET = do_POST = _handle


class _Server(QuietServer):
    state: RedditState


class FakeReddit(LocalServer):
    """``with FakeReddit() as reddit:`` -> ``reddit.url``, ``reddit.state``."""

    server_class = _Server

    def __init__(self) -> None:
        super().__init__(_Handler)
        self.server.state = self.state = RedditState()  # type: ignore[attr-defined]
