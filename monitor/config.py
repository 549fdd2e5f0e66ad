"""The config file (``stormwatch.yaml``): database, rules files, topics. Named defaults.

```yaml
database: sqlite:///stormwatch.db      # or ${DATABASE_URL}; PostgreSQL: postgresql+psycopg://...
rules: [rules/default.yaml]            # files or directories, relative to this file
topics:
  acme:
    terms: [acme, "acme corp", "@acme", "#acmefail"]
    exclude: ["acme hardware"]
```

Every mistake is one ``ConfigError`` with file, line, key and what to do.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from monitor.errors import ConfigError
from monitor.rules import parse_duration
from monitor.topics import Topic, term_pattern
from monitor.yamlfile import LineDict, line_of, load_yaml, validation_error

DEFAULT_DATABASE = "sqlite:///stormwatch.db"
DEFAULT_BASELINE_BIN = 300          # seconds per baseline bin
DEFAULT_BASELINE_WARMUP = 86400     # history needed before topic baselines speak
BATCH_SIZE = 2000                   # mentions per transaction in replay
BATCH_WAIT = 0.1                    # seconds: a smaller batch goes once it waited this long


def default_rules_path() -> str:
    """The rules that ship with Stormwatch (``rules/default.yaml``)."""
    return str(resources.files("rules").joinpath("default.yaml"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class TopicSpec(_Strict):
    terms: list[str]
    exclude: list[str] = []

    @field_validator("terms", "exclude")
    @classmethod
    def _terms(cls, v: list[str]) -> list[str]:
        for t in v:
            if not t.strip():
                raise ValueError("terms must not be empty strings")
            term_pattern(t)
        return v

    @field_validator("terms")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("a topic needs at least one term")
        return v


def _interval(v: Any) -> int:
    seconds = parse_duration(v)
    if seconds < 10:
        raise ValueError("an interval is at least 10s")
    return seconds


def _http_url(v: str) -> str:
    if not v.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// address")
    return v.rstrip("/")


def _ws_url(v: str | None) -> str | None:
    if v is not None and not v.startswith(("ws://", "wss://")):
        raise ValueError("expected a ws:// or wss:// address (or null to turn it off)")
    return v


def _subreddit(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_]{1,20}", name.removeprefix("r/")):
        raise ValueError(f"not a subreddit name: {name!r}")
    return name.removeprefix("r/")


def _multireddit(name: str) -> str:
    if not re.fullmatch(r"(?:u/)?[A-Za-z0-9_-]{3,20}/(?:m/)?[A-Za-z0-9_]{2,50}", name):
        raise ValueError(f"not a multireddit: {name!r} (expected 'user/name')")
    user, _, rest = name.removeprefix("u/").partition("/")
    return f"{user}/{rest.removeprefix('m/')}"


Interval = Annotated[int | str, AfterValidator(_interval)]   # '90s', '15m' -> seconds
HttpUrl = Annotated[str, AfterValidator(_http_url)]
WsUrl = Annotated[str | None, AfterValidator(_ws_url)]


class RedditSpec(_Strict):
    client_id: str
    client_secret: str
    user_agent: str
    subreddits: list[Annotated[str, AfterValidator(_subreddit)]] = []  # matched here
    multireddits: list[Annotated[str, AfterValidator(_multireddit)]] = []  # "user/name"
    search: bool = True                 # search r/all for each topic's terms, newest first
    interval: Interval = "1m"
    oauth_url: HttpUrl = "https://oauth.reddit.com"
    reddit_url: HttpUrl = "https://www.reddit.com"
    timeout: float = 15.0


class RssFeedSpec(_Strict):
    url: HttpUrl
    interval: Interval = "15m"
    topic: str | None = None
    max_bytes: int = 10 << 20


class BlueskySpec(_Strict):
    jetstream: WsUrl = "wss://jetstream2.us-east.bsky.network/subscribe"  # null: off
    firehose: WsUrl = None             # a relay's or PDS's subscribeRepos, ws(s)://host
    handle: str | None = None          # with app_password: search (polling) too
    app_password: str | None = None
    service: HttpUrl = "https://bsky.social"   # where the account logs in (its PDS)
    search_interval: Interval = "2m"
    timeout: float = 15.0

    @field_validator("app_password")
    @classmethod
    def _pair(cls, v: str | None, info: Any) -> str | None:
        if (v is None) != (info.data.get("handle") is None):
            raise ValueError("handle and app_password go together (both, or neither)")
        return v


class SlackSpec(_Strict):
    type: Literal["slack"]
    webhook_url: HttpUrl | None = None     # an incoming webhook, or:
    bot_token: str | None = None           # a bot token and the channel to post in
    channel: str | None = None             # (updates then reply in the incident's thread)
    api_url: HttpUrl = "https://slack.com/api"

    @field_validator("channel")
    @classmethod
    def _one_way(cls, v: str | None, info: Any) -> str | None:
        webhook, token = info.data.get("webhook_url"), info.data.get("bot_token")
        if (token is None) != (v is None):
            raise ValueError("bot_token and channel go together (both, or neither)")
        if (webhook is None) == (token is None):
            raise ValueError("set webhook_url, or bot_token and channel (one of the two)")
        return v


class WebhookSpec(_Strict):
    type: Literal["webhook"]
    url: HttpUrl
    secret: str | None = None              # signs each body: X-Stormwatch-Signature


class EmailSpec(_Strict):
    type: Literal["email"]
    host: str
    port: int = 587
    security: Literal["starttls", "tls", "none"] = "starttls"  # tls: implicit, port 465
    username: str | None = None
    password: str | None = None
    sender: str                            # the From address
    to: list[str]

    @field_validator("to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("expected at least one address")
        for a in v:
            if "@" not in a or any(c in a for c in "\r\n,;<> "):
                raise ValueError(f"not an email address: {a!r}")
        return v


ChannelSpec = Annotated[SlackSpec | EmailSpec | WebhookSpec, Field(discriminator="type")]
Severity = Literal["info", "warning", "critical"]


def _clock_range(v: str) -> str:
    m = re.fullmatch(r"(\d\d):(\d\d)-(\d\d):(\d\d)", v.strip())
    if not m or int(m[1]) > 24 or int(m[3]) > 24 or int(m[2]) > 59 or int(m[4]) > 59:
        raise ValueError(f"expected HH:MM-HH:MM, found {v!r}")
    if (int(m[1]), int(m[2])) >= (int(m[3]), int(m[4])):
        raise ValueError(f"{v!r} ends before it starts (split a range across midnight "
                         "in two: 22:00-24:00 and 00:00-06:00)")
    return v.strip()


def _zone(v: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r} (e.g. Europe/Paris, America/New_York, "
                         "UTC)") from None
    return v


class TimeIntervalSpec(_Strict):
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = []  # []: all
    times: list[Annotated[str, AfterValidator(_clock_range)]] = []  # []: all day
    timezone: Annotated[str, AfterValidator(_zone)] = "UTC"


class EscalateSpec(_Strict):
    after: Interval                        # nobody acknowledged within this ...
    to: list[str]                          # ... so these channels hear of it too


class RouteSpec(_Strict):
    name: str
    to: list[str]                          # channel names
    min_severity: Severity = "warning"
    topics: list[str] = []                 # empty: any
    rules: list[str] = []
    scope: Literal["thread", "topic"] | None = None
    send_resolved: bool = True
    active: list[str] = []                 # time interval names; empty: always
    escalate: EscalateSpec | None = None


class NotifySpec(_Strict):
    channels: dict[str, ChannelSpec] = {}
    routes: list[RouteSpec] = []           # none: warning and above to every channel
    time_intervals: dict[str, list[TimeIntervalSpec]] = {}
    group_wait: Annotated[int | str, AfterValidator(parse_duration)] = 0
    repeat: Annotated[int | str, AfterValidator(parse_duration)] = "4h"  # 0: never


class SourcesSpec(_Strict):
    reddit: RedditSpec | None = None
    bluesky: BlueskySpec | None = None
    rss: dict[str, RssFeedSpec] = {}


def _lease(v: Any) -> int:
    seconds = parse_duration(v)
    if seconds < 2:
        raise ValueError("a lease lasts at least 2s")
    return seconds


def _keep(v: Any) -> int:
    seconds = parse_duration(v)
    if seconds < 600:
        raise ValueError("keep mentions at least 10m (the detectors and charts read them)")
    return seconds


def _listen(v: str | None) -> str | None:
    if v is None:
        return None
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:9464), found {v!r}")
    return v


class RunSpec(_Strict):
    """``stormwatch run``: health and metrics, logs, instances, retention."""

    health: Annotated[str | None, AfterValidator(_listen)] = "127.0.0.1:9464"
    stale: Annotated[int | str, AfterValidator(parse_duration)] = "30m"
    outbox_stuck: Annotated[int | str, AfterValidator(parse_duration)] = "10m"
    log_format: Literal["text", "json"] = "text"
    instance: str | None = None
    lease: Annotated[int | str, AfterValidator(_lease)] = "30s"
    keep_mentions: Annotated[int | str, AfterValidator(_keep)] = "90d"


class ConfigSpec(_Strict):
    database: str = DEFAULT_DATABASE
    rules: list[str] = []
    topics: dict[str, TopicSpec] = {}
    sources: SourcesSpec = SourcesSpec()
    notify: NotifySpec = NotifySpec()
    run: RunSpec = RunSpec()


@dataclass(frozen=True)
class Config:
    database: str = DEFAULT_DATABASE
    rules: tuple[str, ...] = ()
    topics: tuple[Topic, ...] = ()
    sources: SourcesSpec = field(default_factory=SourcesSpec)
    notify: NotifySpec = field(default_factory=NotifySpec)
    run: RunSpec = field(default_factory=RunSpec)
    path: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def rules_paths(self) -> tuple[str, ...]:
        return self.rules or (default_rules_path(),)


def load_config(path: str | None) -> Config:
    """Read a config file; ``None`` gives the embedded defaults (SQLite, shipped rules)."""
    if path is None:
        return Config()
    data = load_yaml(path)
    if data is None:
        data = LineDict()
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of settings (database, rules, topics)",
                          path=path, line=getattr(data, "line", 1) or 1)
    try:
        spec = ConfigSpec.model_validate(data)
    except ValidationError as e:
        raise validation_error(e, data, path, "topic", ConfigSpec) from None
    for name, feed in spec.sources.rss.items():
        if feed.topic is not None and feed.topic not in spec.topics:
            raise ConfigError(
                f"sources.rss.{name}.topic: no topic '{feed.topic}'", path=path,
                line=line_of(data, ("sources", "rss", name, "topic")),
                hint=f"topics here: {', '.join(spec.topics) or 'none (add a topics: section)'}")
    _check_routes(spec.notify, data, path)
    base = os.path.dirname(os.path.abspath(path))
    rules = tuple(p if os.path.isabs(p) else os.path.join(base, p) for p in spec.rules)
    topics = tuple(Topic(name=name, terms=tuple(t.terms), exclude=tuple(t.exclude))
                   for name, t in spec.topics.items())
    database = spec.database
    if database.startswith("sqlite:///") and not database.startswith("sqlite:////"):
        rel = database.removeprefix("sqlite:///")
        if rel and not os.path.isabs(rel) and rel != ":memory:":
            database = "sqlite:///" + os.path.join(base, rel)
    return Config(database=database, rules=rules, topics=topics, sources=spec.sources,
                  notify=spec.notify, run=spec.run, path=path)


def _check_routes(notify: NotifySpec, data: Any, path: str) -> None:
    """Names that routes use must exist: channels and time intervals."""
    def fail(where: tuple[Any, ...], what: str, have: list[str], kind: str) -> None:
        raise ConfigError(f"notify.{'.'.join(map(str, where[1:]))}: {what}", path=path,
                          line=line_of(data, where),
                          hint=f"{kind} here: {', '.join(have) or 'none'}")

    channels, intervals = list(notify.channels), list(notify.time_intervals)
    names: set[str] = set()
    for i, r in enumerate(notify.routes):
        if r.name in names:
            fail(("notify", "routes", i, "name"), f"a second route named '{r.name}'",
                 sorted(names), "routes")
        names.add(r.name)
        for c in [*r.to, *(r.escalate.to if r.escalate else [])]:
            if c not in channels:
                key = "to" if c in r.to else "escalate"
                fail(("notify", "routes", i, key), f"no channel '{c}'", channels, "channels")
        for t in r.active:
            if t not in intervals:
                fail(("notify", "routes", i, "active"), f"no time interval '{t}'",
                     intervals, "time intervals")
