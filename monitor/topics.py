"""Topic matching: which watched topics does a mention belong to?

A topic is a name, terms and exclusions. Terms match case-insensitively as whole words
or phrases (``acme`` does not match ``acmeville``; ``acme corp`` matches across any run
of spaces), ``@handles`` and ``#tags`` match only as handles and tags. A mention that
matches an exclusion is out of the topic even if a term matches. A mention whose own
``topic`` field names a watched topic is in it (pre-tagged dumps).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from monitor.models import Mention

ALL_TOPIC = "all"


@dataclass(frozen=True)
class Topic:
    name: str
    terms: tuple[str, ...]
    exclude: tuple[str, ...] = field(default=())


def term_pattern(term: str) -> str:
    """The regex for one term: whole word/phrase, or an @handle / #tag.

    >>> bool(re.search(term_pattern("acme corp"), "ACME  Corp!", re.I))
    True
    >>> bool(re.search(term_pattern("acme"), "acmeville", re.I))
    False
    """
    term = term.strip()
    if not term:
        raise ValueError("empty term")
    if term[0] in "@#":
        return rf"(?<![\w{re.escape(term[0])}]){re.escape(term)}(?!\w)"
    words = [re.escape(w) for w in term.split()]
    body = r"\s+".join(words)
    left = r"(?<!\w)" if term[0].isalnum() or term[0] == "_" else ""
    right = r"(?!\w)" if term[-1].isalnum() or term[-1] == "_" else ""
    return f"{left}{body}{right}"


class Terms:
    """A compiled list of terms: ``search(text)`` is truthy when any term matches.

    The exact pattern (whole words, ``@``/``#`` boundaries, any case) is slow to scan
    for, about 50 us on a post; a plain alternation of the terms' lowercase first words
    over the lowercased text is fast (about 2 us) and finds every line the exact one
    could, so it screens first.

    >>> t = Terms(["data breach", "@acme"])
    >>> [bool(t.search(s)) for s in ("ACME had a DATA  breach", "database", "x@acme")]
    [True, False, False]
    """

    __slots__ = ("screen", "pattern")

    def __init__(self, terms: Iterable[str]) -> None:
        kept = [t.strip() for t in terms if t.strip()]
        if not kept:
            raise ValueError("no terms")
        firsts = sorted({t.split()[0].lower() for t in kept}, key=len, reverse=True)
        self.screen = re.compile("|".join(re.escape(f) for f in firsts))
        self.pattern = re.compile("|".join(term_pattern(t) for t in kept), re.IGNORECASE)

    def search(self, text: str) -> bool:
        return self.screen.search(text.lower()) is not None and \
            self.pattern.search(text) is not None


def compile_terms(terms: Iterable[str]) -> Terms | None:
    kept = list(terms)
    return Terms(kept) if any(t.strip() for t in kept) else None


class TopicMatcher:
    """``topics_of(mention) -> tuple of topic names`` (empty: out of scope)."""

    def __init__(self, topics: Sequence[Topic]) -> None:
        self.topics = tuple(topics)
        self._all = not self.topics
        self._compiled = [(t.name, compile_terms(t.terms), compile_terms(t.exclude))
                          for t in self.topics]
        self._names = {t.name for t in self.topics}
        self.names: tuple[str, ...] = (ALL_TOPIC,) if self._all else tuple(
            t.name for t in self.topics)

    @classmethod
    def for_match(cls, terms: Sequence[str]) -> TopicMatcher:
        """An ad-hoc topic from ``--match`` terms, named after the first term."""
        name = terms[0].strip().lstrip("@#").lower() or "match"
        return cls([Topic(name=name, terms=tuple(terms))])

    def prefilter_terms(self) -> list[str] | None:
        """Lowercase literals that every in-scope line must contain one of (None: all)."""
        if self._all:
            return None
        out: set[str] = set()
        for topic in self.topics:
            out.add(topic.name.lower())  # pre-tagged lines carry the name
            for term in topic.terms:
                out.add(term.strip().split()[0].lower())
        if not all(t.isascii() and not any(c in t for c in '"\\/') for t in out):
            return None  # JSON may escape these (\uXXXX, \", \/): no literal to find
        return sorted(out)

    def topics_of(self, mention: Mention) -> tuple[str, ...]:
        if self._all:
            return (ALL_TOPIC,)
        text = mention.text if not mention.title else f"{mention.title}\n{mention.text}"
        found: list[str] = []
        for name, terms, exclude in self._compiled:
            if (mention.topic == name or (terms is not None and terms.search(text))) and not (
                    exclude is not None and exclude.search(text)):
                found.append(name)
        return tuple(found)
