"""What every live connector is, and the one error it raises.

A connector turns one service's public posts into :class:`~monitor.models.Mention` objects
and knows that service's API, cursors and rate limits, nothing of rules or alerts.

- A **polling source** (Reddit, Bluesky search, an RSS feed) has a ``name``, an
  ``interval`` and ``poll(cursor)``: given the cursor last committed (``None`` the first
  time), it yields :class:`Fetched` pages. Each page's mentions are committed in one
  transaction with the page's cursor, so a crash between pages loses nothing and a re-poll
  counts nothing twice (ids are source-qualified and deduplicated).
- A **subscription** (Bluesky Jetstream) has ``name`` and ``async stream(cursor, emit)``:
  it runs until cancelled, reconnecting itself, and awaits ``emit(fetched)`` for each
  stretch of posts, which returns once they are committed.

A failure is a :class:`SourceError`: what went wrong in words a person can act on,
whether the service asked for a pause (``retry_after``), and whether only a change of
setting can fix it (``setting``). The daemon logs it, records it in the source's health,
and backs off; it never crashes the daemon.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from monitor.models import Mention

Cursor = dict[str, Any]


@dataclass
class Fetched:
    """One page of a poll: its mentions, and the cursor to commit with them (``None``:
    the cursor does not move, as for the older pages of a newest-first listing)."""

    mentions: list[Mention]
    cursor: Cursor | None = None
    warnings: list[str] = field(default_factory=list)
    # fresh engagement counts of posts seen before: (mention id, {"likes": n, ...})
    updates: list[tuple[str, dict[str, int]]] = field(default_factory=list)

    @property
    def newest(self) -> float | None:
        return max((m.created_at for m in self.mentions), default=None)


class SourceError(Exception):
    """A poll failed; ``str(e)`` says what and what to do."""

    def __init__(self, message: str, *, retry_after: float | None = None,
                 setting: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.setting = setting


def combined(errors: list[SourceError]) -> SourceError:
    """Several failures of one poll as one error: each said, the longest pause asked."""
    if len(errors) == 1:
        return errors[0]
    waits = [e.retry_after for e in errors if e.retry_after is not None]
    return SourceError("; ".join(dict.fromkeys(str(e) for e in errors)),
                       retry_after=max(waits) if waits else None,
                       setting=next((e.setting for e in errors if e.setting), None))


class PollingSource(Protocol):
    name: str
    interval: float

    def poll(self, cursor: Cursor | None) -> Iterator[Fetched]: ...

    def close(self) -> None: ...


Emit = Callable[[Fetched], Awaitable[None]]


class Subscription(Protocol):
    name: str

    async def stream(self, cursor: Cursor | None, emit: Emit) -> None: ...


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
