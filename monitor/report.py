"""Charts of what happened: volume against the baseline band, negative share, and the
alert events on the timeline (matplotlib; a PNG, and a self-contained HTML page).

``collect`` runs stored (or replayed) mentions through an engine in event time and, bin
by bin, counts the topic's or thread's mentions and negative ones, and reads what the
topic's seasonal baseline expected for that bin before learning it: the band is what
the engine itself compared against, not a smoothed afterthought.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from monitor.models import NEGATIVE_COMPOUND, AlertEvent, Mention, iso

HISTORY = 14 * 86400  # mentions replayed before a chart's start, for its baseline
STEPS = (300, 900, 1800, 3600, 7200, 21600, 86400)
COLOURS = {"info": "#439fe0", "warning": "#daa038", "critical": "#d40e0d",
           "resolved": "#2eb67d"}


def step_for(span: float, bins: int = 150) -> int:
    """A round bin size giving about ``bins`` bins over ``span`` seconds."""
    return next((s for s in STEPS if span / s <= bins), STEPS[-1])


@dataclass
class Timeline:
    title: str
    start: float
    step: int
    counts: list[int]
    negative: list[int]
    expected: list[float | None]  # None: the baseline was warming up (or a thread)
    events: list[AlertEvent] = field(default_factory=list)

    @property
    def end(self) -> float:
        return self.start + self.step * len(self.counts)


class Recorder:
    """Counts a topic's (or a thread's) mentions, and the negative ones, per base bin as
    they pass an engine, and what the topic's seasonal baseline expected for each bin,
    read before the engine learned it: call ``before(ts)`` ahead of ``engine.ingest``
    and ``count(m)`` after. ``timeline()`` rebins for a chart."""

    def __init__(self, engine: Any, *, topic: str | None = None,
                 thread: str | None = None, base: int = 300) -> None:
        self.engine, self.topic, self.thread, self.base = engine, topic, thread, base
        self.counts: dict[int, list[int]] = {}      # bin start -> [mentions, negative]
        self.expected: dict[int, float | None] = {}
        self.next_bin: int | None = None            # the first bin not read yet

    def before(self, ts: float) -> None:
        b = int(ts) // self.base * self.base
        if self.next_bin is None:
            self.next_bin = b
        if b < self.next_bin:
            return
        scope = self.engine.topics.get(self.topic) if self.topic is not None else None
        baseline = scope.baseline if scope is not None else None
        while self.next_bin <= b:
            nb = self.next_bin
            self.expected[nb] = (baseline.expected(nb, nb + self.base)
                                 if baseline is not None else None)
            self.next_bin = nb + self.base

    def count(self, m: Mention) -> None:
        if (self.thread is not None and m.thread_id != self.thread) or (
                self.topic is not None and self.topic not in m.topics):
            return
        c = self.counts.setdefault(int(m.created_at) // self.base * self.base, [0, 0])
        c[0] += 1
        if m.compound is not None and m.compound <= NEGATIVE_COMPOUND:
            c[1] += 1

    def timeline(self, *, start: float | None = None, end: float | None = None,
                 step: int | None = None, title: str = "") -> Timeline:
        known = sorted(set(self.counts) | set(self.expected))
        lo = start if start is not None else (known[0] if known else 0.0)
        hi = end if end is not None else (known[-1] + self.base if known else lo + self.base)
        step = step or step_for(hi - lo)
        n = max(1, math.ceil((hi - lo) / step))
        counts, negative = [0] * n, [0] * n
        expected: list[float | None] = [0.0] * n
        for i in range(n):
            b0 = lo + i * step
            for b in range(int(b0) // self.base * self.base, int(b0 + step), self.base):
                if not b0 <= b < b0 + step:
                    continue
                c = self.counts.get(b)
                if c:
                    counts[i] += c[0]
                    negative[i] += c[1]
                e = self.expected.get(b)
                cur = expected[i]
                expected[i] = None if e is None or cur is None else cur + e
        return Timeline(title or (f"topic {self.topic}" if self.topic else
                                  f"thread {self.thread}"), lo, step, counts, negative, expected)


def collect(mentions: Iterable[Mention], engine: Any, *, start: float, end: float,
            topic: str | None = None, thread: str | None = None,
            step: int | None = None, title: str = "") -> Timeline:
    """Feed ``mentions`` (topics and sentiment set, in time order, from before ``start``
    so the baseline has warmed up) to ``engine``; chart the scope in ``[start, end)``."""
    rec = Recorder(engine, topic=topic, thread=thread)
    for m in mentions:
        if m.created_at >= end:
            break
        rec.before(m.created_at)
        engine.ingest(m)
        if m.created_at >= start:
            rec.count(m)
    rec.before(end - 1)
    return rec.timeline(start=start, end=end, step=step, title=title)


def render_png(t: Timeline) -> bytes:
    """Volume with the baseline band, negative share, alert events as marks."""
    import matplotlib

    matplotlib.use("Agg")
    from datetime import UTC, datetime

    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    x = [datetime.fromtimestamp(t.start + i * t.step, UTC) for i in range(len(t.counts))]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(11, 5.2), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1.2]})
    width = t.step / 86400 * 0.9
    ax.bar(x, t.counts, width=width, align="edge", color="#5b7fa3", label="mentions",
           zorder=2)
    band = [(i, e) for i, e in enumerate(t.expected) if e is not None]
    if band:
        xs = [x[i] for i, _ in band]
        lo = [max(0.0, e - 2 * math.sqrt(e + 1)) for _, e in band]
        hi = [e + 2 * math.sqrt(e + 1) for _, e in band]
        ax.fill_between(xs, lo, hi, step="post", color="#9aa5b1", alpha=0.45, zorder=1,
                        label="baseline: expected ± 2√(expected+1)")
        ax.step(xs, [e for _, e in band], where="post", color="#2d3640", linewidth=1.1,
                label="expected", zorder=3)
    share = [neg / c if c else float("nan") for neg, c in zip(t.negative, t.counts,
                                                                strict=True)]
    ax2.plot(x, share, color="#b03a2e", linewidth=1)
    ax2.axhline(0.35, color="#b03a2e", linewidth=0.6, linestyle=":")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("negative")
    ax.set_ylabel(f"mentions / {t.step // 60} min")
    seen: set[str] = set()
    for ev in t.events:
        colour = COLOURS["resolved"] if ev.event == "resolved" else COLOURS[ev.severity]
        when = datetime.fromtimestamp(ev.at, UTC)
        label = ev.event if ev.event == "resolved" else f"{ev.event} ({ev.severity})"
        for a in (ax, ax2):
            a.axvline(when, color=colour, linewidth=1.4,
                      linestyle="--" if ev.event == "resolved" else "-",
                      label=label if a is ax and label not in seen else None)
        seen.add(label)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.set_title(t.title, fontsize=11, loc="left")
    ax2.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=UTC))
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def render_html(t: Timeline, png: bytes, *, heading: str | None = None,
                extra: str = "") -> str:
    """One page, nothing fetched: the chart inline, the events listed (escaped)."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(iso(ev.at))}</td><td>{e(ev.event)}</td><td>{e(ev.severity)}</td>"
        f"<td>{e(ev.rule)}</td><td>{e(ev.scope)} {e(ev.key)}</td><td>{e(ev.summary)}</td></tr>"
        for ev in t.events)
    table = ("<table><tr><th>at (UTC)</th><th>event</th><th>severity</th><th>rule</th>"
             f"<th>scope</th><th>summary</th></tr>{rows}</table>" if rows
             else "<p>No alert events in this range.</p>")
    src = "data:image/png;base64," + base64.b64encode(png).decode()
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{e(heading or t.title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;font-size:.9em}td,th{border-bottom:1px solid #ddd;"
        "padding:.3em .6em;text-align:left;vertical-align:top}img{max-width:100%}</style>"
        f"</head><body><h1>{e(heading or t.title)}</h1>"
        f"<p>{e(iso(t.start))} to {e(iso(t.end))}, {t.step // 60}-minute bins, "
        f"{sum(t.counts):,} mentions.</p>"
        f"<img alt='{e(t.title)}: volume against the baseline, negative share, alert "
        f"events' src='{src}'>{table}{extra}</body></html>")


def from_store(s: Any, store: Any, *, topic: str | None = None, thread: str | None = None,
               since: float | None = None, until: float | None = None) -> Timeline:
    """The timeline of a topic or thread from a database's mentions and alert events
    (default range: the last day of stored mentions). The two weeks of mentions before
    the range are run through the engine first, so the band is the baseline it had."""
    from monitor import app as core
    from monitor.store import event_of

    if (topic is None) == (thread is None):
        raise ValueError("a timeline is of a topic or of a thread")
    first, last = store.mention_span()
    if first is None:
        raise LookupError("the database holds no mentions")
    end = until if until is not None else last + 1
    start = since if since is not None else max(first, end - 86400)
    engine = core.build_engine(s)
    # the baseline as the engine had it: its memory (half-lives of 3 and 5 days) is in
    # the two weeks before; a day's warm-up alone would learn whatever that day held
    t = collect(store.iter_mentions(since=max(first, start - HISTORY), until=end), engine,
                start=start,
                end=end, topic=topic, thread=thread)
    for row in store.list_events():
        if not start <= row["at"] < end:
            continue
        if (thread is not None and row["key"] != thread) or (
                topic is not None and row["topic"] != topic):
            continue
        t.events.append(event_of(row))
    return t


def write(t: Timeline, base: str, heading: str | None = None, extra: str = "") -> list[str]:
    """``base``.png and ``base``.html; returns the paths written."""
    png = render_png(t)
    with open(base + ".png", "wb") as f:
        f.write(png)
    with open(base + ".html", "w", encoding="utf-8") as f:
        f.write(render_html(t, png, heading=heading, extra=extra))
    return [base + ".png", base + ".html"]
