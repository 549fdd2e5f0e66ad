"""The RSS / Atom connector over httpx (respx answers), feeds shaped as their specs show:
the RSS 2.0 specification's sample channel, RFC 4287's Atom example, and a Google Alerts
feed (Atom, with google.com/url redirect links and HTML titles)."""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from connectors.base import Fetched, SourceError
from connectors.rss import FeedSpec, RssFeed, entry_identity, plain_text, unwrap_link
from monitor.clock import FixedClock

URL = "https://news.example.com/rss.xml"

RSS = """<?xml version="1.0"?>
<rss version="2.0">
  <channel>
    <title>Liftoff News</title>
    <link>http://liftoff.msfc.nasa.gov/</link>
    <description>Liftoff to Space Exploration.</description>
    <language>en-us</language>
    <pubDate>Tue, 10 Jun 2003 04:00:00 GMT</pubDate>
    {items}
  </channel>
</rss>"""

ITEM = """<item>
      <title>{title}</title>
      <link>http://liftoff.msfc.nasa.gov/news/2003/news-{n}.asp</link>
      <description>{description}</description>
      <pubDate>Tue, 03 Jun 2003 09:{n:02d}:00 GMT</pubDate>
      <guid>http://liftoff.msfc.nasa.gov/2003/06/03.html#item{n}</guid>
    </item>"""

ALERTS = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:idx="urn:atom-extension:indexing">
  <id>tag:google.com,2005:reference:Feeds/06848184222400917187/com.google/alerts/1</id>
  <title>Google Alert - acme</title>
  <link href="https://www.google.com/alerts/feeds/06848184222400917187/1" rel="self"/>
  <updated>2024-05-01T12:40:05Z</updated>
  <entry>
    <id>tag:google.com,2013:googlealerts/feed:11906290911186406000</id>
    <title type="html">&lt;b&gt;Acme&lt;/b&gt; recalls 2 million toasters</title>
    <link href="https://www.google.com/url?rct=j&amp;sa=t&amp;url=https://news.example.com/acme-recall&amp;ct=ga&amp;cd=CAIyGmQ&amp;usg=AOvVaw3"/>
    <published>2024-05-01T12:35:52Z</published>
    <updated>2024-05-01T12:35:52Z</updated>
    <content type="html">The recall covers &lt;b&gt;Acme&lt;/b&gt; toasters sold since
      2021 &amp;amp; ...</content>
    <author><name/></author>
  </entry>
</feed>"""

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Example Feed</title>
  <link href="http://example.org/"/>
  <updated>2003-12-13T18:30:02Z</updated>
  <author><name>John Doe</name></author>
  <id>urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6</id>
  <entry>
    <title>Atom-Powered Robots Run Amok</title>
    <link href="http://example.org/2003/12/13/atom03"/>
    <id>urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a</id>
    <updated>2003-12-13T18:30:02Z</updated>
    <summary>Some text.</summary>
  </entry>
</feed>"""


def rss(*items: str) -> str:
    return RSS.format(items="\n".join(items))


def item(n: int, title: str = "Acme news", description: str = "text") -> str:
    return ITEM.format(n=n, title=title, description=description)


def feed(name: str = "news", url: str = URL, **kw: Any) -> RssFeed:
    return RssFeed(FeedSpec(name=name, url=url, **kw), clock=FixedClock(1_700_000_000.0))


def poll(f: RssFeed, cursor: dict[str, Any] | None = None) -> Fetched:
    pages = list(f.poll(cursor))
    assert len(pages) == 1
    return pages[0]


@respx.mock
def test_rss_items_become_mentions_with_plain_text() -> None:
    hostile = ("&lt;p&gt;Acme &lt;b&gt;lied&lt;/b&gt;&lt;script&gt;alert(1)&lt;/script&gt;"
               " &amp;amp; more&lt;/p&gt;")
    respx.get(URL).respond(200, text=rss(item(1, description=hostile), item(2)),
                           headers={"Content-Type": "application/rss+xml"})
    got = poll(feed())
    first = got.mentions[0]
    assert first.id == "rss:news#http://liftoff.msfc.nasa.gov/2003/06/03.html#item1"
    assert first.thread_id == first.id and first.source == "rss"
    assert first.text == "Acme lied & more"
    assert first.title == "Acme news"
    assert first.url == "http://liftoff.msfc.nasa.gov/news/2003/news-1.asp"
    assert first.created_at == calendar.timegm((2003, 6, 3, 9, 1, 0))
    assert first.extra == {"feed": "news"}
    assert len(got.mentions) == 2 and not got.warnings


@respx.mock
def test_conditional_get_and_repeated_entries_yield_nothing_twice() -> None:
    route = respx.get(URL)
    route.side_effect = [
        httpx.Response(200, text=rss(item(1), item(2)),
                       headers={"ETag": '"v1"', "Last-Modified": "Tue, 03 Jun 2003 09:39:21 GMT"}),
        httpx.Response(304),
        httpx.Response(200, text=rss(item(1), item(2), item(3)), headers={"ETag": '"v2"'}),
    ]
    f = feed()
    first = poll(f)
    assert len(first.mentions) == 2 and first.cursor is not None
    assert first.cursor["etag"] == '"v1"'
    second = poll(f, first.cursor)
    sent = route.calls[1].request.headers
    assert sent["If-None-Match"] == '"v1"'
    assert sent["If-Modified-Since"] == "Tue, 03 Jun 2003 09:39:21 GMT"
    assert second.mentions == [] and second.cursor == first.cursor
    third = poll(f, second.cursor)
    assert [m.id.rsplit("#", 1)[1] for m in third.mentions] == ["item3"]
    assert third.cursor is not None and third.cursor["etag"] == '"v2"'


@respx.mock
def test_google_alerts_links_are_unwrapped_and_entries_tagged_with_the_topic() -> None:
    respx.get(URL).respond(200, text=ALERTS, headers={"Content-Type": "application/atom+xml"})
    got = poll(feed(name="acme-alerts", topic="acme"))
    [m] = got.mentions
    assert m.url == "https://news.example.com/acme-recall"
    assert m.title == "Acme recalls 2 million toasters"
    assert m.text == "The recall covers Acme toasters sold since 2021 & ..."
    assert m.topic == "acme" and m.author is None
    assert m.id == "rss:acme-alerts#tag:google.com,2013:googlealerts/feed:11906290911186406000"
    assert m.created_at == calendar.timegm((2024, 5, 1, 12, 35, 52))


@respx.mock
def test_atom_feed_from_rfc_4287() -> None:
    respx.get(URL).respond(200, text=ATOM)
    [m] = poll(feed()).mentions
    assert m.id == "rss:news#urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a"
    assert m.text == "Some text." and m.title == "Atom-Powered Robots Run Amok"


def test_entry_identity_falls_back_from_guid_to_link_to_a_content_hash() -> None:
    assert entry_identity({"id": "g1", "link": "l1"}) == "g1"
    assert entry_identity({"link": "l1", "title": "t"}) == "l1"
    a = entry_identity({"title": "Acme", "summary": "down again"})
    assert a == entry_identity({"title": "Acme", "summary": "down again"})
    assert a.startswith("sha256:") and a != entry_identity({"title": "Acme", "summary": "up"})


def test_unwrap_only_touches_google_redirects() -> None:
    assert unwrap_link("https://www.google.com/url?q=https://a.example/x&sa=U") == \
        "https://a.example/x"
    assert unwrap_link("https://evil.example/url?url=https://a.example/") == \
        "https://evil.example/url?url=https://a.example/"
    assert unwrap_link("https://www.google.com/url?url=javascript:alert(1)") == \
        "https://www.google.com/url?url=javascript:alert(1)"
    assert plain_text("<style>p{}</style>a<br>b &lt;c&gt;") == "a b <c>"


@respx.mock
def test_a_malformed_feed_with_entries_is_used_and_reported() -> None:
    broken = rss(item(1), item(2)).replace("</channel>", "<unclosed></channel>")
    respx.get(URL).respond(200, text=broken)
    got = poll(feed())
    assert len(got.mentions) == 2
    assert got.warnings and "malformed feed" in got.warnings[0]


@respx.mock
@pytest.mark.parametrize("content_type", ["text/html", "application/rss+xml"])
def test_a_page_that_is_not_a_feed_is_an_error_naming_the_setting(content_type: str) -> None:
    """An error page or login wall answered with 200 (even labelled as RSS) is not an
    empty feed: an empty feed would move the cursor and wait a whole interval."""
    respx.get(URL).respond(200, text="<html><body>Login required</body></html>",
                           headers={"Content-Type": content_type})
    with pytest.raises(SourceError, match="not a readable RSS or Atom feed") as e:
        poll(feed())
    assert e.value.setting == "sources.rss.news.url"


@respx.mock
def test_an_empty_feed_is_not_an_error() -> None:
    respx.get(URL).respond(200, text=rss(), headers={"Content-Type": "application/rss+xml"})
    got = poll(feed())
    assert got.mentions == [] and not got.warnings


@respx.mock
@pytest.mark.parametrize("status,headers,retry_after,setting", [
    (429, {"Retry-After": "120"}, 120.0, None),
    (503, {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}, None, None),
    (500, {}, None, None),
    (404, {}, None, "sources.rss.news.url"),
    (401, {}, None, "sources.rss.news.url"),
    (403, {}, None, "sources.rss.news.url"),
])
def test_http_failures_become_source_errors(status: int, headers: dict[str, str],
                                            retry_after: float | None,
                                            setting: str | None) -> None:
    respx.get(URL).respond(status, headers=headers, text="nope")
    with pytest.raises(SourceError, match=f"answered {status}") as e:
        poll(feed())
    assert e.value.setting == setting
    if status == 503:
        assert e.value.retry_after is not None and e.value.retry_after > 86400
    else:
        assert e.value.retry_after == retry_after


@respx.mock
def test_timeouts_and_redirect_loops_are_source_errors() -> None:
    respx.get(URL).mock(side_effect=httpx.ReadTimeout("read timed out"))
    with pytest.raises(SourceError, match="timed out"):
        poll(feed())
    loop = "https://loop.example.com/feed"
    respx.get(loop).respond(302, headers={"Location": loop})
    with pytest.raises(SourceError, match="redirects too many times"):
        poll(feed(url=loop))


@respx.mock
def test_redirects_are_followed() -> None:
    respx.get(URL).respond(301, headers={"Location": "https://news.example.com/new.xml"})
    respx.get("https://news.example.com/new.xml").respond(200, text=rss(item(5)))
    assert len(poll(feed()).mentions) == 1


class _Endless(httpx.SyncByteStream):
    """A 50 MB body, made as it is read: counts what the reader pulled."""

    def __init__(self) -> None:
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        chunk = b"<item><title>acme</title></item>" * 2000
        while self.sent < 50 << 20:
            self.sent += len(chunk)
            yield chunk


@respx.mock
def test_a_50_mb_feed_is_refused_without_reading_it_all() -> None:
    body = _Endless()
    respx.get(URL).mock(return_value=httpx.Response(200, stream=body))
    t0 = time.perf_counter()
    with pytest.raises(SourceError, match="more than 1 MiB") as e:
        poll(feed(max_bytes=1 << 20))
    assert e.value.setting == "sources.rss.news.max_bytes"
    assert body.sent < 2 << 20 and time.perf_counter() - t0 < 5


def test_connection_refused_is_a_source_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError, match="ConnectError"):
        poll(feed(url=f"http://127.0.0.1:{port}/feed"))


@respx.mock
def test_errors_name_the_feed_by_its_host_never_its_key() -> None:
    secret = "https://www.google.com/alerts/feeds/06848184222400917187/1171?token=s3cr3t"
    respx.get(secret).respond(500)
    with pytest.raises(SourceError) as e:
        poll(feed(url=secret))
    assert "06848184222400917187" not in str(e.value) and "s3cr3t" not in str(e.value)
    assert str(e.value).startswith("https://www.google.com/… answered 500")


class _Drip(httpx.SyncByteStream):
    """A server that sends a few bytes now and then: each chunk costs 20 s of clock."""

    def __init__(self, clock: FixedClock) -> None:
        self.clock = clock

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(100):
            self.clock.advance(20)
            yield b"<rss><channel><item><title>acme</title></item>"


@respx.mock
def test_a_feed_that_drips_is_given_up_after_the_total_time() -> None:
    clock = FixedClock(1_700_000_000.0)
    respx.get(URL).mock(return_value=httpx.Response(200, stream=_Drip(clock)))
    f = RssFeed(FeedSpec(name="news", url=URL), clock=clock)
    with pytest.raises(SourceError, match="took more than 60 s"):
        poll(f)
    assert clock.monotonic() - 1_700_000_000.0 <= 100
