"""Rules files: what counts as trouble, how bad it is, and what to do about it.

A rules file is YAML with a ``rules:`` list. Each rule watches one scope (``thread`` or
``topic``; or ``source``: a *flatline* rule, ``monitor.flatline``) over a time
``window``, and ``when`` every condition holds (for ``for``, if given) it fires at its
``severity``; ``escalate`` steps raise it; it resolves once the conditions have failed
for ``resolve_after``; ``realert`` keeps a flapping scope from paging twice. See README
"Rules reference" for every key.

``load_rules(paths)`` validates and returns a ``RuleSet``; every mistake is one
``RulesError`` naming the file, line, rule and key, and the valid choices.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from monitor.errors import ConfigError, RulesError
from monitor.models import SEVERITY_RANK
from monitor.topics import compile_terms
from monitor.yamlfile import LineDict, line_of, load_yaml, validation_error

SIGNALS_COMMON = {
    "mentions": "mentions in the window (also shown as 'current')",
    "unique_authors": "distinct authors in the window",
    "negative": "negative mentions (VADER compound <= -0.05) in the window",
    "negative_share": "negative / mentions, 0..1",
    "sentiment": "mean VADER compound in the window, -1..1",
    "engagement": "likes + reposts + replies + quotes + score of the window's mentions",
    "reach": "followers of the window's authors, summed (where the source gives them)",
    "velocity": "mentions per hour over the window",
    "previous": "mentions in the window before this one",
    "acceleration": "velocity now minus velocity in the window before (mentions/hour)",
    "growth": "mentions / max(previous, 1)",
    "top_author_share": "share of the window's mentions written by its busiest author",
}
SIGNALS_TOPIC = {
    "expected": "mentions the seasonal baseline expects in the window",
    "ratio": "mentions / max(expected, 1)",
    "zscore": "spike statistic: overdispersed-Poisson deviations above expected",
}
SIGNALS_THREAD = {
    "total": "mentions in the thread since it was first seen",
    "age_minutes": "minutes since the thread's first mention",
}
SIGNALS_SOURCE = {  # flatline rules: the monitor watching its own sources (live only)
    "mentions": "mentions the source brought in the window",
    "expected": "what it brought in the same window at this time of day: the median of "
                "the last 7 days (0 until it has a day of history)",
    "ratio": "mentions / max(expected, 1)",
    "silent_minutes": "minutes since the newest mention from the source",
    "failing_minutes": "minutes since the source last answered (0 when its last poll did)",
}
SIGNALS = {**SIGNALS_COMMON, **SIGNALS_TOPIC, **SIGNALS_THREAD, **SIGNALS_SOURCE}
SCOPE_SIGNALS = {"thread": {*SIGNALS_COMMON, *SIGNALS_THREAD},
                 "topic": {*SIGNALS_COMMON, *SIGNALS_TOPIC},
                 "source": set(SIGNALS_SOURCE)}
TEMPLATE_FIELDS = {"rule", "severity", "scope", "key", "topic", "window", "current", *SIGNALS}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_COND = re.compile(r"^\s*(>=|<=|==|!=|>|<)?\s*(-?\d+(?:\.\d+)?)\s*(%?)\s*$")
_TEMPLATE = re.compile(r"\{(\w+)(?::([^{}]*))?\}")
OPS = {">=": float.__ge__, "<=": float.__le__, ">": float.__gt__, "<": float.__lt__,
       "==": float.__eq__, "!=": float.__ne__}


def parse_duration(value: Any) -> int:
    """'90s', '30m', '2h', '1d', '1w' or a number of seconds -> seconds.

    >>> parse_duration("30m"), parse_duration(90)
    (1800, 90)
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration like '30m'")
    if isinstance(value, int | float):
        return int(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError("expected a duration like '90s', '30m', '2h' or '1d'")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def format_duration(seconds: int) -> str:
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


class SignalSource(Protocol):
    """Where conditions read signals: a dict, or ``monitor.detect.Signals`` (lazy)."""

    def get(self, name: str, default: Any = None) -> Any: ...


@dataclass(frozen=True, slots=True)
class Condition:
    signal: str
    op: str
    value: float

    def holds(self, signals: SignalSource) -> bool:
        v = signals.get(self.signal)
        return v is not None and OPS[self.op](float(v), self.value)

    def __str__(self) -> str:
        return f"{self.signal} {self.op} {self.value:g}"


def check_signal(name: str) -> str:
    if name not in SIGNALS:
        guess = difflib.get_close_matches(name, SIGNALS, n=1)
        mean = f" (did you mean '{guess[0]}'?)" if guess else ""
        raise ValueError(f"unknown signal '{name}'{mean}; signals: {', '.join(sorted(SIGNALS))}")
    return name


def parse_comparison(spec: Any) -> tuple[str, float]:
    """``">= 10"``, ``"< 50%"`` or a bare number (meaning ``>=``) -> (op, value)."""
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        return ">=", float(spec)
    m = _COND.match(spec) if isinstance(spec, str) else None
    if not m:
        raise ValueError("expected a comparison like '>= 10' or '< 0.5'")
    return m.group(1) or ">=", float(m.group(2)) / (100.0 if m.group(3) else 1.0)


def parse_conditions(raw: dict[str, Any]) -> tuple[Condition, ...]:
    return tuple(Condition(check_signal(k), *parse_comparison(v)) for k, v in raw.items())


def _comparison(spec: Any) -> Any:
    parse_comparison(spec)
    return spec


SignalName = Annotated[str, AfterValidator(check_signal)]
Comparison = Annotated[Any, AfterValidator(_comparison)]
Conditions = dict[SignalName, Comparison]


def render(template: str, values: dict[str, Any]) -> str:
    """Fill ``{name}`` / ``{name:.0%}`` from ``values``; nothing else is evaluated.

    >>> render("{mentions} posts, {negative_share:.0%} negative", {"mentions": 12,
    ...        "negative_share": 0.75})
    '12 posts, 75% negative'
    """

    def sub(m: re.Match[str]) -> str:
        value = values.get(m.group(1))
        if value is None:
            return "n/a"
        try:
            return format(value, m.group(2) or "")
        except (ValueError, TypeError):
            return str(value)

    return _TEMPLATE.sub(sub, template)


Severity = Literal["info", "warning", "critical"]
Duration = int | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Annotations(_Strict):
    summary: str = ""
    playbook: str = ""
    owner: str = ""
    respond_within: str = ""

    @field_validator("summary", "playbook", "owner", "respond_within")
    @classmethod
    def _fields_known(cls, v: str) -> str:
        for m in _TEMPLATE.finditer(v):
            if m.group(1) not in TEMPLATE_FIELDS:
                raise ValueError(f"unknown template field '{{{m.group(1)}}}'; fields: "
                                 f"{', '.join(sorted(TEMPLATE_FIELDS))}")
        return v


def _non_empty(v: dict[str, Any]) -> dict[str, Any]:
    if not v:
        raise ValueError("expected at least one condition")
    return v


class EscalationSpec(_Strict):
    when: Annotated[Conditions, AfterValidator(_non_empty)]
    severity: Severity | None = None


class RuleSpec(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)
    description: str = ""
    scope: Literal["thread", "topic", "source"]
    window: Duration
    when: Annotated[Conditions, AfterValidator(_non_empty)]
    severity: Severity = "warning"
    for_: Duration = Field(default=0, alias="for")
    escalate: list[EscalationSpec] = []
    resolve_after: Duration = "30m"
    realert: Duration = "1h"
    topics: list[str] | None = None
    match: list[str] | None = None
    annotations: Annotations = Annotations()

    @field_validator("window", "for_", "resolve_after", "realert")
    @classmethod
    def _duration(cls, v: Any) -> int:
        return parse_duration(v)

    @field_validator("window")
    @classmethod
    def _window(cls, v: int) -> int:
        if v < 60 or v > 7 * 86400 or v % 60:
            raise ValueError("a window is whole minutes between 1m and 7d")
        return v

    @field_validator("match")
    @classmethod
    def _terms(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not [t for t in v if t.strip()]:
            raise ValueError("expected at least one term")
        return v

    @model_validator(mode="after")
    def _scope_signals(self) -> RuleSpec:
        allowed = SCOPE_SIGNALS[self.scope]
        for conds in [self.when, *(s.when for s in self.escalate)]:
            for name in conds:
                if name not in allowed:
                    raise ValueError(f"signal '{name}' does not exist for scope "
                                     f"'{self.scope}' (it has: {', '.join(sorted(allowed))})")
        if self.scope == "source" and (self.topics is not None or self.match is not None):
            raise ValueError("a source rule watches a source, not topics or terms: "
                             "remove 'topics' and 'match'")
        rank = SEVERITY_RANK[self.severity]
        for i, step in enumerate(self.escalate):
            if step.severity is not None:
                if SEVERITY_RANK[step.severity] < rank:
                    raise ValueError(f"escalate step {i + 1} lowers the severity to "
                                     f"'{step.severity}'; steps may only keep or raise it")
                rank = SEVERITY_RANK[step.severity]
        return self


class RulesFileSpec(_Strict):
    rules: list[RuleSpec]


@dataclass(frozen=True)
class Step:
    conditions: tuple[Condition, ...]
    severity: str


@dataclass(frozen=True)
class Rule:
    """A validated rule, ready to evaluate."""

    name: str
    scope: str
    window: int
    conditions: tuple[Condition, ...]
    severity: str
    for_: int
    steps: tuple[Step, ...]
    resolve_after: int
    realert: int
    topics: frozenset[str] | None
    match: tuple[str, ...] | None
    annotations: Annotations
    description: str = ""
    path: str = ""
    line: int = 0

    @property
    def filter_key(self) -> str:
        """Windows are shared by rules with the same span and keyword filter."""
        return "|".join(self.match) if self.match else ""

    def holds(self, signals: SignalSource) -> bool:
        return all(c.holds(signals) for c in self.conditions)

    def step_at(self, signals: SignalSource) -> int:
        """The highest escalation step whose conditions hold (0: none)."""
        best = 0
        for i, step in enumerate(self.steps, 1):
            if all(c.holds(signals) for c in step.conditions):
                best = i
        return best

    def severity_at(self, step: int) -> str:
        sev = self.severity
        for s in self.steps[:step]:
            sev = s.severity
        return sev

    def applies_to(self, topic: str) -> bool:
        return self.topics is None or topic in self.topics


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    paths: tuple[str, ...] = ()

    def for_scope(self, scope: str) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.scope == scope)

    def filters(self) -> dict[str, Any]:
        """Compiled keyword filters by filter key."""
        return {r.filter_key: compile_terms(r.match) for r in self.rules if r.match}


def _build(spec: RuleSpec, path: str, line: int) -> Rule:
    steps = []
    severity = spec.severity
    for s in spec.escalate:
        severity = s.severity or severity
        steps.append(Step(parse_conditions(s.when), severity))
    return Rule(name=spec.name, scope=spec.scope, window=int(spec.window),
                conditions=parse_conditions(spec.when), severity=spec.severity,
                for_=int(spec.for_), steps=tuple(steps), resolve_after=int(spec.resolve_after),
                realert=int(spec.realert),
                topics=frozenset(spec.topics) if spec.topics is not None else None,
                match=tuple(spec.match) if spec.match else None,
                annotations=spec.annotations, description=spec.description, path=path,
                line=line)


def rule_files(paths: Iterable[str]) -> list[str]:
    """Expand directories to their *.yaml / *.yml files (not their tests/ folder)."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(os.path.join(p, f) for f in os.listdir(p)
                           if f.endswith((".yaml", ".yml")))
            if not found:
                raise RulesError("no rules files (*.yaml) in this directory", path=p)
            out.extend(found)
        else:
            out.append(p)
    return out


def load_rules_file(path: str) -> list[Rule]:
    try:
        data = load_yaml(path)
    except ConfigError as e:
        raise RulesError(e.message, path=e.path, line=e.line, hint=e.hint) from None
    if not isinstance(data, LineDict) or "rules" not in data:
        raise RulesError("expected a mapping with a 'rules:' list", path=path,
                         line=getattr(data, "line", None) or 1,
                         hint="start the file with 'rules:' and list rules under it")
    try:
        spec = RulesFileSpec.model_validate(data)
    except ValidationError as e:
        err = validation_error(e, data, path, "rule", RulesFileSpec)
        raise RulesError(err.message, path=err.path, line=err.line, hint=err.hint) from None
    return [_build(r, path, line_of(data, ("rules", i)) or 0) for i, r in enumerate(spec.rules)]


def load_rules(paths: Sequence[str]) -> RuleSet:
    """Load and validate rules files (or directories of them); names must be unique."""
    rules: list[Rule] = []
    files = rule_files(paths)
    seen: dict[str, Rule] = {}
    for path in files:
        for rule in load_rules_file(path):
            if rule.name in seen:
                first = seen[rule.name]
                raise RulesError(f"rule '{rule.name}' is defined twice (first at "
                                 f"{first.path}:{first.line})", path=path, line=rule.line,
                                 hint="rule names are alert identities: make them unique")
            seen[rule.name] = rule
            rules.append(rule)
    if not rules:
        raise RulesError("no rules defined", path=", ".join(files) or None)
    return RuleSet(tuple(rules), tuple(files))
