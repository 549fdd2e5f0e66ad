"""Per-scope detection state: a thread or a topic, its windows, and the signals they give.

A ``Scope`` keeps one ``RollingWindow`` per (span, keyword filter) that its rules use, a
few recent posts as evidence, and, for a topic, the ``SeasonalBaseline`` that says what
normal looks like. ``signals(...)`` turns a window into the numbers rules compare.
Everything is event time; state is small and JSON-able.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from monitor.models import NEGATIVE_COMPOUND, iso
from monitor.rules import format_duration
from monitor.stats import RollingWindow, SeasonalBaseline, Spread, log_ratio

EVIDENCE_KEEP = {"thread": 48, "topic": 160}
TEXT_KEEP = 280
RATIO_FLOOR = 1.0


class Scope:
    """A thread (key = thread id) or a topic (key = topic name)."""

    __slots__ = ("scope", "key", "topic", "windows", "first_seen", "last_seen", "total",
                 "posts", "root", "baseline", "bin_start", "bin_count", "spread", "anomalous",
                 "next_look")

    def __init__(self, scope: str, key: str, topic: str, spans: list[tuple[int, str]],
                 baseline: SeasonalBaseline | None = None) -> None:
        self.scope = scope
        self.key = key
        self.topic = topic
        self.windows: dict[tuple[int, str], RollingWindow] = {
            sk: RollingWindow(sk[0]) for sk in spans}
        self.first_seen = 0.0
        self.last_seen = 0.0
        self.total = 0
        # evidence: (ts, id, author, text, url, compound, engagement)
        self.posts: deque[tuple[Any, ...]] = deque(maxlen=EVIDENCE_KEEP[scope])
        self.root: tuple[Any, ...] | None = None
        self.baseline = baseline
        self.bin_start = 0
        self.bin_count = 0
        self.spread: dict[int, Spread] = (
            {span: Spread() for span, _ in spans} if baseline is not None else {})
        self.anomalous = False  # any window's z above the calm line at the last minute
        self.next_look = 0      # the engine looks again, mid-minute, at this total

    # -- signals ---------------------------------------------------------------------
    def signals(self, span: int, fkey: str, now: float) -> Signals:
        """The window's signals at ``now``, each computed when first asked for."""
        return Signals(self, self.windows[(span, fkey)], span, now)

    def learn(self, now: float, protect_z: float = 2.5) -> None:
        """Teach each window's spread from this minute, unless it looks anomalous.

        ``anomalous`` (any window at ``protect_z`` or above) also stops the baseline
        from learning the bins that close meanwhile: a spike never becomes normal.
        """
        assert self.baseline is not None
        anomalous = False
        for (span, fkey), w in self.windows.items():
            if fkey:
                continue
            expected = self.baseline.expected(now - span, now, force=True)
            if expected is None:
                continue
            spread = self.spread[span]
            r = log_ratio(w.n, expected)
            if spread.z(r) >= protect_z:
                anomalous = True
            else:
                spread.update(r)
        self.anomalous = anomalous

    # -- evidence --------------------------------------------------------------------
    def top_posts(self, since: float, limit_engaged: int = 2,
                  limit_negative: int = 2) -> list[dict[str, Any]]:
        """The evidence, root first for a thread: the most engaged complaints, the most
        engaged post of all, then the most negative posts of the window."""
        cands = [p for p in self.posts if p[0] >= since] or list(self.posts)
        chosen: list[tuple[tuple[Any, ...], str]] = []
        if self.scope == "thread" and self.root is not None:
            chosen.append((self.root, "thread start"))
        negative = [p for p in cands if p[5] <= NEGATIVE_COMPOUND]
        for p in sorted(negative, key=lambda p: (-p[6], p[0]))[:limit_engaged]:
            chosen.append((p, "most engaged complaint"))
        for p in sorted(cands, key=lambda p: (-p[6], p[0]))[:1]:
            if p[6] > 0:
                chosen.append((p, "most engaged"))
        for p in sorted(negative, key=lambda p: (p[5], p[0]))[:limit_negative]:
            chosen.append((p, "most negative"))
        seen: set[str] = set()
        out = []
        for p, why in chosen:
            if p[1] in seen:
                continue
            seen.add(p[1])
            out.append({"id": p[1], "author": p[2], "text": p[3], "url": p[4],
                        "sentiment": round(p[5], 3), "engagement": p[6], "at": iso(p[0]),
                        "why": why})
        return out

    # -- persistence -----------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "scope": self.scope, "key": self.key, "topic": self.topic,
            "windows": [[s, f, w.state()] for (s, f), w in self.windows.items()],
            "first_seen": self.first_seen, "last_seen": self.last_seen, "total": self.total,
            "posts": [list(p) for p in self.posts], "root": list(self.root) if self.root else None,
            "baseline": self.baseline.state() if self.baseline else None,
            "bin_start": self.bin_start, "bin_count": self.bin_count,
            "spread": {str(k): [d.mad, d.n] for k, d in self.spread.items()},
            "anomalous": self.anomalous, "next_look": self.next_look,
        }

    @classmethod
    def from_state(cls, s: dict[str, Any], spans: list[tuple[int, str]]) -> Scope:
        baseline = SeasonalBaseline.from_state(s["baseline"]) if s.get("baseline") else None
        scope = cls(s["scope"], s["key"], s["topic"], spans, baseline)
        saved = {(int(sp), str(f)): RollingWindow.from_state(ws) for sp, f, ws in s["windows"]}
        for sk in scope.windows:  # rules may have changed since: keep what still applies
            if sk in saved:
                scope.windows[sk] = saved[sk]
        scope.first_seen, scope.last_seen = float(s["first_seen"]), float(s["last_seen"])
        scope.total = int(s["total"])
        scope.posts.extend(tuple(p) for p in s["posts"])
        scope.root = tuple(s["root"]) if s.get("root") else None
        scope.bin_start, scope.bin_count = int(s["bin_start"]), int(s["bin_count"])
        for span, (mad, n) in s.get("spread", {}).items():
            if int(span) in scope.spread:
                sp = scope.spread[int(span)]
                sp.mad, sp.n = float(mad), int(n)
        scope.anomalous = bool(s.get("anomalous", False))
        scope.next_look = int(s.get("next_look", 0))
        return scope


def _expected(s: Scope, w: RollingWindow, span: int, now: float) -> float | None:
    return s.baseline.expected(now - span, now) if s.baseline is not None else None


def _ratio(s: Scope, w: RollingWindow, span: int, now: float) -> float | None:
    expected = _expected(s, w, span, now)
    return None if expected is None else w.n / max(expected, RATIO_FLOOR)


def _zscore(s: Scope, w: RollingWindow, span: int, now: float) -> float | None:
    expected = _expected(s, w, span, now)
    return None if expected is None else s.spread[span].z(log_ratio(w.n, expected))


_Fn = Callable[["Scope", RollingWindow, int, float], Any]
_COMMON: dict[str, _Fn] = {
    "mentions": lambda s, w, span, now: w.n,
    "unique_authors": lambda s, w, span, now: len(w.authors),
    "negative": lambda s, w, span, now: w.neg,
    "negative_share": lambda s, w, span, now: w.neg / w.n if w.n else 0.0,
    "sentiment": lambda s, w, span, now: w.csum / w.n if w.n else 0.0,
    "engagement": lambda s, w, span, now: w.eng,
    "reach": lambda s, w, span, now: w.reach,
    "velocity": lambda s, w, span, now: w.n / (span / 3600.0),
    "previous": lambda s, w, span, now: w.prev_n,
    "acceleration": lambda s, w, span, now: (w.n - w.prev_n) / (span / 3600.0),
    "growth": lambda s, w, span, now: w.n / max(w.prev_n, 1),
    "top_author_share": lambda s, w, span, now: w.top_author_share(),
}
_BY_SCOPE: dict[str, dict[str, _Fn]] = {
    "thread": {**_COMMON,
               "total": lambda s, w, span, now: s.total,
               "age_minutes": lambda s, w, span, now:
                   (now - s.first_seen) / 60.0 if s.total else 0.0},
    "topic": {**_COMMON, "expected": _expected, "ratio": _ratio, "zscore": _zscore,
              "warming_up": lambda s, w, span, now:
                  True if _expected(s, w, span, now) is None else None},
}


class Signals:
    """The numbers rules compare, for one window at one moment, each computed the first
    time it is asked for: a look between minute boundaries usually needs two or three
    of them (the first condition of a rule that fails ends it). ``items()`` gives them
    all, as an alert carries them (a topic warming up: ``warming_up``, no expected)."""

    __slots__ = ("scope", "w", "span", "now", "_got")

    def __init__(self, scope: Scope, w: RollingWindow, span: int, now: float) -> None:
        self.scope, self.w, self.span, self.now = scope, w, span, now
        self._got: dict[str, Any] = {}

    def get(self, name: str, default: Any = None) -> Any:
        got = self._got
        if name in got:
            value = got[name]
            return default if value is None else value
        fn = _BY_SCOPE[self.scope.scope].get(name)
        if fn is None:
            return default
        value = got[name] = fn(self.scope, self.w, self.span, self.now)
        return default if value is None else value

    def __getitem__(self, name: str) -> Any:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def items(self) -> list[tuple[str, Any]]:
        out = []
        for name in _BY_SCOPE[self.scope.scope]:
            value = self.get(name)
            if value is not None:
                out.append((name, value))
        return out


def rounded(signals: Signals | dict[str, Any], window: int) -> dict[str, Any]:
    """Signals as an alert carries them: floats rounded, the window named, 'current' set."""
    out: dict[str, Any] = {"window": format_duration(window), "current": signals["mentions"]}
    for k, v in signals.items():
        out[k] = round(v, 3) if isinstance(v, float) else v
    return out
