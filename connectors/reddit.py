"""Reddit, through praw (read-only script app: ``client_id``, ``client_secret``,
``user_agent``).

Listings polled, each newest first, each with its own cursor:

- ``comments:<a+b>`` — new comments in the configured subreddits (``/r/a+b/comments``);
- ``submissions:<a+b>`` — new submissions there (``/r/a+b/new``);
- ``comments:<user/multi>`` and ``submissions:<user/multi>`` — the same for each
  configured multireddit (``/user/<user>/m/<multi>/comments`` and ``/new``);
- ``search:<topic>`` — submissions anywhere matching the topic's terms
  (``/r/all/search?sort=new&t=day``).

Comments and submissions of the configured subreddits are matched against the topics by
the engine (client-side), like every other source. A comment's thread is its submission.

A listing is read page by page down to where the previous poll stopped: its cursor keeps
the newest ``created_utc`` seen and the ids of the last few minutes (search results
arrive late and out of order, so it looks back further), and an item older than that, or
already seen, ends the listing. The first poll of a listing reaches back ``LOOKBACK``.
The mentions of a listing and its new cursor are committed together; a crash before that
re-reads the listing, and ids make the re-read harmless.

praw's own rate limiting is kept (it sleeps on Reddit's ``x-ratelimit-*`` headers), and
prawcore retries 5xx and connection failures twice; what still fails is a
:class:`~connectors.base.SourceError` naming the setting to fix (a 401 names the
credentials, a 403 or 404 the subreddits) or carrying Reddit's ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import praw
import prawcore

from connectors.base import Cursor, Fetched, SourceError, combined, retry_after_seconds
from connectors.records import Ignore, Skip, parse_pushshift
from monitor.clock import Clock, SystemClock
from monitor.models import Mention
from monitor.topics import Topic

LOOKBACK = 3600.0          # the first poll of a listing reaches back an hour
OVERLAP = 300.0            # a stream is re-read this far back (late-indexed items)
SEARCH_OVERLAP = 3600.0    # search results are indexed late: look back further
CREDENTIALS = "sources.reddit.client_id / client_secret"
MAX_ITEMS = 1000           # Reddit serves no more than this of a listing (100 a page)


class _TimeoutRequestor(prawcore.Requestor):
    """praw ignores its ``timeout`` setting for API calls: apply it to every request."""

    def request(self, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        return super().request(*args, timeout=self.timeout, **kwargs)


def search_query(topic: Topic) -> str:
    """Reddit (lucene) search for a topic's terms: ``"acme corp" OR acme``."""
    parts = []
    for term in topic.terms:
        word = term.lstrip("@#").replace('"', "")
        if word:
            parts.append(f'"{word}"' if " " in word else word)
    return " OR ".join(dict.fromkeys(parts))


class RedditSource:
    name = "reddit"

    def __init__(self, reddit: praw.Reddit, *, subreddits: Sequence[str] = (),
                 multireddits: Sequence[str] = (), topics: Sequence[Topic] = (),
                 search: bool = True, interval: float = 60.0,
                 clock: Clock | None = None) -> None:
        self.reddit = reddit
        self.interval = interval
        self.clock = clock or SystemClock()
        self.listings: list[tuple[str, str, str]] = []   # (cursor key, kind, argument)
        if subreddits:
            multi = "+".join(subreddits)
            self.listings += [(f"comments:{multi}", "comments", multi),
                              (f"submissions:{multi}", "new", multi)]
        for owned in multireddits:  # "user/name": a user's multireddit
            self.listings += [(f"comments:{owned}", "multi-comments", owned),
                              (f"submissions:{owned}", "multi-new", owned)]
        if search:
            for topic in topics:
                query = search_query(topic)
                if query:
                    self.listings.append((f"search:{topic.name}", "search", query))

    @classmethod
    def from_spec(cls, spec: Any, topics: Sequence[Topic], clock: Clock | None = None,
                  ) -> RedditSource:
        reddit = praw.Reddit(
            client_id=spec.client_id, client_secret=spec.client_secret,
            user_agent=spec.user_agent, oauth_url=spec.oauth_url, reddit_url=spec.reddit_url,
            check_for_updates=False, check_for_async=False,
            requestor_class=_TimeoutRequestor, requestor_kwargs={"timeout": spec.timeout})
        reddit.read_only = True
        return cls(reddit, subreddits=spec.subreddits, multireddits=spec.multireddits,
                   topics=topics, search=spec.search, interval=float(spec.interval),
                   clock=clock)

    def close(self) -> None:
        pass

    def poll(self, cursor: Cursor | None) -> Iterator[Fetched]:
        """Each listing in turn, committed with its cursor. A listing that fails (a banned
        subreddit, a deleted multireddit) does not stop the others: the failures are
        raised together at the end; refused credentials stop the poll at once."""
        state = dict(cursor or {})
        failed: list[SourceError] = []
        for key, kind, arg in self.listings:
            try:
                mentions, new, warnings = self._read(key, kind, arg, state.get(key))
            except SourceError as e:
                failed.append(e)
                if e.setting == CREDENTIALS:
                    break
                continue
            state[key] = new
            yield Fetched(mentions, dict(state), warnings)
        if failed:
            raise combined(failed)

    def _items(self, kind: str, arg: str) -> Iterable[Any]:
        if kind.startswith("multi-"):
            user, name = arg.split("/", 1)
            multi = self.reddit.multireddit(redditor=user, name=name)
            return multi.comments(limit=MAX_ITEMS) if kind == "multi-comments" \
                else multi.new(limit=MAX_ITEMS)
        if kind == "comments":
            return self.reddit.subreddit(arg).comments(limit=MAX_ITEMS)
        if kind == "new":
            return self.reddit.subreddit(arg).new(limit=MAX_ITEMS)
        return self.reddit.subreddit("all").search(arg, sort="new", time_filter="day",
                                                   limit=MAX_ITEMS)

    def _read(self, key: str, kind: str, arg: str, cur: dict[str, Any] | None,
              ) -> tuple[list[Mention], dict[str, Any], list[str]]:
        overlap = SEARCH_OVERLAP if kind == "search" else OVERLAP
        newest = float(cur["newest"]) if cur else self.clock.now() - LOOKBACK
        seen: dict[str, float] = dict(cur.get("seen", {})) if cur else {}
        stop_at = newest - overlap if cur else newest
        mentions: list[Mention] = []
        warnings: list[str] = []
        count = 0
        reached = False
        try:
            for item in self._items(kind, arg):
                count += 1
                created = float(getattr(item, "created_utc", 0) or 0)
                if created < stop_at:
                    reached = True
                    break
                fullname = item.fullname
                if fullname in seen:
                    continue
                seen[fullname] = created
                try:
                    mentions.append(parse_pushshift(_raw(item), []))
                except (Skip, Ignore):
                    continue
        except prawcore.exceptions.PrawcoreException as e:
            raise _error(e, key, self.clock.now()) from None
        if cur and not reached and count >= MAX_ITEMS:
            warnings.append(f"{key}: more than {MAX_ITEMS} new items since the last poll; "
                            "Reddit serves no more, some may be missed (poll more often)")
        newest = max([newest, *seen.values()])
        seen = {k: t for k, t in seen.items() if t >= newest - overlap}
        return mentions, {"newest": newest, "seen": seen}, warnings


def _raw(item: Any) -> dict[str, Any]:
    """The listing's own fields of a praw Comment or Submission (no extra request)."""
    data = {k: v for k, v in vars(item).items() if not k.startswith("_")}
    author = data.get("author")
    data["author"] = getattr(author, "name", None) or "[deleted]"
    sub = data.get("subreddit")
    if sub is not None:
        data["subreddit"] = getattr(sub, "display_name", str(sub))
    return data


def _where(listing: str) -> str:
    return "sources.reddit.multireddits" if "/" in listing else "sources.reddit.subreddits"


def _error(e: Exception, listing: str, now: float) -> SourceError:
    exc = prawcore.exceptions
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    url = str(getattr(response, "url", "") or "")
    headers = getattr(response, "headers", None) or {}
    if isinstance(e, exc.TooManyRequests) or status == 429:
        wait = e.retry_after if isinstance(e, exc.TooManyRequests) else \
            headers.get("retry-after")
        return SourceError(f"Reddit answered 429 (too many requests) for {listing}",
                           retry_after=retry_after_seconds(wait, now))
    if isinstance(e, exc.ServerError) or (status is not None and status >= 500):
        return SourceError(f"Reddit answered {status} for {listing} (after retries)")
    if isinstance(e, exc.OAuthException | exc.InvalidToken) or status == 401 or (
            status == 400 and "access_token" in url):
        return SourceError(
            f"Reddit refused the app's credentials (HTTP {status or 401}): check the "
            "client id and secret of a 'script' app at https://www.reddit.com/prefs/apps",
            setting=CREDENTIALS)
    if isinstance(e, exc.Forbidden):
        return SourceError(f"Reddit answered 403 (forbidden) for {listing}: a private, "
                           "quarantined or banned subreddit?", setting=_where(listing))
    if isinstance(e, exc.NotFound | exc.Redirect):
        return SourceError(f"Reddit has no such subreddit or multireddit for {listing}",
                           setting=_where(listing))
    if isinstance(e, exc.RequestException):
        cause = e.original_exception
        return SourceError(f"cannot reach Reddit for {listing}: {type(cause).__name__}")
    if isinstance(e, exc.BadJSON):
        return SourceError(f"Reddit answered {listing} with something that is not JSON")
    return SourceError(f"Reddit failed for {listing}: {type(e).__name__} {status or ''}".strip())
