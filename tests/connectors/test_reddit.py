"""The Reddit connector: praw against a local Reddit API over real HTTP (tests/fakes)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from connectors.base import Fetched, SourceError
from connectors.reddit import RedditSource, search_query
from monitor.clock import FixedClock
from monitor.topics import Topic
from tests.fakes.reddit import CLIENT_ID, CLIENT_SECRET, FakeReddit, comment, submission

NOW = 1_714_560_000.0
ACME = Topic(name="acme", terms=("acme", "acme corp", "@acme"))


@pytest.fixture
def fake() -> Iterator[FakeReddit]:
    with FakeReddit() as f:
        yield f


def source(fake: FakeReddit, clock: FixedClock | None = None, **kw: Any) -> RedditSource:
    spec = SimpleNamespace(
        client_id=kw.pop("client_id", CLIENT_ID), client_secret=kw.pop("client_secret",
                                                                       CLIENT_SECRET),
        user_agent="stormwatch-tests/0.1", oauth_url=fake.url, reddit_url=fake.url,
        subreddits=kw.pop("subreddits", ["acme", "CustomerService"]),
        multireddits=kw.pop("multireddits", []),
        search=kw.pop("search", True), interval=60, timeout=kw.pop("timeout", 5.0))
    return RedditSource.from_spec(spec, [ACME], clock or FixedClock(NOW))


def poll(src: RedditSource, cursor: dict[str, Any] | None = None) -> list[Fetched]:
    return list(src.poll(cursor))


def ids(pages: list[Fetched]) -> list[str]:
    return [m.id for p in pages for m in p.mentions]


def test_comments_submissions_and_search_become_mentions(fake: FakeReddit) -> None:
    fake.state.add(
        comment("c1", NOW - 120, "acme lost my parcel", link="t3_p1", author="ann"),
        comment("c2", NOW - 60, "me too", link="t3_p1", sub="CustomerService"),
        comment("c3", NOW - 30, "elsewhere", sub="gaming"),
        submission("p1", NOW - 300, "Acme support is down", selftext="anyone else?"),
        submission("p9", NOW - 200, "Acme corp layoffs", sub="news"),
    )
    pages = poll(source(fake))
    assert [p.cursor is not None for p in pages] == [True, True, True]
    assert ids(pages) == ["reddit:t1_c2", "reddit:t1_c1", "reddit:t3_p1",
                          "reddit:t3_p9", "reddit:t3_p1"]
    c1 = next(m for p in pages for m in p.mentions if m.id == "reddit:t1_c1")
    assert c1.thread_id == "reddit:t3_p1" and c1.parent_id == "reddit:t3_p1"
    assert c1.author == "ann" and c1.text == "acme lost my parcel" and c1.source == "reddit"
    assert c1.url == "https://www.reddit.com/r/acme/comments/p1/post/c1/"
    assert c1.created_at == NOW - 120 and c1.extra == {"subreddit": "acme"}
    p9 = next(m for p in pages for m in p.mentions if m.id == "reddit:t3_p9")
    assert p9.title == "Acme corp layoffs" and p9.thread_id == "reddit:t3_p9"
    paths = fake.state.paths()
    assert paths[0] == "/api/v1/access_token" and paths.count("/api/v1/access_token") == 1
    assert {"/r/acme+CustomerService/comments", "/r/acme+CustomerService/new",
            "/r/all/search"} <= set(paths)
    search = next(q for _, p, q in fake.state.requests if p == "/r/all/search")
    assert search["sort"] == "new" and search["q"] == 'acme OR "acme corp"'


def test_a_second_poll_yields_only_what_is_new(fake: FakeReddit) -> None:
    clock = FixedClock(NOW)
    src = source(fake, clock, search=False)
    fake.state.add(comment("c1", NOW - 100, "acme one"), comment("c2", NOW - 50, "acme two"))
    first = poll(src)
    cursor = first[-1].cursor
    assert ids(first) == ["reddit:t1_c2", "reddit:t1_c1"]
    fake.state.add(comment("c3", NOW + 10, "acme three"),
                   comment("c0", NOW - 40, "indexed late but within the overlap"))
    clock.advance(60)
    second = poll(src, cursor)
    assert ids(second) == ["reddit:t1_c3", "reddit:t1_c0"]
    assert ids(poll(src, second[-1].cursor)) == []


def test_the_first_poll_reaches_back_an_hour_and_pages_through(fake: FakeReddit) -> None:
    fake.state.add(*(comment(f"k{i:03d}", NOW - 10 * i, f"acme {i}") for i in range(500)))
    pages = poll(source(fake, search=False, subreddits=["acme"]))
    got = ids(pages)
    assert len(got) == 361  # ten-second steps within the last hour, the edge included
    assert got[0] == "reddit:t1_k000" and got[-1] == "reddit:t1_k360"
    listings = [q for _, p, q in fake.state.requests if p == "/r/acme/comments"]
    assert [q.get("after") for q in listings] == [None, "t1_k099", "t1_k199", "t1_k299"]


def test_a_bad_secret_names_the_setting(fake: FakeReddit) -> None:
    with pytest.raises(SourceError, match="credentials") as e:
        poll(source(fake, client_secret="wrong"))
    assert e.value.setting == "sources.reddit.client_id / client_secret"
    assert "wrong" not in str(e.value)


def test_429_carries_retry_after(fake: FakeReddit) -> None:
    fake.state.fail("/r/acme+CustomerService/comments", 429, headers={"Retry-After": "42"})
    with pytest.raises(SourceError, match="429") as e:
        poll(source(fake))
    assert e.value.retry_after == 42


@pytest.mark.parametrize("status", [403, 404])
def test_forbidden_or_missing_subreddits_name_the_setting(fake: FakeReddit,
                                                         status: int) -> None:
    fake.state.fail("/r/acme+CustomerService/comments", status)
    with pytest.raises(SourceError) as e:
        poll(source(fake))
    assert e.value.setting == "sources.reddit.subreddits"


def test_a_5xx_storm_fails_after_praws_retries_and_a_short_one_does_not(
        fake: FakeReddit) -> None:
    fake.state.fail("/r/acme/comments", 503, times=1)
    assert poll(source(fake, search=False, subreddits=["acme"])) != []
    fake.state.fail("/r/acme/comments", 500, times=10)
    with pytest.raises(SourceError, match="500"):
        poll(source(fake, search=False, subreddits=["acme"]))


def test_a_timeout_is_a_source_error_within_bounded_time(fake: FakeReddit) -> None:
    fake.state.fail("/r/acme/comments", 200, times=3, delay=1.5)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="cannot reach Reddit"):
        poll(source(fake, search=False, subreddits=["acme"], timeout=0.5))
    assert time.monotonic() - t0 < 15


def test_search_query_quotes_phrases_and_drops_handle_marks() -> None:
    assert search_query(Topic("t", ("acme", "acme corp", "@acme", "#acmefail"))) == \
        'acme OR "acme corp" OR acmefail'


def test_multireddits_are_read_like_subreddits(fake: FakeReddit) -> None:
    fake.state.multis[("brandteam", "watch")] = ["acme", "gadgets"]
    fake.state.add(comment("m1", NOW - 50, "acme broke", sub="gadgets"),
                   comment("m2", NOW - 40, "elsewhere", sub="cooking"),
                   submission("s1", NOW - 60, "Acme gadget recall", sub="gadgets"))
    pages = poll(source(fake, subreddits=[], multireddits=["brandteam/watch"],
                        search=False))
    assert ids(pages) == ["reddit:t1_m1", "reddit:t3_s1"]
    assert set(pages[-1].cursor or {}) == {"comments:brandteam/watch",
                                           "submissions:brandteam/watch"}
    assert {"/user/brandteam/m/watch/comments", "/user/brandteam/m/watch/new"} <= \
        set(fake.state.paths())
    with pytest.raises(SourceError) as e:
        poll(source(fake, subreddits=[], multireddits=["nobody/none"], search=False))
    assert e.value.setting == "sources.reddit.multireddits"


@pytest.mark.parametrize("status,headers,expect", [
    (503, {}, "answered 503"), (429, {"Retry-After": "7"}, "429")])
def test_a_failing_token_endpoint_is_not_called_bad_credentials(
        fake: FakeReddit, status: int, headers: dict[str, str], expect: str) -> None:
    fake.state.fail("/api/v1/access_token", status, times=3, headers=headers)
    with pytest.raises(SourceError, match=expect) as e:
        poll(source(fake, search=False, subreddits=["acme"]))
    assert e.value.setting is None and "credentials" not in str(e.value)
    if status == 429:
        assert e.value.retry_after == 7


def test_one_failing_listing_does_not_stop_the_others(fake: FakeReddit) -> None:
    fake.state.add(comment("c1", NOW - 50, "acme broke"))
    pages: list[Fetched] = []
    with pytest.raises(SourceError, match="no such subreddit or multireddit") as e:
        for page in source(fake, subreddits=["acme"], multireddits=["gone/list"],
                           search=False).poll(None):
            pages.append(page)
    assert e.value.setting == "sources.reddit.multireddits"
    assert ids(pages) == ["reddit:t1_c1"]  # the subreddit's listings came through
