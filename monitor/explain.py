"""``stormwatch rules explain``: why a rule fired at a moment, or why it did not.

The dump runs through the engine up to the moment asked (event time), exactly as a
replay would; then, for the rule's scopes there (each topic it applies to, or the thread
asked for, or the busiest threads), the rule's signals at that minute and each
condition's verdict: the value, the threshold, holds or not; the same for each
escalation step; and the alert's state in the engine then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from monitor.detect import Scope
from monitor.errors import UsageError
from monitor.models import iso
from monitor.rules import Condition, Rule


@dataclass
class Check:
    condition: Condition
    value: Any  # None: the signal has no value here (a topic warming up)
    holds: bool


@dataclass
class Explanation:
    rule: Rule
    scope: str
    key: str
    topic: str
    at: float      # the moment asked for
    minute: float  # the engine's minute boundary then (mentions up to ``at`` counted)
    checks: list[Check]
    steps: list[tuple[str, list[Check]]]  # (severity, checks) per escalation step
    state: str

    @property
    def holds(self) -> bool:
        return all(c.holds for c in self.checks)


def find_rule(rules: Any, name: str) -> Rule:
    for r in rules.rules:
        if r.name == name:
            return r
    import difflib

    names = [r.name for r in rules.rules]
    guess = difflib.get_close_matches(name, names, n=1)
    raise UsageError(f"no rule '{name}'" + (f" (did you mean '{guess[0]}'?)" if guess else ""),
                     hint=f"rules here: {', '.join(names)}")


def explain(s: Any, inputs: Any, rule_name: str, at: float, *, key: str | None = None,
            limit: int = 5) -> list[Explanation]:
    """Run the inputs up to ``at`` and explain the rule there (see the module doc)."""
    from monitor import app as core
    from monitor.pipeline import Pipeline, RunContext
    from monitor.sentiment import SentimentScorer

    rule = find_rule(s.rules, rule_name)
    if rule.scope == "source":
        raise UsageError(f"rule '{rule.name}' watches a live source's volume (a flatline "
                         "rule): a dump has nothing to explain it with",
                         path=rule.path, line=rule.line,
                         hint="`stormwatch status` shows each source's last success")
    engine = core.build_engine(s)
    pipeline = Pipeline(s.matcher, engine, SentimentScorer(), None)
    ctx = RunContext()
    for batch in core._batches(iter(inputs), 2000):
        items = [m for m in batch if m.created_at <= at]
        if items:
            pipeline.run(ctx, items)
        ctx.events.clear()
    inputs.progress.stop()
    if not engine.now:
        raise UsageError(f"no mention at or before {iso(at)} in the input")
    engine.advance(at)
    T = engine.now
    scopes: list[Scope]
    if rule.scope == "topic":
        scopes = [sc for name, sc in engine.topics.items() if rule.applies_to(name)]
        if key is not None:
            scopes = [sc for sc in scopes if sc.key == key]
    elif key is not None:
        found = engine.threads.get(key)
        if found is None:
            hint = ("it had one mention then (a thread is judged from its second)"
                    if key in engine.seeds else "no mention of it was seen by then, or it "
                    "went quiet long before and was forgotten")
            raise UsageError(f"thread {key} is not in the engine at {iso(T)}", hint=hint)
        scopes = [found]
    else:  # the busiest threads of the rule's window then
        span, fkey = rule.window, rule.filter_key
        live = [sc for sc in engine.threads.values() if rule.applies_to(sc.topic)]
        for sc in live:
            sc.windows[(span, fkey)].advance(T)
        scopes = sorted(live, key=lambda sc: -sc.windows[(span, fkey)].n)[:limit]
    out = []
    for sc in scopes:
        for w in sc.windows.values():
            w.advance(T)
        sig = sc.signals(rule.window, rule.filter_key, T)
        checks = [_check(c, sig) for c in rule.conditions]
        steps = [(step.severity, [_check(c, sig) for c in step.conditions])
                 for step in rule.steps]
        st = engine.book.open.get((rule.name, sc.key))
        if st is None:
            state = "not open"
        elif st.state == "pending":
            state = f"pending since {iso(st.since)} (for: {rule.for_} s)"
        else:
            state = (f"firing{' quietly' if st.quiet else ''} since {iso(st.since)}, "
                     f"{st.severity}")
        out.append(Explanation(rule, sc.scope, sc.key, sc.topic, at, T, checks, steps, state))
    return out


def _check(c: Condition, sig: Any) -> Check:
    value = sig.get(c.signal)
    return Check(c, value, c.holds(sig))
