"""Bluesky: the Jetstream subscription against a local websocket server (tests/fakes), and
search through the atproto SDK with respx answering in the lexicon's shapes."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
import respx

from connectors.base import Fetched, SourceError
from connectors.bluesky import BlueskySearch, JetstreamSubscription, search_terms
from monitor.clock import FixedClock
from monitor.models import parse_time
from monitor.topics import Topic
from tests.fakes.jetstream import DID, T_US, FakeJetstream, Script, identity, like, post

ROOT = f"at://{DID}/app.bsky.feed.post/3l3qo2vuowo001"


def collect(sub: JetstreamSubscription, cursor: dict[str, Any] | None, until_posts: int,
            timeout: float = 10.0) -> tuple[list[Fetched], BaseException | None]:
    """Run ``stream`` until ``until_posts`` posts were emitted (or it fails)."""
    got: list[Fetched] = []

    async def main() -> BaseException | None:
        done = asyncio.Event()

        async def emit(f: Fetched) -> None:
            got.append(f)
            if sum(len(x.mentions) for x in got) >= until_posts:
                done.set()

        task = asyncio.create_task(sub.stream(cursor, emit))
        waiter = asyncio.create_task(done.wait())
        finished, _ = await asyncio.wait({task, waiter}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        for t in (task, waiter):
            t.cancel()
        if task in finished and task.exception() is not None:
            return task.exception()
        assert finished, "timed out"
        return None

    return got, asyncio.run(main())


def frames() -> list[Any]:
    return [post(1, "Acme support ignored me for a week"),
            like(2), identity(3),
            post(4, "same, acme is awful", root=ROOT),
            "{not json",
            post(5, "unrelated post about cats")]


def test_posts_become_mentions_with_threads_and_the_cursor_follows() -> None:
    script = Script(frames=frames())
    with FakeJetstream(script) as js:
        sub = JetstreamSubscription(js.url, batch_seconds=0.05)
        got, err = collect(sub, None, 3)
    assert err is None
    ms = [m for f in got for m in f.mentions]
    assert [m.text for m in ms] == ["Acme support ignored me for a week",
                                    "same, acme is awful", "unrelated post about cats"]
    first, reply = ms[0], ms[1]
    assert first.id == f"bluesky:{ROOT}" and first.thread_id == first.id
    assert reply.thread_id == f"bluesky:{ROOT}" and reply.parent_id == f"bluesky:{ROOT}"
    assert first.created_at == parse_time("2024-09-09T19:46:02.102Z")
    assert first.url == f"https://bsky.app/profile/{DID}/post/3l3qo2vuowo001"
    assert got[-1].cursor == {"time_us": T_US + 5000}
    assert any("malformed Jetstream frame" in w for f in got for w in f.warnings)
    assert script.cursors == [None]


def test_a_reconnection_asks_to_replay_a_few_seconds_before_the_cursor() -> None:
    script = Script(frames=frames())
    with FakeJetstream(script) as js:
        sub = JetstreamSubscription(js.url, batch_seconds=0.05, rewind=5.0)
        collect(sub, {"time_us": T_US + 4000}, 1)
    assert script.cursors == [str(T_US + 4000 - 5_000_000)]


def test_a_connection_cut_mid_frame_is_a_source_error_after_the_complete_frames() -> None:
    script = Script(frames=frames(), endings=["cut"])
    with FakeJetstream(script) as js:
        sub = JetstreamSubscription(js.url, batch_seconds=0.05)
        got, err = collect(sub, None, 99)
    assert isinstance(err, SourceError) and "dropped" in str(err)
    assert sum(len(f.mentions) for f in got) == 3  # every complete post was handed over


def test_a_refused_handshake_and_a_dead_port_are_source_errors() -> None:
    with FakeJetstream(Script(refuse=404)) as js:
        _, err = collect(JetstreamSubscription(js.url), None, 1)
    assert isinstance(err, SourceError) and "HTTP 404" in str(err)
    assert err.setting == "sources.bluesky.jetstream"
    _, err = collect(JetstreamSubscription("ws://127.0.0.1:9/subscribe"), None, 1)
    assert isinstance(err, SourceError) and "cannot connect" in str(err)


# --------------------------------------------------------------------------- search

PDS = "https://pds.example.com"
NOW = parse_time("2024-09-09T20:00:00Z")


def jwt(scope: str) -> str:
    """A token shaped as a PDS issues it (the SDK reads its expiry; nobody checks the
    signature here)."""
    import base64
    import time

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()

    now = int(time.time())
    return ".".join((part({"typ": "at+jwt", "alg": "ES256K"}),
                     part({"scope": scope, "sub": "did:plc:brandbrandbrand", "iat": now,
                           "exp": now + 7200, "aud": "did:web:pds.example.com"}),
                     "c2lnbmF0dXJl"))


ACCESS = jwt("com.atproto.appPass")


def session(handle: str = "brand.bsky.social") -> dict[str, Any]:
    """com.atproto.server.createSession output."""
    return {"accessJwt": ACCESS, "refreshJwt": jwt("com.atproto.refresh"), "handle": handle,
            "did": "did:plc:brandbrandbrand", "active": True}


def post_view(n: int, text: str, created: str, *, root: str | None = None) -> dict[str, Any]:
    """app.bsky.feed.defs#postView."""
    record: dict[str, Any] = {"$type": "app.bsky.feed.post", "text": text,
                              "createdAt": created, "langs": ["en"]}
    if root:
        record["reply"] = {"root": {"uri": root, "cid": "bafyroot"},
                           "parent": {"uri": root, "cid": "bafyroot"}}
    return {"uri": f"at://did:plc:author{n}/app.bsky.feed.post/3kpost{n:03d}",
            "cid": f"bafypost{n:03d}",
            "author": {"did": f"did:plc:author{n}", "handle": f"author{n}.bsky.social",
                       "displayName": f"Author {n}", "labels": []},
            "record": record, "replyCount": 2, "repostCount": 1, "likeCount": 7,
            "quoteCount": 0, "indexedAt": created, "labels": []}


def searcher(**kw: Any) -> BlueskySearch:
    return BlueskySearch(handle="brand.bsky.social", app_password="abcd-efgh-ijkl-mnop",
                         topics=[Topic("acme", ("acme", "acme corp"))], service=PDS,
                         clock=FixedClock(NOW), **kw)


@respx.mock
def test_search_logs_in_once_pages_and_keeps_a_cursor_per_term() -> None:
    login = respx.post(f"{PDS}/xrpc/com.atproto.server.createSession").respond(
        200, json=session())
    pages = {
        ("acme", None): {"cursor": "p2", "hitsTotal": 3, "posts": [
            post_view(1, "acme broke my order", "2024-09-09T19:59:00Z"),
            post_view(2, "acme again", "2024-09-09T19:58:00Z", root="at://did:plc:x/p/1")]},
        ("acme", "p2"): {"posts": [post_view(3, "acme, an old one", "2024-09-09T19:30:00Z")]},
        ('"acme corp"', None): {"posts": [
            post_view(1, "acme broke my order", "2024-09-09T19:59:00Z")]},
    }

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == f"Bearer {ACCESS}"
        q = request.url.params
        assert q["sort"] == "latest" and q["limit"] == "100"
        return httpx.Response(200, json=pages[(q["q"], q.get("cursor"))])

    search = respx.get(f"{PDS}/xrpc/app.bsky.feed.searchPosts").mock(side_effect=answer)
    src = searcher()
    got = list(src.poll(None))
    assert login.call_count == 1 and search.call_count == 3
    assert [len(f.mentions) for f in got] == [3, 1]
    m1 = got[0].mentions[0]
    assert m1.id == "bluesky:at://did:plc:author1/app.bsky.feed.post/3kpost001"
    assert m1.author == "author1.bsky.social" and m1.metrics == {
        "likes": 7, "reposts": 1, "replies": 2, "quotes": 0}
    assert m1.url == "https://bsky.app/profile/author1.bsky.social/post/3kpost001"
    assert got[0].mentions[1].thread_id == "bluesky:at://did:plc:x/p/1"
    cursor = got[-1].cursor
    assert cursor is not None and set(cursor) == {"search:acme:acme", "search:acme:acme corp"}

    # the next poll asks only since the newest post less the overlap, and skips what it saw
    before = search.call_count
    list(src.poll(cursor))
    since = search.calls[before].request.url.params["since"]
    assert since == "2024-09-09T19:44:00Z"
    assert login.call_count == 1  # the session was reused


@respx.mock
def test_a_refused_login_names_the_settings_and_never_the_password() -> None:
    respx.post(f"{PDS}/xrpc/com.atproto.server.createSession").respond(
        401, json={"error": "AuthenticationRequired", "message": "Invalid identifier or password"})
    with pytest.raises(SourceError, match="refused the login") as e:
        list(searcher().poll(None))
    assert e.value.setting == "sources.bluesky.handle / app_password"
    assert "abcd-efgh" not in str(e.value)


@respx.mock
def test_an_expired_session_logs_in_again_once() -> None:
    login = respx.post(f"{PDS}/xrpc/com.atproto.server.createSession").respond(
        200, json=session())
    respx.get(f"{PDS}/xrpc/app.bsky.feed.searchPosts").mock(side_effect=[
        httpx.Response(401, json={"error": "ExpiredToken", "message": "Token has expired"}),
        httpx.Response(200, json={"posts": []}),
        httpx.Response(200, json={"posts": []})])
    got = list(searcher().poll(None))
    assert [f.mentions for f in got] == [[], []] and login.call_count == 2


@respx.mock
def test_rate_limits_and_outages_are_source_errors() -> None:
    respx.post(f"{PDS}/xrpc/com.atproto.server.createSession").respond(200, json=session())
    route = respx.get(f"{PDS}/xrpc/app.bsky.feed.searchPosts")
    route.respond(429, headers={"Retry-After": "30", "RateLimit-Remaining": "0"},
                  json={"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"})
    with pytest.raises(SourceError, match="429") as e:
        list(searcher().poll(None))
    assert e.value.retry_after == 30
    route.respond(502, text="Bad Gateway")
    with pytest.raises(SourceError):
        list(searcher().poll(None))
    route.mock(side_effect=httpx.ConnectTimeout("timed out"))
    with pytest.raises(SourceError, match="timed out"):
        list(searcher().poll(None))


def test_search_terms_quote_phrases() -> None:
    assert search_terms([Topic("acme", ("acme", "acme corp", "@acme"))]) == [
        ("search:acme:acme", "acme"), ("search:acme:acme corp", '"acme corp"'),
        ("search:acme:@acme", "acme")]


@respx.mock
def test_engagement_of_active_threads_is_refreshed_25_posts_a_call() -> None:
    respx.post(f"{PDS}/xrpc/com.atproto.server.createSession").respond(200, json=session())
    respx.get(f"{PDS}/xrpc/app.bsky.feed.searchPosts").respond(200, json={"posts": []})
    asked: list[list[str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        uris = request.url.params.get_list("uris")
        asked.append(uris)
        posts = []
        for uri in uris:
            n = int(uri.rsplit("post", 1)[1])
            view = post_view(n, "root", "2024-09-09T19:00:00Z")
            view["likeCount"] = 100 + n
            posts.append(view)
        return httpx.Response(200, json={"posts": posts})

    respx.get(f"{PDS}/xrpc/app.bsky.feed.getPosts").mock(side_effect=answer)
    threads = [f"bluesky:at://did:plc:author{n}/app.bsky.feed.post/3kpost{n:03d}"
               for n in range(60)] + ["reddit:t3_abc"]
    src = searcher(targets=lambda: threads)
    pages = list(src.poll(None))
    assert [len(u) for u in asked] == [25, 25, 10]
    update = pages[-1]
    assert update.cursor is None and update.mentions == []
    assert len(update.updates) == 60
    mid, metrics = update.updates[7]
    assert mid == threads[7] and metrics == {"likes": 107, "reposts": 1, "replies": 2,
                                             "quotes": 0}


def test_a_reconnection_never_moves_the_cursor_backwards() -> None:
    script = Script(frames=frames())
    with FakeJetstream(script) as js:
        sub = JetstreamSubscription(js.url, batch_seconds=0.05)
        got, _ = collect(sub, {"time_us": T_US + 9000}, 3)
    assert got and all((f.cursor or {})["time_us"] >= T_US + 9000 for f in got)


@respx.mock
def test_a_post_dated_in_the_future_does_not_blind_the_search() -> None:
    respx.post(f"{PDS}/xrpc/com.atproto.server.createSession").respond(200, json=session())
    liar = post_view(1, "acme from the future", "2031-01-01T00:00:00Z")
    liar["indexedAt"] = "2024-09-09T19:59:00Z"
    route = respx.get(f"{PDS}/xrpc/app.bsky.feed.searchPosts").respond(
        200, json={"posts": [liar]})
    src = searcher()
    cursor = list(src.poll(None))[-1].cursor
    before = route.call_count
    list(src.poll(cursor))
    assert route.calls[before].request.url.params["since"] == "2024-09-09T19:44:00Z"


@respx.mock
def test_more_posts_than_the_page_limit_is_a_warning() -> None:
    respx.post(f"{PDS}/xrpc/com.atproto.server.createSession").respond(200, json=session())
    n = iter(range(10_000))

    def endless(request: httpx.Request) -> httpx.Response:
        posts = [post_view(next(n), "acme", "2024-09-09T19:59:00Z") for _ in range(100)]
        return httpx.Response(200, json={"cursor": "more", "posts": posts})

    respx.get(f"{PDS}/xrpc/app.bsky.feed.searchPosts").mock(side_effect=endless)
    first = list(searcher().poll(None))[0]
    assert len(first.mentions) == 1000
    assert first.warnings and "more than 1000 posts" in first.warnings[0]


@respx.mock
def test_one_failing_term_does_not_stop_the_others() -> None:
    respx.post(f"{PDS}/xrpc/com.atproto.server.createSession").respond(200, json=session())

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.params["q"] == "acme":
            return httpx.Response(500, json={"error": "InternalServerError"})
        return httpx.Response(200, json={"posts": [
            post_view(1, "acme corp again", "2024-09-09T19:59:00Z")]})

    respx.get(f"{PDS}/xrpc/app.bsky.feed.searchPosts").mock(side_effect=answer)
    pages = []
    with pytest.raises(SourceError, match="searching posts"):
        for page in searcher().poll(None):
            pages.append(page)
    assert [len(p.mentions) for p in pages] == [1]
    assert set(pages[0].cursor or {}) == {"search:acme:acme corp"}
