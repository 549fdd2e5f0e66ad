"""Bluesky: the Jetstream subscription (low latency) and authenticated search (polling).

**Jetstream** (``JetstreamSubscription``): one websocket to a Jetstream instance,
``/subscribe?wantedCollections=app.bsky.feed.post``, JSON frames
``{did, time_us, kind, commit: {operation, collection, rkey, record, cid}}`` for the whole
network; posts are matched against the topics by the engine (client-side). Every second
(or 500 posts) the posts so far are handed over with the cursor, ``time_us`` of the last
frame; they are committed together. On (re)connection it asks for the stream from the
committed cursor less ``rewind`` seconds (Jetstream's advice for gapless playback);
what is replayed twice is dropped by id (the post's at-URI).

**Firehose** (``FirehoseSubscription``): ``com.atproto.sync.subscribeRepos`` of a relay
or a PDS, the same way, for where no Jetstream runs; the cursor is the event ``seq``.

**Search** (``BlueskySearch``): ``app.bsky.feed.searchPosts`` needs a logged-in session
(public search answers 403): the account's handle and an app password, from the
environment; one login per process, the session refreshed by the SDK, a new login only
when it is refused. One query per topic term (Bluesky's search ANDs words), ``sort=
latest``, ``since`` the newest post seen less an overlap, cursor paging. Each query's
newest time and recent ids are its cursor. The same session then refreshes the likes,
reposts, replies and quotes of the active threads' root posts (``getPosts``, 25 a call):
growth counts as the threads' and topics' ``engagement`` at that minute.

Thread = ``record.reply.root.uri`` or the post's own at-URI (as for dumps:
:func:`connectors.records.parse_jetstream`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlencode

import orjson
import websockets
from atproto_client import Client
from atproto_client import exceptions as atx
from atproto_client.request import Request

from connectors.base import Cursor, Emit, Fetched, SourceError, combined
from connectors.records import BLUESKY, POST, Ignore, Skip, parse_jetstream
from monitor.clock import Clock, SystemClock
from monitor.models import Mention, TimeFormatError, iso, parse_time
from monitor.topics import Topic

log = logging.getLogger("stormwatch")

JETSTREAM = "wss://jetstream2.us-east.bsky.network/subscribe"
REWIND = 5.0             # seconds replayed on reconnection
BATCH_SECONDS = 1.0
BATCH_MAX = 500
MAX_FRAME = 1 << 20      # Jetstream frames are small; a bigger one is refused
LOOKBACK = 3600.0        # the first search of a term reaches back an hour
SEARCH_OVERLAP = 900.0   # search results are indexed late: look back this much
SEARCH_PAGES = 10        # at most 1,000 posts per term per poll
TIMEOUT = 15.0
GET_POSTS_MAX = 25       # app.bsky.feed.getPosts takes at most 25 URIs
PREFIX = f"{BLUESKY}:"


class _Stream:
    """A websocket subscription handed over in batches: connect, map failures to
    SourceError, and every ``batch_seconds`` (or ``batch_max`` posts) emit the posts with
    the position reached. Subclasses say where to connect and how to read a frame."""

    name = ""
    kind = ""         # the config key, for errors
    what = ""         # how errors call it

    def __init__(self, url: str, *, batch_seconds: float, batch_max: int,
                 open_timeout: float, max_frame: int) -> None:
        self.url = url
        self.batch_seconds, self.batch_max = batch_seconds, batch_max
        self.open_timeout, self.max_frame = open_timeout, max_frame

    def address(self, cursor: Cursor | None) -> str:
        raise NotImplementedError

    def decode(self, raw: str | bytes) -> tuple[int | None, list[Mention], str | None]:
        """(position reached, posts, problem) of one frame."""
        raise NotImplementedError

    def cursor(self, position: int) -> Cursor:
        raise NotImplementedError

    def position(self, cursor: Cursor | None) -> int | None:
        """Where a cursor stands (None: nowhere yet)."""
        raise NotImplementedError

    async def stream(self, cursor: Cursor | None, emit: Emit) -> None:
        try:
            async with websockets.connect(self.address(cursor), open_timeout=self.open_timeout,
                                          ping_interval=20, ping_timeout=20, close_timeout=2,
                                          max_size=self.max_frame) as ws:
                log.info("%s: connected to %s", self.name, self.url)
                await self._read(ws, emit, self.position(cursor))
        except websockets.ConnectionClosed as e:
            raise SourceError(f"the {self.what} connection to {self.url} dropped "
                              f"({_closed(e)})") from None
        except websockets.InvalidStatus as e:
            code = e.response.status_code
            raise SourceError(f"{self.url} refused the subscription (HTTP {code})",
                              setting=f"sources.bluesky.{self.kind}" if code in (400, 404)
                              else None) from None
        except (OSError, TimeoutError, websockets.InvalidHandshake,
                websockets.InvalidURI) as e:
            raise SourceError(f"cannot connect to {self.url}: {type(e).__name__}: {e}") \
                from None

    async def _read(self, ws: Any, emit: Emit, start: int | None) -> None:
        loop = asyncio.get_running_loop()
        batch: list[Mention] = []
        warnings: list[str] = []
        # the replayed rewind must not move the committed cursor backwards
        reached: int | None = start
        emitted: int | None = start
        due = loop.time() + self.batch_seconds
        while True:
            raw = None
            with contextlib.suppress(TimeoutError):
                raw = await asyncio.wait_for(ws.recv(), timeout=max(0.01, due - loop.time()))
            if raw is not None:
                position, posts, problem = self.decode(raw)
                if problem and len(warnings) < 3:
                    warnings.append(problem)
                if position is not None:
                    reached = max(position, reached or position)
                batch.extend(posts)
            if loop.time() >= due or len(batch) >= self.batch_max:
                if reached is not None and (batch or reached != emitted or warnings):
                    await emit(Fetched(batch, self.cursor(reached), warnings))
                    batch, warnings, emitted = [], [], reached
                due = loop.time() + self.batch_seconds


class JetstreamSubscription(_Stream):
    name, kind, what = "bluesky:jetstream", "jetstream", "Jetstream"

    def __init__(self, url: str = JETSTREAM, *, rewind: float = REWIND,
                 batch_seconds: float = BATCH_SECONDS, batch_max: int = BATCH_MAX,
                 open_timeout: float = 10.0) -> None:
        super().__init__(url, batch_seconds=batch_seconds, batch_max=batch_max,
                         open_timeout=open_timeout, max_frame=MAX_FRAME)
        self.rewind = rewind

    def address(self, cursor: Cursor | None) -> str:
        params: list[tuple[str, str]] = [("wantedCollections", POST)]
        at = self.position(cursor)
        if at is not None:
            params.append(("cursor", str(max(0, at - int(self.rewind * 1e6)))))
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}{urlencode(params)}"

    def cursor(self, position: int) -> Cursor:
        return {"time_us": position}

    def position(self, cursor: Cursor | None) -> int | None:
        t = (cursor or {}).get("time_us")
        return t if isinstance(t, int) else None

    def decode(self, raw: str | bytes) -> tuple[int | None, list[Mention], str | None]:
        try:
            frame = orjson.loads(raw)
            if not isinstance(frame, dict):
                raise ValueError("not an object")
        except ValueError:
            return None, [], f"a malformed Jetstream frame was skipped: {raw[:80]!r}"
        t = frame.get("time_us")
        position = t if isinstance(t, int) and not isinstance(t, bool) else None
        try:
            return position, [parse_jetstream(frame, [])], None
        except (Skip, Ignore):
            return position, [], None


def _closed(e: websockets.ConnectionClosed) -> str:
    frame = e.rcvd or e.sent
    if frame is None:
        return "no close frame: the connection was cut"
    return f"code {frame.code}" + (f", {frame.reason}" if frame.reason else "")


class FirehoseSubscription(_Stream):
    """The repo firehose, ``com.atproto.sync.subscribeRepos``, of a relay or a PDS: binary
    DAG-CBOR frames (decoded by the atproto SDK), a CAR of records per commit. For a
    self-hosted PDS or where no Jetstream runs; Jetstream is lighter for the network.
    The cursor is the last committed event's ``seq``; a reconnection resumes after it."""

    name, kind, what = "bluesky:firehose", "firehose", "firehose"

    def __init__(self, url: str, *, batch_seconds: float = BATCH_SECONDS,
                 batch_max: int = BATCH_MAX, open_timeout: float = 10.0) -> None:
        base = url.rstrip("/")
        if not base.endswith("/xrpc/com.atproto.sync.subscribeRepos"):
            base = base.removesuffix("/xrpc") + "/xrpc/com.atproto.sync.subscribeRepos"
        super().__init__(base, batch_seconds=batch_seconds, batch_max=batch_max,
                         open_timeout=open_timeout, max_frame=5 << 20)

    def address(self, cursor: Cursor | None) -> str:
        seq = self.position(cursor)
        return self.url if seq is None else f"{self.url}?{urlencode({'cursor': seq})}"

    def cursor(self, position: int) -> Cursor:
        return {"seq": position}

    def position(self, cursor: Cursor | None) -> int | None:
        seq = (cursor or {}).get("seq")
        return seq if isinstance(seq, int) else None

    def decode(self, raw: str | bytes) -> tuple[int | None, list[Mention], str | None]:
        if isinstance(raw, str):
            return None, [], "the firehose sent a text frame; skipped"
        return firehose_posts(raw)


def firehose_posts(raw: bytes) -> tuple[int | None, list[Mention], str | None]:
    """(seq, new posts, problem) of one subscribeRepos frame."""
    from atproto_core.car import CAR
    from atproto_core.cid import CID
    from atproto_subscription.frames import Frame, MessageFrame

    try:
        frame = Frame.from_bytes(raw)
    except Exception as e:  # noqa: BLE001 - hostile bytes: the SDK raises several kinds
        return None, [], f"an undecodable firehose frame was skipped ({type(e).__name__})"
    if not isinstance(frame, MessageFrame):
        return None, [], f"the firehose sent an error frame: {frame.body}"
    body = frame.body
    seq = body.get("seq") if isinstance(body.get("seq"), int) else None
    if frame.type != "#commit" or not body.get("ops"):
        return seq, [], None
    try:
        blocks = CAR.from_bytes(body["blocks"]).blocks
    except Exception as e:  # noqa: BLE001
        return seq, [], f"a commit's records could not be read ({type(e).__name__})"
    posts = []
    time_us = None
    with contextlib.suppress(TimeFormatError, TypeError):
        time_us = int(parse_time(body.get("time")) * 1e6)
    for op in body["ops"]:
        path = op.get("path") or ""
        if op.get("action") != "create" or not path.startswith(POST + "/"):
            continue
        cid = op.get("cid")
        with contextlib.suppress(Exception):  # the SDK hands op CIDs over as raw bytes
            cid = CID.decode(cid) if isinstance(cid, bytes) else cid
        record = blocks.get(cid)
        if not isinstance(record, dict):
            continue
        frame_like = {"did": body.get("repo"), "time_us": time_us, "kind": "commit",
                      "commit": {"operation": "create", "collection": POST,
                                 "rkey": path.split("/", 1)[1], "record": _plain(record)}}
        with contextlib.suppress(Skip, Ignore):
            posts.append(parse_jetstream(frame_like, []))
    return seq, posts, None


def _plain(value: Any) -> Any:
    """DAG-CBOR decoded values (CIDs, bytes) as JSON-like ones."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


# --------------------------------------------------------------------------- search


def search_terms(topics: Sequence[Topic]) -> list[tuple[str, str]]:
    """(cursor key, query) per topic term; phrases quoted."""
    out = []
    for topic in topics:
        for term in topic.terms:
            word = term.lstrip("@").replace('"', "").strip()
            if word:
                out.append((f"search:{topic.name}:{term}",
                            f'"{word}"' if " " in word else word))
    return out


class BlueskySearch:
    name = "bluesky:search"

    def __init__(self, *, handle: str, app_password: str, topics: Sequence[Topic],
                 service: str = "https://bsky.social", interval: float = 120.0,
                 clock: Clock | None = None, timeout: float = TIMEOUT,
                 client_factory: Callable[[str], Client] | None = None,
                 targets: Callable[[], list[str]] | None = None) -> None:
        self.handle, self._password = handle, app_password
        self.targets = targets  # thread ids whose root post's engagement to refresh
        self.service = service
        self.interval = interval
        self.clock = clock or SystemClock()
        self.terms = search_terms(topics)
        self._factory = client_factory or (
            lambda base: Client(base_url=base, request=Request(timeout=timeout)))
        self._client: Client | None = None

    def close(self) -> None:
        self._client = None

    def _session(self, fresh: bool = False) -> Client:
        if self._client is None or fresh:
            client = self._factory(self.service)
            try:
                client.login(self.handle, self._password, fetch_bsky_profile=False)
            except atx.UnauthorizedError as e:
                raise SourceError(
                    f"Bluesky refused the login of {self.handle} ({_status(e)}): check the "
                    "handle and use an app password (Settings > Privacy and security > App "
                    "passwords)", setting="sources.bluesky.handle / app_password") from None
            except atx.AtProtocolError as e:
                raise _error(e, f"logging in at {self.service}") from None
            self._client = client
        return self._client

    def poll(self, cursor: Cursor | None) -> Iterator[Fetched]:
        """Each term in turn (a term that fails does not stop the others: the failures
        are raised together at the end), then the engagement refresh."""
        state = dict(cursor or {})
        failed: list[SourceError] = []
        for key, query in self.terms:
            try:
                mentions, state[key], warnings = self._search(key, query, state.get(key))
            except SourceError as e:
                failed.append(e)
                if e.setting:  # the account itself is refused: no term will do better
                    break
                continue
            yield Fetched(mentions, dict(state), warnings)
        if self.targets is not None and not failed:
            updates = self.engagement([t for t in self.targets() if t.startswith(PREFIX)])
            if updates:
                yield Fetched([], None, updates=updates)
        if failed:
            raise combined(failed)

    def engagement(self, thread_ids: Sequence[str]) -> list[tuple[str, dict[str, int]]]:
        """Current likes, reposts, replies and quotes of these threads' root posts, with
        ``app.bsky.feed.getPosts``, 25 a call."""
        uris = [t.removeprefix(PREFIX) for t in thread_ids]
        out = []
        for i in range(0, len(uris), GET_POSTS_MAX):
            chunk = uris[i:i + GET_POSTS_MAX]
            resp = self._call(lambda c, u=chunk: c.app.bsky.feed.get_posts(params={"uris": u}))
            for post in resp.posts:
                out.append((PREFIX + post.uri, _counts(post)))
        return out

    def _search(self, key: str, query: str, cur: dict[str, Any] | None,
                ) -> tuple[list[Mention], dict[str, Any], list[str]]:
        now = self.clock.now()
        newest = float(cur["newest"]) if cur else now - LOOKBACK
        seen: dict[str, float] = dict(cur.get("seen", {})) if cur else {}
        since = newest - SEARCH_OVERLAP if cur else newest
        mentions: list[Mention] = []
        warnings: list[str] = []
        page_cursor = None
        for _ in range(SEARCH_PAGES):
            params = {"q": query, "sort": "latest", "since": iso(since), "limit": 100}
            if page_cursor:
                params["cursor"] = page_cursor
            resp = self._call(lambda c, p=params: c.app.bsky.feed.search_posts(params=p))
            older = False
            for post in resp.posts:
                m = post_mention(post)
                if m is None:
                    continue
                # where the post sorts: the author's createdAt, unless the AppView saw it
                # earlier (a post dated ahead must not move the cursor past real ones)
                sort_at = min(m.created_at, _time(post.indexed_at) or m.created_at, now)
                if sort_at < since:
                    older = True
                    continue
                if m.id in seen:
                    continue
                seen[m.id] = sort_at
                mentions.append(m)
            page_cursor = resp.cursor
            if older or not page_cursor or not resp.posts:
                break
        else:
            warnings.append(f"{key}: more than {SEARCH_PAGES * 100} posts since the last "
                            "poll; older ones may be missed (poll more often)")
        newest = max([newest, *seen.values()])
        seen = {k: t for k, t in seen.items() if t >= newest - SEARCH_OVERLAP}
        return mentions, {"newest": newest, "seen": seen}, warnings

    def _call(self, fn: Callable[[Client], Any]) -> Any:
        client = self._session()
        try:
            return fn(client)
        except atx.UnauthorizedError:
            try:  # an expired or revoked session: log in again, once
                return fn(self._session(fresh=True))
            except atx.AtProtocolError as e:
                raise _error(e, "searching posts") from None
        except atx.AtProtocolError as e:
            raise _error(e, "searching posts") from None


def post_mention(post: Any) -> Mention | None:
    """A ``PostView`` of searchPosts / getPosts -> Mention (None if it is not a post)."""
    record = post.record
    text = getattr(record, "text", None)
    if not isinstance(text, str):
        return None
    created = None
    with contextlib.suppress(TimeFormatError, TypeError):
        created = parse_time(getattr(record, "created_at", None))
    if created is None:
        try:
            created = parse_time(post.indexed_at)
        except (TimeFormatError, TypeError):
            return None
    reply = getattr(record, "reply", None)
    root = getattr(getattr(reply, "root", None), "uri", None)
    parent = getattr(getattr(reply, "parent", None), "uri", None)
    handle = getattr(post.author, "handle", None) or post.author.did
    rkey = post.uri.rsplit("/", 1)[-1]
    metrics = _counts(post)
    langs = getattr(record, "langs", None)
    return Mention(id=f"{BLUESKY}:{post.uri}", text=text, created_at=created, source=BLUESKY,
                   thread_id=f"{BLUESKY}:{root}" if root else "",
                   parent_id=f"{BLUESKY}:{parent}" if parent else None, author=handle,
                   url=f"https://bsky.app/profile/{handle}/post/{rkey}", metrics=metrics,
                   lang=langs[0] if langs else None)


def _counts(post: Any) -> dict[str, int]:
    return {k: v for k, v in (("likes", post.like_count), ("reposts", post.repost_count),
                              ("replies", post.reply_count), ("quotes", post.quote_count))
            if isinstance(v, int)}


def _time(value: Any) -> float | None:
    try:
        return parse_time(value)
    except (TimeFormatError, TypeError):
        return None


def _status(e: atx.AtProtocolError) -> str:
    response = getattr(e, "response", None)
    return str(getattr(response, "status_code", "")) or type(e).__name__


def _error(e: atx.AtProtocolError, doing: str) -> SourceError:
    if isinstance(e, atx.RateLimitExceededError):
        return SourceError(f"Bluesky answered 429 (rate limited) while {doing}",
                           retry_after=e.retry_after)
    if isinstance(e, atx.UnauthorizedError):
        return SourceError(f"Bluesky refused the session while {doing} ({_status(e)})",
                           setting="sources.bluesky.handle / app_password")
    if isinstance(e, atx.InvokeTimeoutError):
        return SourceError(f"Bluesky timed out while {doing}")
    if isinstance(e, atx.NetworkError) and getattr(e, "response", None) is None:
        cause = e.__cause__
        return SourceError(f"cannot reach Bluesky while {doing}: {type(cause).__name__}")
    return SourceError(f"Bluesky failed while {doing}: {str(e)[:200]}")
