"""RSS and Atom feeds (blogs, news, forums, Google Alerts) as a mention source.

Fetched with httpx (timeouts, redirects, a size cap, conditional GET with the ETag and
Last-Modified the feed last sent) and parsed from the bytes with feedparser. A feed that
feedparser flags as malformed (``bozo``) but that still has entries is used, with the
problem reported; one without entries is an error. An entry's identity is its guid, else
its link, else a hash of its content: the mention id is ``rss:<feed>#<that>``. Google
Alerts' redirect links (``https://www.google.com/url?...&url=REAL``) are unwrapped to the
article's own address.

The cursor keeps the validators and the identities of recently seen entries (feeds repeat
their last N entries on every fetch), so a re-poll yields only entries not seen before.
"""

from __future__ import annotations

import calendar
import hashlib
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import feedparser
import httpx

from connectors.base import Cursor, Fetched, SourceError, retry_after_seconds
from monitor.clock import Clock, SystemClock
from monitor.models import Mention

MAX_FEED_BYTES = 10 << 20   # a bigger "feed" is not read (and reported)
SEEN_KEEP = 1000            # entry identities remembered per feed
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
TOTAL_TIME = 60.0           # seconds for a whole feed, however slowly its bytes come
USER_AGENT = "stormwatch/0.1 (+https://github.com/stormwatch; feed reader)"


@dataclass(frozen=True)
class FeedSpec:
    name: str
    url: str
    interval: float = 900.0
    topic: str | None = None   # tag every entry with this topic (a brand's own alert feed)
    max_bytes: int = MAX_FEED_BYTES


class RssFeed:
    """One feed: ``poll(cursor)`` yields the entries not seen before."""

    def __init__(self, spec: FeedSpec, client: httpx.Client | None = None,
                 clock: Clock | None = None) -> None:
        self.spec = spec
        self.clock = clock or SystemClock()
        self.setting = f"sources.rss.{spec.name}"
        # errors and logs name the feed by its host: a feed's address may carry a key
        # (Google Alerts' private feed path, ?token=...) that does not belong in them
        self.where = public_address(spec.url)
        self.name = f"rss:{spec.name}"
        self.interval = spec.interval
        self._own_client = client is None
        self.client = client or httpx.Client(
            timeout=TIMEOUT, follow_redirects=True, max_redirects=5,
            headers={"User-Agent": USER_AGENT})

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    def poll(self, cursor: Cursor | None) -> Iterator[Fetched]:
        cursor = dict(cursor or {})
        body, headers = self._fetch(cursor)
        if body is None:  # 304 Not Modified
            yield Fetched([], cursor)
            return
        parsed = feedparser.parse(body, response_headers=headers)
        warnings = []
        problem = (f"{type(parsed.bozo_exception).__name__}: {parsed.bozo_exception}"[:200]
                   if parsed.bozo else "")
        if not parsed.version and not parsed.entries:
            # no RSS or Atom in it: an error page or a login wall, even if answered 200
            sent = plain_text(body[:120].decode("utf-8", "replace"))
            raise SourceError(f"{self.where} is not a readable RSS or Atom feed ("
                              f"{problem or 'no feed in what it sent'}; it begins {sent!r})",
                              setting=f"{self.setting}.url")
        if problem:
            warnings.append(f"{self.where}: malformed feed, its {len(parsed.entries)} "
                            f"entries used anyway ({problem})")
        seen = list(cursor.get("seen", []))
        known = set(seen)
        mentions = []
        for entry in parsed.entries:
            key = entry_identity(entry)
            if key in known:
                continue
            known.add(key)
            seen.append(key)
            mentions.append(self._mention(entry, key))
        cursor["seen"] = seen[-SEEN_KEEP:]
        for name in ("etag", "last-modified"):
            if headers.get(name):
                cursor[name] = headers[name]
        yield Fetched(mentions, cursor, warnings)

    def _fetch(self, cursor: Cursor) -> tuple[bytes | None, dict[str, str]]:
        url, where = self.spec.url, self.where
        headers = {}
        if cursor.get("etag"):
            headers["If-None-Match"] = cursor["etag"]
        if cursor.get("last-modified"):
            headers["If-Modified-Since"] = cursor["last-modified"]
        deadline = self.clock.monotonic() + TOTAL_TIME
        try:
            with self.client.stream("GET", url, headers=headers) as r:
                if r.status_code == 304:
                    return None, {}
                if r.status_code >= 400:
                    raise _http_error(where, r, self.setting, self.clock.now())
                chunks, size = [], 0
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    if size > self.spec.max_bytes:
                        raise SourceError(
                            f"{where} sent more than {self.spec.max_bytes >> 20} MiB; not read",
                            setting=f"{self.setting}.max_bytes")
                    if self.clock.monotonic() > deadline:  # a server that drips its bytes
                        raise SourceError(f"{where} took more than {TOTAL_TIME:.0f} s to send "
                                          "the feed; given up")
                    chunks.append(chunk)
                resp_headers = {k.lower(): v for k, v in r.headers.items()}
                resp_headers["content-location"] = str(r.url)
                return b"".join(chunks), resp_headers
        except httpx.TimeoutException:
            raise SourceError(f"{where} timed out") from None
        except httpx.TooManyRedirects:
            raise SourceError(f"{where} redirects too many times",
                              setting=f"{self.setting}.url") from None
        except httpx.HTTPError as e:
            raise SourceError(f"{where}: {type(e).__name__}") from None

    def _mention(self, entry: Any, key: str) -> Mention:
        when = entry.get("published_parsed") or entry.get("updated_parsed")
        # an undated entry counts when it was first seen
        created = float(calendar.timegm(when)) if when else self.clock.now()
        link = unwrap_link(entry.get("link"))
        title = plain_text(entry.get("title", "")) or None
        body = ""
        for content in entry.get("content", []) or []:
            body = plain_text(content.get("value", ""))
            if body:
                break
        body = body or plain_text(entry.get("summary", ""))
        mid = f"rss:{self.spec.name}#{key}"
        return Mention(id=mid, text=body or title or "", created_at=created, source="rss",
                       thread_id=mid, author=plain_text(entry.get("author", "")) or None,
                       url=link, title=title, topic=self.spec.topic,
                       extra={"feed": self.spec.name})


def entry_identity(entry: Any) -> str:
    """guid, else link, else a hash of title and content."""
    for key in ("id", "guid", "link"):
        value = entry.get(key)
        if value:
            return str(value)
    content = "".join(c.get("value", "") for c in entry.get("content", []) or [])
    digest = hashlib.sha256(
        f"{entry.get('title', '')}\n{entry.get('summary', '')}\n{content}".encode()).hexdigest()
    return f"sha256:{digest[:32]}"


def unwrap_link(link: str | None) -> str | None:
    """Google Alerts' ``https://www.google.com/url?...&url=REAL`` becomes ``REAL``."""
    if not link:
        return None
    parts = urlsplit(link)
    host = parts.hostname or ""
    if (host == "google.com" or host.endswith(".google.com")) and parts.path == "/url":
        query = parse_qs(parts.query)
        for key in ("url", "q"):
            if query.get(key) and query[key][0].startswith(("http://", "https://")):
                return query[key][0]
    return link


class _Text(HTMLParser):
    SKIP = {"script", "style"}
    BREAK = {"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BREAK:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


_SPACE = re.compile(r"\s+")


def plain_text(value: str) -> str:
    """Text of an HTML fragment: tags dropped, entities decoded, whitespace collapsed."""
    if not value:
        return ""
    if "<" not in value and "&" not in value:
        return _SPACE.sub(" ", value).strip()
    parser = _Text()
    try:
        parser.feed(value)
        parser.close()
        text = "".join(parser.parts)
    except Exception:  # noqa: BLE001 - HTMLParser on hostile markup: fall back to unescaping
        text = html.unescape(re.sub(r"<[^>]*>", " ", value))
    return _SPACE.sub(" ", text).strip()


def public_address(url: str) -> str:
    """The scheme and host of an address: what errors and logs may show."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…" if parts.path.strip("/") or parts.query \
        else f"{parts.scheme}://{host}{port}"


def _http_error(where: str, r: httpx.Response, setting: str, now: float) -> SourceError:
    code = r.status_code
    said = f"{where} answered {code} {r.reason_phrase}".rstrip()
    if code in (429, 503):
        return SourceError(said, retry_after=retry_after_seconds(r.headers.get("retry-after"),
                                                                 now))
    if code in (401, 403, 404, 410):
        return SourceError(said, setting=f"{setting}.url")
    return SourceError(said)
