"""Source records -> :class:`~monitor.models.Mention`: one parser per record shape.

Used by the dump readers (historical files) and the live connectors alike, so a post
becomes the same mention whether it was replayed or polled:

- ``parse_mention`` — mention JSONL, the interchange format (DESIGN.md CONTRACT);
- ``parse_pushshift`` — a Reddit comment or submission as the API, Pushshift and Arctic
  Shift give it;
- ``parse_jetstream`` — a Bluesky Jetstream frame.

A parser raises :class:`Skip` for a record that is not a usable mention (with a short,
countable reason) and :class:`Ignore` for a valid record that is not a post; problems it
could mend are appended to ``notes``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monitor.models import Mention, TimeFormatError, parse_time, qualify

CLOCK_SKEW = 86400.0  # a Jetstream createdAt further than this from time_us is not trusted


class Skip(Exception):
    """This line is not a usable mention; ``reason`` is the short, countable part."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class Ignore(Exception):
    """This line is valid but not a post (a like, a delete, an identity event...)."""


Notes = list[tuple[str, str]]
Parser = Callable[[dict[str, Any], Notes], Mention]


# --------------------------------------------------------------------------- mention JSONL

OPTIONAL_STR = ("author", "url", "title", "topic", "lang")


def parse_mention(obj: dict[str, Any], notes: Notes) -> Mention:
    """A mention JSONL object (CONTRACT) to a Mention; unknown keys go to ``extra``."""
    source = obj.get("source", "dump")
    if not isinstance(source, str) or not source:
        raise Skip("bad 'source'", f"expected a string, found {source!r:.40}")
    raw_id = _require_id(obj, "id")
    text = obj.get("text", _MISSING)
    if text is _MISSING:
        raise Skip("missing 'text'")
    if not isinstance(text, str):
        raise Skip("bad 'text'", f"expected a string, found {type(text).__name__}")
    created = _require_time(obj, "created_at")
    mid = qualify(source, raw_id)
    thread = _optional_id(obj, "thread_id", notes)
    parent = _optional_id(obj, "parent_id", notes)
    fields: dict[str, Any] = {}
    for key in OPTIONAL_STR:
        value = obj.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            fields[key] = value
        else:
            notes.append((f"bad '{key}' dropped", f"expected a string, found {value!r:.40}"))
    followers = obj.get("author_followers")
    if followers is not None:
        if isinstance(followers, int) and not isinstance(followers, bool) and followers >= 0:
            fields["author_followers"] = followers
        else:
            notes.append(("bad 'author_followers' dropped",
                          f"expected a whole number, found {followers!r:.40}"))
    metrics = _metrics(obj.get("metrics"), notes)
    extra = {} if obj.keys() <= KNOWN_KEYS else {
        k: v for k, v in obj.items() if k not in KNOWN_KEYS}
    return Mention(id=mid, text=text, created_at=created, source=source,
                   thread_id=qualify(source, thread) if thread else mid,
                   parent_id=qualify(source, parent) if parent else None,
                   metrics=metrics, extra=extra, **fields)


KNOWN_KEYS = frozenset(("id", "text", "created_at", "source", "thread_id", "parent_id",
                        "author_followers", "metrics", *OPTIONAL_STR))
_MISSING = object()


def _require_id(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        raise Skip(f"missing '{key}'")
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise Skip(f"bad '{key}'", f"expected a string or number, found {value!r:.40}")
    return str(value)


def _optional_id(obj: dict[str, Any], key: str, notes: Notes) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        notes.append((f"bad '{key}' dropped", f"expected a string, found {value!r:.40}"))
        return None
    return str(value)


def _require_time(obj: dict[str, Any], key: str) -> float:
    if key not in obj:
        raise Skip(f"missing '{key}'")
    try:
        return parse_time(obj[key])
    except TimeFormatError as e:
        raise Skip(f"bad '{key}'", str(e)) from None


def _metrics(value: Any, notes: Notes) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        notes.append(("bad 'metrics' dropped", f"expected an object, found {value!r:.40}"))
        return {}
    out: dict[str, int] = {}
    for k, v in value.items():
        if isinstance(v, int) and not isinstance(v, bool):
            out[k] = v
        elif isinstance(v, str) and v.lstrip("-").isdigit():
            out[k] = int(v)
        else:
            notes.append((f"bad 'metrics.{k}' dropped",
                          f"expected a whole number, found {v!r:.40}"))
    return out


# --------------------------------------------------------------------------- Pushshift

DELETED = frozenset(("[deleted]", "[removed]"))
REDDIT = "reddit"


def parse_pushshift(obj: dict[str, Any], notes: Notes) -> Mention:
    """A Pushshift / Arctic Shift comment (``RC_``) or submission (``RS_``).

    Comment: thread = ``link_id`` (the submission), parent = ``parent_id``.
    Submission: title + selftext, thread = its own fullname ``t3_<id>``.
    ``[deleted]`` authors become unknown; deleted or removed bodies carry no text.
    """
    is_comment = "body" in obj or "link_id" in obj
    kind = "t1" if is_comment else "t3"
    raw_id = obj.get("name") or obj.get("id")
    if not isinstance(raw_id, str) or not raw_id:
        raise Skip("missing 'id'")
    fullname = raw_id if raw_id.startswith(kind + "_") else f"{kind}_{raw_id}"
    if "created_utc" not in obj:
        raise Skip("missing 'created_utc'")
    try:
        created = parse_time(obj["created_utc"])
    except TimeFormatError as e:
        raise Skip("bad 'created_utc'", str(e)) from None
    author = obj.get("author")
    author = author if isinstance(author, str) and author not in DELETED else None
    permalink = obj.get("permalink")
    url = f"https://www.reddit.com{permalink}" if isinstance(permalink, str) and permalink \
        else None
    metrics: dict[str, int] = {}
    score = obj.get("score")
    if isinstance(score, int) and not isinstance(score, bool):
        metrics["score"] = score
    extra: dict[str, Any] = {}
    if isinstance(obj.get("subreddit"), str):
        extra["subreddit"] = obj["subreddit"]
    mid = f"{REDDIT}:{fullname}"
    if is_comment:
        body = obj.get("body")
        if not isinstance(body, str) or body in DELETED:
            raise Ignore
        link = obj.get("link_id")
        if not isinstance(link, str) or not link:
            raise Skip("missing 'link_id'", "a comment needs its submission")
        parent = obj.get("parent_id")
        return Mention(id=mid, text=body, created_at=created, source=REDDIT,
                       thread_id=f"{REDDIT}:{link if link.startswith('t3_') else 't3_' + link}",
                       parent_id=f"{REDDIT}:{parent}" if isinstance(parent, str) and parent
                       else None, author=author, url=url, metrics=metrics, extra=extra)
    title = obj.get("title")
    if not isinstance(title, str):
        raise Skip("missing 'title'", "a submission needs a title")
    selftext = obj.get("selftext")
    text = selftext if isinstance(selftext, str) and selftext not in DELETED else ""
    comments = obj.get("num_comments")
    if isinstance(comments, int) and not isinstance(comments, bool):
        metrics["replies"] = comments
    return Mention(id=mid, text=text, title=title, created_at=created, source=REDDIT,
                   thread_id=mid, author=author, url=url, metrics=metrics, extra=extra)


# --------------------------------------------------------------------------- Jetstream

POST = "app.bsky.feed.post"
BLUESKY = "bluesky"


def parse_jetstream(obj: dict[str, Any], notes: Notes) -> Mention:
    """A Jetstream frame: ``{did, time_us, kind, commit: {operation, collection, rkey,
    record, cid}}``. Only created posts are mentions; everything else is ignored.

    id = the post's at-URI; thread = ``record.reply.root.uri`` or the post itself.
    """
    if obj.get("kind") != "commit":
        raise Ignore
    commit = obj.get("commit")
    if not isinstance(commit, dict):
        raise Skip("missing 'commit'")
    if commit.get("collection") != POST or commit.get("operation") != "create":
        raise Ignore
    did, rkey, record = obj.get("did"), commit.get("rkey"), commit.get("record")
    if not isinstance(did, str) or not did.startswith("did:"):
        raise Skip("bad 'did'", f"expected a DID, found {did!r:.40}")
    if not isinstance(rkey, str) or not rkey:
        raise Skip("missing 'commit.rkey'")
    if not isinstance(record, dict):
        raise Skip("missing 'commit.record'")
    text = record.get("text")
    if not isinstance(text, str):
        raise Skip("bad 'commit.record.text'", "a post needs text")
    created = _jetstream_time(obj.get("time_us"), record.get("createdAt"), notes)
    uri = f"at://{did}/{POST}/{rkey}"
    thread = parent = None
    reply = record.get("reply")
    if isinstance(reply, dict):
        root, par = reply.get("root"), reply.get("parent")
        if isinstance(root, dict) and isinstance(root.get("uri"), str):
            thread = root["uri"]
        if isinstance(par, dict) and isinstance(par.get("uri"), str):
            parent = par["uri"]
    langs = record.get("langs")
    lang = langs[0] if isinstance(langs, list) and langs and isinstance(langs[0], str) else None
    return Mention(id=f"{BLUESKY}:{uri}", text=text, created_at=created, source=BLUESKY,
                   thread_id=f"{BLUESKY}:{thread}" if thread else "",
                   parent_id=f"{BLUESKY}:{parent}" if parent else None, author=did,
                   url=f"https://bsky.app/profile/{did}/post/{rkey}", lang=lang)


def _jetstream_time(time_us: Any, created_at: Any, notes: Notes) -> float:
    """``record.createdAt`` (the author's clock) unless absent, bad or a day off the relay's
    ``time_us``; then ``time_us``."""
    seen = time_us / 1e6 if isinstance(time_us, int) and not isinstance(time_us, bool) \
        else None
    if isinstance(created_at, str):
        try:
            ts = parse_time(created_at)
        except TimeFormatError:
            ts = None
        if ts is not None and (seen is None or abs(ts - seen) <= CLOCK_SKEW):
            return ts
        if seen is not None:
            notes.append(("createdAt untrusted, time_us used",
                          f"createdAt {created_at[:40]!r} is a day or more off time_us"))
    if seen is None:
        raise Skip("missing 'time_us'", "and no usable createdAt")
    return seen


PARSERS: dict[str, Parser] = {"jsonl": parse_mention, "pushshift": parse_pushshift,
                              "jetstream": parse_jetstream}
