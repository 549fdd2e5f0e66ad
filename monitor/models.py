"""The words of DESIGN.md: Mention, AlertEvent, and the time format helpers they need.

Times inside the engine are Unix seconds (float, UTC): cheap to compare and bucket.
They become ISO 8601 UTC strings only at the edges (JSON output, export, storage display).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

METRIC_KEYS = ("score", "likes", "reposts", "replies", "quotes")
NEGATIVE_COMPOUND = -0.05  # VADER's own convention: compound <= -0.05 is negative


class TimeFormatError(ValueError):
    """A timestamp that is neither ISO 8601 with a zone nor Unix seconds."""


def qualify(source: str, raw_id: str) -> str:
    """Source-qualify an id: ``qualify("reddit", "t1_x") == "reddit:t1_x"``; idempotent."""
    prefix = source + ":"
    return raw_id if raw_id.startswith(prefix) else prefix + raw_id


def parse_time(value: Any) -> float:
    """Parse ISO 8601 with a zone, or Unix seconds (number or digit string), to Unix seconds.

    >>> parse_time("2024-05-01T12:00:00Z")
    1714564800.0
    >>> parse_time("1714564800")
    1714564800.0
    """
    if type(value) is str and len(value) == 20 and value[10] == "T" and value[19] == "Z":
        try:  # the common case, 2024-05-01T12:00:00Z, without the general path's checks
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass  # the general path explains what is wrong
    if isinstance(value, bool):
        raise TimeFormatError(f"expected a timestamp, found {value!r}")
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, str):
        s = value.strip()
        if not s:
            raise TimeFormatError("empty timestamp")
        if s[0].isdigit() and ("-" not in s[1:] and ":" not in s):
            try:
                ts = float(s)
            except ValueError:
                raise TimeFormatError(f"not a timestamp: {value[:40]!r}") from None
        else:
            try:
                dt = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                raise TimeFormatError(
                    f"not ISO 8601: {value[:40]!r} (expected e.g. 2024-05-01T12:00:00Z)") from None
            if dt.tzinfo is None:
                raise TimeFormatError(
                    f"timestamp {value[:40]!r} has no time zone (add 'Z' or '+00:00')")
            ts = dt.timestamp()
    else:
        raise TimeFormatError(f"expected a timestamp, found {type(value).__name__}")
    if not math.isfinite(ts) or ts < 0 or ts > 32503680000:  # year 3000
        raise TimeFormatError(f"timestamp out of range: {value!r}")
    return ts


def iso(ts: float) -> str:
    """Unix seconds to ISO 8601 UTC with a 'Z': ``iso(0) == '1970-01-01T00:00:00Z'``."""
    dt = datetime.fromtimestamp(ts, UTC)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class Mention:
    """One public post that mentions something we watch.

    ``id`` and ``thread_id`` are source-qualified (``reddit:t1_abc``). ``created_at`` is
    event time in Unix seconds. The pipeline fills ``topics`` (topic matching) and
    ``compound`` (VADER sentiment); readers leave them empty. ``extra`` keeps unknown
    keys of the input so an export round-trips them.
    """

    id: str
    text: str
    created_at: float
    source: str = "dump"
    thread_id: str = ""
    parent_id: str | None = None
    author: str | None = None
    url: str | None = None
    title: str | None = None
    topic: str | None = None
    lang: str | None = None
    author_followers: int | None = None
    metrics: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    topics: tuple[str, ...] = ()
    compound: float | None = None

    def __post_init__(self) -> None:
        if not self.thread_id:
            self.thread_id = self.id

    @property
    def engagement(self) -> int:
        """Likes, reposts, replies, quotes and score added up (never negative)."""
        m = self.metrics
        if not m:
            return 0
        return max(0, sum(v for v in m.values() if isinstance(v, int)))

    def to_json(self) -> dict[str, Any]:
        """The mention JSONL form (CONTRACT): required keys, then the optional ones set."""
        out: dict[str, Any] = dict(self.extra)
        out.update(id=self.id, text=self.text, created_at=iso(self.created_at),
                   source=self.source, thread_id=self.thread_id)
        for key in ("parent_id", "author", "url", "title", "topic", "lang", "author_followers"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.metrics:
            out["metrics"] = dict(self.metrics)
        if self.compound is not None:
            out["sentiment"] = round(self.compound, 4)
        return out


SEVERITIES = ("info", "warning", "critical")
SEVERITY_RANK = {name: i for i, name in enumerate(SEVERITIES)}


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """Something happened to an alert: it ``fired``, ``escalated`` or ``resolved``.

    ``at`` is event time (the mention time that caused it), never the wall clock.
    ``signals`` carries the numbers a person needs to see why (current, expected,
    ratio, negative share, unique authors...). ``top_posts`` are the evidence.
    """

    event: str
    rule: str
    severity: str
    scope: str
    key: str
    topic: str
    at: float
    signals: dict[str, Any]
    summary: str = ""
    playbook: str = ""
    top_posts: tuple[dict[str, Any], ...] = ()
    step: int = 0

    def contract_json(self) -> dict[str, Any]:
        """Exactly the `replay --json` CONTRACT object."""
        return {"event": self.event, "rule": self.rule, "severity": self.severity,
                "scope": self.scope, "key": self.key, "topic": self.topic,
                "at": iso(self.at), "signals": self.signals}


@dataclass(slots=True)
class SourceState:
    """A live source's cursor (its connector's own, JSON) and its health, as stored.

    The cursor is committed in the same transaction as the mentions it produced.
    """

    name: str
    cursor: dict[str, Any] | None = None
    last_poll: float | None = None
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    errors_in_a_row: int = 0
    lag: float | None = None
    newest_at: float | None = None
    day: str | None = None
    mentions_today: int = 0
    mentions_total: int = 0

    def succeeded(self, at: float, stored: int, newest: float | None) -> None:
        """A poll (or a stretch of a subscription) that worked, ``stored`` new mentions."""
        self.last_poll = self.last_success = at
        self.errors_in_a_row = 0
        today = iso(at)[:10]
        if self.day != today:
            self.day, self.mentions_today = today, 0
        self.mentions_today += stored
        self.mentions_total += stored
        if newest is not None:
            self.newest_at = max(newest, self.newest_at or newest)
            self.lag = max(0.0, at - newest)

    def failed(self, at: float, message: str) -> None:
        self.last_poll = self.last_error_at = at
        self.last_error = message
        self.errors_in_a_row += 1
