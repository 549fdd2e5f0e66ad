"""Text from strangers, made inert before it reaches a person.

Posts, author names, titles and thread ids come from social media. In Slack they must
not mention anyone (``<!channel>``, ``<@U123>``), link anywhere (``<https://evil|click
here>``) or format (``*bold*``); in an email header they must not start a new header
(CR/LF); nowhere may they reverse the text around them (bidi overrides) or hide
(control characters); and a 100 KB post must not become a 100 KB message.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

# C0 and C1 controls (tab and newline handled apart), bidi embeddings, overrides and
# isolates, and the zero-width and line/paragraph separators that can hide or reorder text
_HIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069"
                     "\ufeff]")
_SPACE = re.compile(r"[ \t\r\n]+")


def visible(text: str) -> str:
    """Hidden and reordering characters shown as ``[U+202E]``, never obeyed."""
    return _HIDDEN.sub(lambda m: f"[U+{ord(m.group()):04X}]", text)


def one_line(text: str | None, limit: int) -> str:
    """A name, title or header value: one line (CR/LF and tabs become spaces), hidden
    characters shown, at most ``limit`` characters (an ellipsis says it was cut)."""
    if not text:
        return ""
    flat = visible(_SPACE.sub(" ", str(text)).strip())
    return flat if len(flat) <= limit else flat[:limit - 1].rstrip() + "…"


def excerpt(text: str | None, limit: int) -> str:
    """A post's body for a message: like :func:`one_line`, cut at ``limit``."""
    return one_line(text, limit)


def slack_escape(text: str) -> str:
    """For Slack mrkdwn: ``&``, ``<`` and ``>`` as entities (Slack's own rule), so no
    mention, link or channel ping can be formed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def safe_url(url: str | None) -> str | None:
    """An http(s) address fit to be a link target, or None. Characters that could close
    a Slack link or an HTML attribute are percent-encoded."""
    if not url or not isinstance(url, str):
        return None
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return quote(url, safe=":/?#[]@!$&'()*+,;=%-._~")
