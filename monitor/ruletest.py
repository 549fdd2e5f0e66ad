"""Rule tests, in the spirit of ``promtool test rules``: input mentions, expected events.

A test file (YAML)::

    rule_files: [../default.yaml]          # relative to this file
    topics: {acme: {terms: [acme]}}        # optional; default: every mention, topic 'all'
    tests:
      - name: a complaint thread going viral pages
        series:                            # mentions over time, generated
          - thread: complaint-1            # first mention is the thread's root
            start: 2024-05-01T10:00:00Z
            every: 1m
            values: "1x5 4x20"             # 1 mention a step for 5 steps, then 4 for 20
            text: ["@acme worst support ever", "this is terrible, @acme"]
            authors: 60                    # distinct authors, cycled (default: all distinct)
        mentions:                          # and/or literal mention JSONL objects
          - {id: x1, text: "...", created_at: 2024-05-01T10:03:00Z}
        expect:
          - {event: fired, rule: negative-thread-taking-off, key: "test:complaint-1",
             severity: warning, before: 2024-05-01T10:40:00Z}

Event time runs to ``until`` (default: the end of the last series step), so alerts can
resolve after the last mention. Every expected event must match a distinct event that
happened (the keys given must be equal; ``at`` exactly, or within ``after`` and
``before``); every event that happened must be expected, except for rules listed under
``ignore``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from monitor.config import TopicSpec
from monitor.engine import Engine
from monitor.errors import ConfigError, UsageError
from monitor.models import AlertEvent, Mention, TimeFormatError, iso, parse_time, qualify
from monitor.pipeline import Pipeline, RunContext
from monitor.rules import load_rules, parse_duration
from monitor.sentiment import SentimentScorer
from monitor.topics import Topic, TopicMatcher
from monitor.yamlfile import load_yaml, validation_error

_VALUES = re.compile(r"^(\d+)(?:x(\d+))?$")
EVENT_KEYS = ("event", "rule", "severity", "scope", "key", "topic")


def default_tests_path() -> str:
    return str(resources.files("rules").joinpath("tests"))


def parse_values(spec: str) -> list[int]:
    """promtool-like counts per step: ``"1x3 0x2 5"`` -> [1, 1, 1, 0, 0, 5]."""
    out: list[int] = []
    for part in spec.split():
        m = _VALUES.match(part)
        if not m:
            raise ValueError(f"'{part}' is not N or NxM (N mentions a step, M steps)")
        out.extend([int(m.group(1))] * int(m.group(2) or 1))
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeriesSpec(_Strict):
    start: str
    every: int | str = "1m"
    values: str
    text: str | list[str]
    thread: str | None = None
    authors: int | list[str] | None = None
    source: str = "test"
    name: str | None = None
    metrics: dict[str, int] = {}

    @field_validator("values")
    @classmethod
    def _values(cls, v: str) -> str:
        parse_values(v)
        return v

    @field_validator("start")
    @classmethod
    def _start(cls, v: str) -> str:
        parse_time(v)
        return v

    @field_validator("every")
    @classmethod
    def _every(cls, v: Any) -> int:
        return parse_duration(v)


class ExpectSpec(_Strict):
    event: str
    rule: str
    severity: str | None = None
    scope: str | None = None
    key: str | None = None
    topic: str | None = None
    at: str | None = None
    after: str | None = None
    before: str | None = None


class CaseSpec(_Strict):
    name: str
    series: list[SeriesSpec] = []
    mentions: list[dict[str, Any]] = []
    expect: list[ExpectSpec] = []
    ignore: list[str] = []
    until: str | None = None

    @field_validator("until")
    @classmethod
    def _until(cls, v: str | None) -> str | None:
        if v is not None:
            parse_time(v)
        return v


class TestFileSpec(_Strict):
    rule_files: list[str]
    topics: dict[str, TopicSpec] = {}
    tests: list[CaseSpec]


@dataclass
class RuleTestResult:
    path: str
    name: str
    passed: bool
    problems: list[str] = field(default_factory=list)
    events: list[AlertEvent] = field(default_factory=list)


def series_mentions(s: SeriesSpec, index: int) -> list[Mention]:
    t0, step = parse_time(s.start), int(s.every)  # type: ignore[arg-type]
    texts = [s.text] if isinstance(s.text, str) else s.text
    name = s.name or s.thread or f"series{index}"
    out: list[Mention] = []
    n = 0
    for i, count in enumerate(parse_values(s.values)):
        for k in range(count):
            ts = t0 + i * step + (step * k) / max(count, 1)
            mid = s.thread if (s.thread and n == 0) else f"{name}-{n}"
            if isinstance(s.authors, list):
                author = s.authors[n % len(s.authors)]
            elif isinstance(s.authors, int):
                author = f"{name}-user{n % max(s.authors, 1)}"
            else:
                author = f"{name}-user{n}"
            out.append(Mention(id=qualify(s.source, mid), text=texts[n % len(texts)],
                               created_at=ts, source=s.source,
                               thread_id=qualify(s.source, s.thread) if s.thread else "",
                               author=author, metrics=dict(s.metrics)))
            n += 1
    return out


def series_end(s: SeriesSpec) -> float:
    return parse_time(s.start) + len(parse_values(s.values)) * int(s.every)  # type: ignore[arg-type]


def literal_mention(d: dict[str, Any], where: str) -> Mention:
    try:
        source = str(d.get("source", "dump"))
        return Mention(id=qualify(source, str(d["id"])), text=str(d["text"]),
                       created_at=parse_time(d["created_at"]), source=source,
                       thread_id=qualify(source, str(d["thread_id"])) if d.get("thread_id")
                       else "", author=d.get("author"), title=d.get("title"),
                       metrics=dict(d.get("metrics") or {}))
    except KeyError as e:
        raise ConfigError(f"{where}: mention is missing '{e.args[0]}'") from None
    except TimeFormatError as e:
        raise ConfigError(f"{where}: {e}") from None


def _matches(exp: ExpectSpec, ev: AlertEvent) -> bool:
    for k in EVENT_KEYS:
        want = getattr(exp, k)
        if want is not None and getattr(ev, k) != want:
            return False
    if exp.at is not None and abs(parse_time(exp.at) - ev.at) > 1e-6:
        return False
    if exp.after is not None and ev.at < parse_time(exp.after):
        return False
    return not (exp.before is not None and ev.at > parse_time(exp.before))


def _describe(ev: AlertEvent) -> str:
    return (f"{ev.event} {ev.rule} {ev.severity} {ev.scope} key={ev.key} at={iso(ev.at)} "
            f"(mentions={ev.signals.get('mentions')})")


def run_case(path: str, case: CaseSpec, rules: Any, matcher: TopicMatcher) -> RuleTestResult:
    mentions: list[Mention] = []
    for i, s in enumerate(case.series):
        mentions.extend(series_mentions(s, i))
    for i, d in enumerate(case.mentions):
        mentions.append(literal_mention(d, f"test '{case.name}', mention {i + 1}"))
    mentions.sort(key=lambda m: m.created_at)
    engine = Engine(rules, matcher.names)
    pipeline = Pipeline(matcher, engine, SentimentScorer(), None)
    ctx = RunContext()
    for start in range(0, len(mentions), 1000):
        pipeline.run(ctx, mentions[start:start + 1000])
    ends = [series_end(s) for s in case.series] + [m.created_at for m in mentions]
    until = parse_time(case.until) if case.until else max(ends, default=0.0)
    got = list(ctx.events) + engine.advance(until)
    diff: list[str] = []
    unmatched = list(got)
    failed = False
    for exp in case.expect:
        hit = next((ev for ev in unmatched if _matches(exp, ev)), None)
        if hit is None:
            diff.append(f"- {_wanted(exp)}")
            failed = True
        else:
            unmatched.remove(hit)
            diff.append(f"  {_describe(hit)}")
    for ev in unmatched:
        if ev.rule not in case.ignore:
            diff.append(f"+ {_describe(ev)}")
            failed = True
    problems = (["expected (-) and what happened (+), in the order expected:", *diff]
                if failed else [])
    return RuleTestResult(path, case.name, not failed, problems, got)


def _wanted(exp: ExpectSpec) -> str:
    """An expectation written like an event: the keys it fixes, then its time."""
    parts = [str(v) for k in ("event", "rule", "severity", "scope")
             if (v := getattr(exp, k)) is not None]
    if exp.key is not None:
        parts.append(f"key={exp.key}")
    if exp.topic is not None:
        parts.append(f"topic={exp.topic}")
    for k in ("at", "after", "before"):
        if getattr(exp, k) is not None:
            parts.append(f"{k}={iso(parse_time(getattr(exp, k)))}")
    return " ".join(parts)


def write_junit(results: list[RuleTestResult], path: str) -> None:
    """JUnit XML, as CI systems read it: a suite per test file, a case per test, the diff
    of a failing case as its failure."""
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites", name="stormwatch rules test", tests=str(len(results)),
                      failures=str(sum(not r.passed for r in results)))
    suites: dict[str, ET.Element] = {}
    for r in results:
        suite = suites.get(r.path)
        if suite is None:
            suite = suites[r.path] = ET.SubElement(root, "testsuite", name=r.path)
        case = ET.SubElement(suite, "testcase", classname=r.path, name=r.name)
        if not r.passed:
            differences = sum(1 for line in r.problems if line[:1] in "-+")
            fail = ET.SubElement(case, "failure", message=f"{differences} difference(s)")
            fail.text = "\n".join(r.problems)
    for path_, suite in suites.items():
        cases = [r for r in results if r.path == path_]
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(not r.passed for r in cases)))
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def test_files(paths: list[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            out.extend(sorted(os.path.join(p, f) for f in os.listdir(p)
                              if f.endswith(("_test.yaml", "_test.yml"))))
        else:
            out.append(p)
    if not out:
        raise ConfigError("no rule test files (*_test.yaml) found", path=", ".join(paths))
    return out


def run_rule_tests(paths: list[str], run: str | None = None) -> list[RuleTestResult]:
    """Run the tests of the files (``run``: only those whose name matches this regular
    expression, as ``promtool test rules --run``)."""
    try:
        pattern = re.compile(run, re.IGNORECASE) if run else None
    except re.error as e:
        raise UsageError(f"--run: not a regular expression: {e}") from None
    results: list[RuleTestResult] = []
    for path in test_files(paths):
        data = load_yaml(path)
        try:
            spec = TestFileSpec.model_validate(data)
        except ValidationError as e:
            raise validation_error(e, data, path, "test", TestFileSpec) from None
        base = os.path.dirname(os.path.abspath(path))
        rules = load_rules([f if os.path.isabs(f) else os.path.join(base, f)
                            for f in spec.rule_files])
        topics = [Topic(name=n, terms=tuple(t.terms), exclude=tuple(t.exclude))
                  for n, t in spec.topics.items()]
        matcher = TopicMatcher(topics)
        for case in spec.tests:
            if pattern is None or pattern.search(case.name):
                results.append(run_case(path, case, rules, matcher))
    return results
