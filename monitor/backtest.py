"""Labelled backtests: what a rules file would have done on a dump, judged against labels.

A labels file (YAML) lists the incidents a team knows of and the non-incidents that must
stay quiet::

    grace: 2h                        # a page this long after an end still belongs to it
    incidents:
      - name: router-complaint
        thread: bluesky:at://did:plc:x/app.bsky.feed.post/3k1c10   # or topic: acme
        topic: acme                  # (for a thread: its topic's pages count too)
        start: 2024-05-09T13:14:00Z
        end: 2024-05-09T18:00:00Z
        severity: warning            # the least severity that catches it (default)
        within: 60m                  # optional: caught only by a page this soon
    non_incidents:
      - {name: giveaway, thread: "bluesky:at://...", start: ..., end: ...}

A *page* is a ``fired`` or ``escalated`` event of severity warning or more. An incident
is caught by a page of at least its severity, on its topic or thread, from its start to
its end plus the grace (or within ``within`` of the start). Every other page is noise:
counted per week of data, and named when it falls on a non-incident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from monitor.errors import ConfigError
from monitor.models import SEVERITY_RANK, AlertEvent, TimeFormatError, iso, parse_time
from monitor.rules import parse_duration
from monitor.yamlfile import LineDict, load_yaml, validation_error

PAGE_RANK = SEVERITY_RANK["warning"]
WEEK = 7 * 86400


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _time(v: Any) -> float:
    try:
        return parse_time(v)
    except TimeFormatError as e:
        raise ValueError(str(e)) from None


class LabelSpec(_Strict):
    name: str
    topic: str | None = None
    thread: str | None = None
    start: Any
    end: Any
    severity: Literal["warning", "critical"] = "warning"
    within: int | str | None = None

    @field_validator("start", "end")
    @classmethod
    def _when(cls, v: Any) -> float:
        return _time(v)

    @field_validator("within")
    @classmethod
    def _within(cls, v: Any) -> int | None:
        return None if v is None else parse_duration(v)

    @field_validator("end")
    @classmethod
    def _after_start(cls, v: float, info: Any) -> float:
        start = info.data.get("start")
        if start is not None and v < start:
            raise ValueError("ends before it starts")
        return v


class LabelsSpec(_Strict):
    grace: int | str = "2h"
    incidents: list[LabelSpec] = []
    non_incidents: list[LabelSpec] = []

    @field_validator("grace")
    @classmethod
    def _grace(cls, v: Any) -> int:
        return parse_duration(v)


@dataclass(frozen=True)
class Label:
    name: str
    start: float
    end: float
    topic: str | None = None
    thread: str | None = None
    severity: str = "warning"
    within: float | None = None

    def covers(self, ev: AlertEvent, grace: float) -> bool:
        """Is this event about this labelled stretch (its scope, in its time)?"""
        if not self.start <= ev.at <= self.end + grace:
            return False
        if ev.scope == "thread" and self.thread is not None:
            return ev.key == self.thread
        if ev.scope == "thread":
            return self.topic is None or ev.topic == self.topic
        return self.topic is None or ev.key == self.topic

    def caught_by(self, ev: AlertEvent, grace: float) -> bool:
        return (is_page(ev) and SEVERITY_RANK[ev.severity] >= SEVERITY_RANK[self.severity]
                and self.covers(ev, grace)
                and (self.within is None or ev.at - self.start <= self.within))


@dataclass(frozen=True)
class Labels:
    incidents: tuple[Label, ...]
    non_incidents: tuple[Label, ...] = ()
    grace: float = 7200.0


def is_page(ev: AlertEvent) -> bool:
    return ev.event in ("fired", "escalated") and SEVERITY_RANK[ev.severity] >= PAGE_RANK


def load_labels(path: str) -> Labels:
    """Read a labels file; every mistake is a ConfigError with file, line and key."""
    data = load_yaml(path)
    if data is None:
        data = LineDict()
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping with incidents (and non_incidents)", path=path,
                          line=1)
    try:
        spec = LabelsSpec.model_validate(data)
    except ValidationError as e:
        raise validation_error(e, data, path, "incident", LabelsSpec) from None
    if not spec.incidents:
        raise ConfigError("no incidents: a backtest needs at least one", path=path, line=1,
                          hint="incidents: [{name, topic or thread, start, end}]")

    def label(s: LabelSpec) -> Label:
        return Label(name=s.name, start=s.start, end=s.end, topic=s.topic, thread=s.thread,
                     severity=s.severity, within=float(s.within) if s.within else None)

    return Labels(tuple(label(s) for s in spec.incidents),
                  tuple(label(s) for s in spec.non_incidents), float(spec.grace))


@dataclass
class Verdict:
    """How one set of alert events (one rules file, or one rule of it) did."""

    caught: dict[str, float | None] = field(default_factory=dict)  # incident -> minutes
    noise: list[AlertEvent] = field(default_factory=list)  # pages within no incident
    on_non_incidents: dict[str, int] = field(default_factory=dict)
    weeks: float = 1.0

    @property
    def noise_per_week(self) -> float:
        return len(self.noise) / self.weeks

    @property
    def missed(self) -> list[str]:
        return [name for name, minutes in self.caught.items() if minutes is None]

    def json(self) -> dict[str, Any]:
        return {"caught": {k: None if v is None else round(v, 1)
                           for k, v in self.caught.items()},
                "missed": self.missed,
                "pages_outside_incidents": len(self.noise),
                "pages_outside_per_week": round(self.noise_per_week, 2),
                "on_non_incidents": self.on_non_incidents,
                "noise": [{"rule": e.rule, "severity": e.severity, "scope": e.scope,
                           "key": e.key, "at": iso(e.at)} for e in self.noise]}


def judge(events: list[AlertEvent], labels: Labels, span: tuple[float, float]) -> Verdict:
    """Score alert events against labels over the data's time ``span`` (first, last)."""
    v = Verdict(weeks=max((span[1] - span[0]) / WEEK, 1 / 7))
    for inc in labels.incidents:
        first = min((e.at for e in events if inc.caught_by(e, labels.grace)), default=None)
        v.caught[inc.name] = None if first is None else (first - inc.start) / 60
    for e in events:
        if not is_page(e) or any(inc.covers(e, labels.grace) for inc in labels.incidents):
            continue
        v.noise.append(e)
        for non in labels.non_incidents:
            if non.covers(e, 0.0):
                v.on_non_incidents[non.name] = v.on_non_incidents.get(non.name, 0) + 1
    return v


@dataclass
class RulesResult:
    """One rules file's backtest: overall, per rule, and messages per incident."""

    name: str
    overall: Verdict
    per_rule: dict[str, Verdict]
    messages: dict[str, int]  # labelled incident -> messages a person would receive
    events: list[AlertEvent]

    def json(self) -> dict[str, Any]:
        return {"rules": self.name, "overall": self.overall.json(),
                "per_rule": {r: v.json() for r, v in self.per_rule.items()},
                "messages_per_incident": self.messages}


def compare(base: RulesResult, cand: RulesResult) -> dict[str, Any]:
    """What changed from ``base`` to ``cand``: incidents newly caught and newly missed,
    and noise that is new (a page on a rule and key the base never paged outside)."""
    was = {k for k, v in base.overall.caught.items() if v is not None}
    now = {k for k, v in cand.overall.caught.items() if v is not None}
    seen = {(e.rule, e.key) for e in base.overall.noise}
    return {"newly_caught": sorted(now - was), "newly_missed": sorted(was - now),
            "new_noise": [{"rule": e.rule, "severity": e.severity, "scope": e.scope,
                           "key": e.key, "at": iso(e.at)}
                          for e in cand.overall.noise if (e.rule, e.key) not in seen],
            "noise_per_week": [round(base.overall.noise_per_week, 2),
                               round(cand.overall.noise_per_week, 2)]}


@dataclass
class BacktestRun:
    results: list[RulesResult]
    replay: Any  # the ReplayResult of the pass: mentions read, skipped lines, elapsed


def run_backtest(s: Any, inputs: Any, rulesets: list[tuple[str, Any]], labels: Labels, *,
                 clock: Any = None, workers: bool | None = None,
                 chart: str | None = None) -> BacktestRun:
    """One pass over the inputs (parsed, matched and scored once), every rules set's
    engine fed the same mentions; then each set's events judged against the labels.
    With ``chart``, each topic's chart of the dump with each rules set's alert events
    (``chart``.png and .html for the first set, ``chart``-2.* for the second...)."""
    from monitor import app as core
    from monitor.clock import SystemClock
    from monitor.pipeline import Pipeline
    from monitor.report import Recorder
    from monitor.sentiment import SentimentPool, SentimentScorer

    clock = clock or SystemClock()
    started = clock.monotonic()
    result = core.ReplayResult(report=inputs.report)
    engines = [core.build_engine(s, rules) for _, rules in rulesets]
    scorer = SentimentScorer()
    use_pool = SentimentPool.usable() if workers is None else workers
    pool = SentimentPool(fallback=scorer) if use_pool else None
    pipeline = Pipeline(s.matcher, engines[0], scorer, None)  # match, dedup, sentiment
    events: list[list[AlertEvent]] = [[] for _ in engines]
    recorders = [Recorder(engines[0], topic=t) for t in s.matcher.names] if chart else []
    first, last = float("inf"), float("-inf")
    try:
        for ctx, items in core.scored(pipeline, inputs, pool, result):
            result.counts.update(ctx.counts)
            if not items:
                continue
            first = min(first, items[0].created_at)
            last = max(last, max(m.created_at for m in items))
            if recorders:  # the baseline read before each mention: in step with it
                for m in items:
                    for r in recorders:
                        r.before(m.created_at)
                    for engine, got in zip(engines, events, strict=True):
                        got.extend(engine.ingest(m))
                    for r in recorders:
                        r.count(m)
                continue
            for engine, got in zip(engines, events, strict=True):
                ingest = engine.ingest
                for m in items:
                    out = ingest(m)
                    if out:
                        got.extend(out)
    finally:
        if pool is not None:
            pool.close()
    inputs.progress.stop()
    result.late = engines[0].stats.late
    span = (first, last) if first <= last else (0.0, 0.0)
    results = []
    for (name, rules), evs in zip(rulesets, events, strict=True):
        per_rule = {r.name: judge([e for e in evs if e.rule == r.name], labels, span)
                    for r in rules.rules}
        results.append(RulesResult(name, judge(evs, labels, span), per_rule,
                                   messages_per_incident(s, evs, labels), evs))
    if chart:
        for i, (evs, (name, _)) in enumerate(zip(events, rulesets, strict=True)):
            result.charts += core.write_charts(recorders, evs,
                                               chart if i == 0 else f"{chart}-{i + 1}", name)
    result.elapsed = clock.monotonic() - started
    return BacktestRun(results, result)


def messages_per_incident(s: Any, events: list[AlertEvent], labels: Labels) -> dict[str, int]:
    """The messages a person would receive per labelled incident: the events planned as
    live, at their own time (the config's routes, else warning and above to one channel:
    grouping, inhibition, folding) in a scratch database, counted on the busiest
    channel."""
    import tempfile

    from monitor import app as core
    from monitor.clock import FixedClock
    from monitor.notify.plan import Planner
    from monitor.store import Store, event_of, sqlite_url

    routing = core.build_routing(s)
    with tempfile.TemporaryDirectory(prefix="stormwatch-backtest-") as tmp:
        store = Store.open(sqlite_url(f"{tmp}/plan.db"), durable=False)
        try:
            clock = FixedClock(0.0)  # routes' time intervals judged at each event's time
            planner = Planner(routing, store, clock)
            with store.transaction() as conn:
                for ev in events:
                    clock.t = ev.at
                    planner.record(conn, [ev])
            by_id = {e["id"]: e for e in store.list_events()}
            alerts = {a["id"]: a for a in store.list_alerts(limit=1_000_000)}
            deliveries = store.list_deliveries()
        finally:
            store.close()
    out = {}
    for inc in labels.incidents:
        mine = {alerts[e["alert_id"]]["incident_id"] for e in by_id.values()
                if inc.covers(event_of(e), labels.grace)}
        per_channel: dict[str, int] = {}
        for d in deliveries:
            if d["incident_id"] in mine:
                per_channel[d["channel"]] = per_channel.get(d["channel"], 0) + 1
        out[inc.name] = max(per_channel.values(), default=0)
    return out

