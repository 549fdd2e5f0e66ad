"""Incremental statistics on event time: rolling windows and a seasonal, robust baseline.

Nothing here reads a clock: every method takes the event time it is about. State is
plain numbers, lists and dicts so the store can snapshot it as JSON (``state()`` and
``from_state()``).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

BUCKET = 60  # seconds: the resolution of every window


class RollingWindow:
    """Aggregates over the last ``span`` seconds, and the count of the span before it.

    ``add(...)`` puts a mention into its minute bucket (a late mention goes into the
    bucket it belongs to, or is refused when it is older than the window: the caller
    counts it as late). ``advance(t)`` moves the window's end to ``t``; aggregates then
    cover ``[t - span, t)``, and ``prev_n`` counts ``[t - 2 span, t - span)``.
    """

    __slots__ = ("span", "recent", "previous", "n", "neg", "csum", "eng", "reach",
                 "authors", "prev_n", "end", "top", "top_stale")

    def __init__(self, span: int) -> None:
        self.span = span
        # a bucket: [start, n, neg, compound_sum, engagement, reach, {author: n}]
        self.recent: deque[list[Any]] = deque()
        self.previous: deque[list[Any]] = deque()  # [start, n]
        self.n = 0
        self.neg = 0
        self.csum = 0.0
        self.eng = 0
        self.reach = 0
        self.authors: dict[str, int] = {}
        self.top = 0             # the most mentions by one author (when not stale)
        self.top_stale = False   # an author at the top lost mentions: recount on asking
        self.prev_n = 0
        self.end = 0.0

    def add(self, ts: float, author: str, compound: float, eng: int, reach: int) -> bool:
        start = int(ts) // BUCKET * BUCKET
        recent = self.recent
        if recent and recent[-1][0] == start:  # the common case, kept inline
            bucket = recent[-1]
        else:
            found = self._bucket(start)
            if found is None:
                return self._add_previous(start)
            bucket = found
        bucket[1] += 1
        self.n += 1
        if compound <= -0.05:
            bucket[2] += 1
            self.neg += 1
        bucket[3] += compound
        self.csum += compound
        bucket[4] += eng
        self.eng += eng
        bucket[5] += reach
        self.reach += reach
        ba = bucket[6]
        ba[author] = ba.get(author, 0) + 1
        authors = self.authors
        c = authors[author] = authors.get(author, 0) + 1
        if c > self.top:
            self.top = c
        return True

    def add_engagement(self, ts: float, delta: int) -> bool:
        """Engagement that grew on posts already counted (likes, reposts... refreshed):
        it goes into the minute it was seen, without a mention."""
        bucket = self._bucket(int(ts) // BUCKET * BUCKET)
        if bucket is None:
            return False
        bucket[4] += delta
        self.eng += delta
        return True

    def _bucket(self, start: int) -> list[Any] | None:
        """The minute bucket starting at ``start``, made if need be; None when that
        minute is older than the window."""
        recent = self.recent
        if recent and recent[-1][0] == start:
            return recent[-1]
        if not recent or recent[-1][0] < start:
            if start < self.end - self.span:
                return None
            bucket = [start, 0, 0, 0.0, 0, 0, {}]
            recent.append(bucket)
            return bucket
        return self._late_bucket(start)

    def _late_bucket(self, start: int) -> list[Any] | None:
        recent = self.recent
        if start < self.end - self.span:
            return None
        for i in range(len(recent) - 1, -1, -1):
            if recent[i][0] == start:
                return recent[i]
            if recent[i][0] < start:
                bucket = [start, 0, 0, 0.0, 0, 0, {}]
                recent.insert(i + 1, bucket)
                return bucket
        bucket = [start, 0, 0, 0.0, 0, 0, {}]
        recent.appendleft(bucket)
        return bucket

    def _add_previous(self, start: int) -> bool:
        if start < self.end - 2 * self.span:
            return False
        previous = self.previous
        for bucket in reversed(previous):
            if bucket[0] == start:
                bucket[1] += 1
                self.prev_n += 1
                return True
            if bucket[0] < start:
                break
        previous.append([start, 1])
        if len(previous) > 1 and previous[-2][0] > start:
            self.previous = deque(sorted(previous))
        self.prev_n += 1
        return True

    def advance(self, t: float) -> None:
        """Move the window's end to ``t`` (event time, never backwards)."""
        if t <= self.end:
            return
        self.end = t
        cut = t - self.span
        recent, authors = self.recent, self.authors
        while recent and recent[0][0] < cut:
            b = recent.popleft()
            self.n -= b[1]
            self.neg -= b[2]
            self.csum -= b[3]
            self.eng -= b[4]
            self.reach -= b[5]
            top = self.top
            for a, c in b[6].items():
                if authors[a] == top:
                    self.top_stale = True
                left = authors[a] - c
                if left:
                    authors[a] = left
                else:
                    del authors[a]
            self.previous.append([b[0], b[1]])
            self.prev_n += b[1]
        previous, old = self.previous, cut - self.span
        while previous and previous[0][0] < old:
            self.prev_n -= previous.popleft()[1]
        if not recent:
            self.csum = 0.0  # no float drift on an empty window

    def top_author_share(self) -> float:
        """The share of the window's mentions by its most active author. The top count
        is kept as mentions come and recounted only after it may have left the window
        (a busy topic has thousands of authors: a scan per question would dominate)."""
        if not self.n:
            return 0.0
        if self.top_stale:
            self.top = max(self.authors.values(), default=0)
            self.top_stale = False
        return self.top / self.n

    def empty(self) -> bool:
        return not self.recent and not self.previous

    def state(self) -> dict[str, Any]:
        return {"span": self.span, "end": self.end,
                "recent": [list(b) for b in self.recent],
                "previous": [list(b) for b in self.previous]}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> RollingWindow:
        w = cls(int(s["span"]))
        w.end = float(s["end"])
        for b in s["recent"]:
            bucket = [int(b[0]), int(b[1]), int(b[2]), float(b[3]), int(b[4]), int(b[5]),
                      dict(b[6])]
            w.recent.append(bucket)
            w.n += bucket[1]
            w.neg += bucket[2]
            w.csum += bucket[3]
            w.eng += bucket[4]
            w.reach += bucket[5]
            for a, c in bucket[6].items():
                w.authors[a] = w.authors.get(a, 0) + c
            w.top_stale = True
        for b in s["previous"]:
            w.previous.append([int(b[0]), int(b[1])])
            w.prev_n += int(b[1])
        return w


class SeasonalBaseline:
    """The expected mention count of a topic, by hour of day, robust to its own spikes.

    Counts arrive per ``bin`` seconds (``update(bin_start, count)``, every bin, zeros
    included). The model is ``level x season[hour of day]``: the level is an EWMA with a
    half-life of ``level_half_life`` seconds, each hour's factor an EWMA over that hour's
    bins. A bin is clipped before it is learned (at ``2 x expected + 5``; at the
    expected value itself while the caller says the topic is anomalous), so a spike
    never becomes the new normal. Until ``warmup`` seconds of history are in,
    ``expected()`` answers None: rules report warm-up, not alerts.
    """

    HOURS = 24

    def __init__(self, bin: int = 300, warmup: int = 86400, level_half_life: int = 3 * 86400,
                 season_half_life: int = 5 * 86400) -> None:
        self.bin = bin
        self.warmup = warmup
        self.a_level = 1.0 - 0.5 ** (bin / level_half_life)
        # each hour slot sees 3600/bin bins a day
        self.a_season = 1.0 - 0.5 ** (bin / season_half_life * (86400 / 3600))
        self.level = 0.0           # expected count per bin, deseasonalized
        self.season = [1.0] * self.HOURS
        self.seen = 0              # bins learned
        self.hour_seen = [0] * self.HOURS
        self.hour_sum = [0.0] * self.HOURS  # counts summed by hour during warm-up
        # expected() answers, valid until the next bin is learned
        self._memo: dict[tuple[float, float], float] = {}
        self._memo_seen = -1

    def _hour(self, t: float) -> int:
        return int(t // 3600) % self.HOURS

    def rate(self, t: float) -> float:
        """Expected count in the bin that contains ``t`` (the plain mean during warm-up)."""
        if self.warming_up():
            return sum(self.hour_sum) / self.seen if self.seen else 0.0
        return self.level * self.season[self._hour(t)]

    def warming_up(self) -> bool:
        return self.seen * self.bin < self.warmup

    def expected(self, start: float, end: float, *, force: bool = False) -> float | None:
        """Expected count in ``[start, end)``, or None during warm-up (unless forced)."""
        if self.warming_up() and not (force and self.seen > 0):
            return None
        memo = self._memo
        if self._memo_seen != self.seen:  # learned since: forget
            memo.clear()
            self._memo_seen = self.seen
        key = (start, end)
        value = memo.get(key)
        if value is None:
            memo[key] = value = self._expected(start, end)
        return value

    def _expected(self, start: float, end: float) -> float:
        total, t = 0.0, start
        while t < end:
            step = min(end, (t // 3600 + 1) * 3600) - t
            total += self.rate(t) * step / self.bin
            t += step
        return total

    def update(self, bin_start: float, count: float, protect: bool = False) -> None:
        """Learn one complete bin (score before you learn).

        During warm-up the bins are only summed by hour of day; when it ends, the level is
        their mean and each hour's factor its own mean over the level (an unbiased start;
        learning the factors one bin at a time from a level still forming skews them).
        """
        hour = self._hour(bin_start)
        if self.warming_up():
            self.hour_seen[hour] += 1
            self.hour_sum[hour] += count
            self.seen += 1
            if not self.warming_up():
                self._start()
            return
        mu = self.rate(bin_start)
        x = min(count, mu if protect else 2.0 * mu + 5.0)
        s = self.season[hour]
        self.level += self.a_level * ((x / s if s > 1e-9 else x) - self.level)
        self.hour_seen[hour] += 1
        if self.level > 1e-9:
            self.season[hour] += self.a_season * (x / self.level - s)
            self._normalize()
        self.seen += 1

    def _start(self) -> None:
        total = sum(self.hour_sum)
        self.level = total / self.seen if self.seen else 0.0
        for h in range(self.HOURS):
            if self.hour_seen[h] and self.level > 1e-9:
                # shrink towards 1 a little: one day of small counts is noisy
                raw = self.hour_sum[h] / self.hour_seen[h] / self.level
                self.season[h] = (raw * self.hour_seen[h] + 1.0) / (self.hour_seen[h] + 1)
        self._normalize()

    def _normalize(self) -> None:
        mean_s = sum(self.season) / self.HOURS
        if mean_s > 1e-9:
            self.season = [v / mean_s for v in self.season]

    def state(self) -> dict[str, Any]:
        return {"bin": self.bin, "warmup": self.warmup, "a_level": self.a_level,
                "a_season": self.a_season, "level": self.level,
                "season": list(self.season), "seen": self.seen,
                "hour_seen": list(self.hour_seen), "hour_sum": list(self.hour_sum)}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> SeasonalBaseline:
        b = cls(bin=int(s["bin"]), warmup=int(s["warmup"]))
        b.a_level, b.a_season = float(s["a_level"]), float(s["a_season"])
        b.level, b.season = float(s["level"]), [float(v) for v in s["season"]]
        b.seen = int(s["seen"])
        b.hour_seen = [int(v) for v in s.get("hour_seen", [0] * cls.HOURS)]
        b.hour_sum = [float(v) for v in s.get("hour_sum", [0.0] * cls.HOURS)]
        return b


class Spread:
    """Robust scale of a window's log-ratio ``r = log((observed + 1) / (expected + 1))``.

    An EWMA of ``|r|`` that ignores outliers (``|r|`` over 4 scales) and evaluations the
    caller flags as anomalous, so a spike never widens its own yardstick. It captures
    both Poisson noise (small counts) and the burstiness of social volume (large
    counts) from the topic's own history. ``sigma`` never goes below ``floor``: on a
    very steady topic a spike must still be large to count, not merely unusual.
    ``z(r)`` is the spike statistic.

    >>> s = Spread()
    >>> round(s.z(log_ratio(60, 20)), 1)   # three times the usual, before any history
    2.7
    """

    __slots__ = ("mad", "alpha", "n", "floor")

    def __init__(self, mad: float = 0.2, half_life: float = 2 * 1440,
                 floor: float = 0.4) -> None:
        self.mad = mad          # mean absolute log-ratio (0.80 sigma for a normal)
        self.alpha = 1.0 - 0.5 ** (1.0 / half_life)
        self.floor = floor
        self.n = 0

    def sigma(self) -> float:
        return max(self.mad / 0.7979, self.floor)

    def z(self, r: float) -> float:
        return r / self.sigma()

    def update(self, r: float) -> None:
        if abs(r) < 4.0 * max(self.mad / 0.7979, 0.05):
            self.mad += self.alpha * (abs(r) - self.mad)
            self.n += 1


def log_ratio(observed: float, expected: float) -> float:
    return math.log((observed + 1.0) / (expected + 1.0))
