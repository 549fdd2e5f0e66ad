"""The alert lifecycle through AlertBook: pending, fired, escalated, resolved, realert."""

from collections.abc import Callable
from typing import Any

from monitor.alerts import AlertBook
from monitor.rules import Rule, load_rules

RULE = """
rules:
  - name: r
    scope: topic
    window: 10m
    when: {mentions: ">= 10"}
    for: 3m
    severity: warning
    escalate:
      - when: {mentions: ">= 50"}
        severity: critical
      - when: {mentions: ">= 200"}
    resolve_after: 5m
    realert: 1h
    annotations: {summary: "{mentions} in {window}"}
"""


def rule(write: Callable[[str, str], str], text: str = RULE) -> Rule:
    return load_rules([write("r.yaml", text)]).rules[0]


def run(book: AlertBook, r: Rule, series: list[tuple[int, int]]) -> list[tuple[Any, ...]]:
    out = []
    for t, n in series:
        ev = book.evaluate(r, "acme", "acme", t * 60.0, {"mentions": n}, lambda since: [])
        if ev is not None:
            out.append((t, ev.event, ev.severity, ev.step, ev.summary))
    return out


def test_pending_then_fired_after_for(write: Callable[[str, str], str]) -> None:
    r, book = rule(write), AlertBook()
    got = run(book, r, [(0, 12), (1, 12), (2, 12), (3, 12), (4, 12)])
    assert got == [(3, "fired", "warning", 0, "12 in 10m")]


def test_pending_that_stops_holding_never_fires(write: Callable[[str, str], str]) -> None:
    r, book = rule(write), AlertBook()
    assert run(book, r, [(0, 12), (1, 12), (2, 3), (3, 12), (4, 12), (5, 12)]) == []
    assert book.open  # pending again since minute 3


def test_escalation_steps_and_resolution(write: Callable[[str, str], str]) -> None:
    r, book = rule(write), AlertBook()
    series = [(0, 20), (3, 20), (4, 60), (5, 40), (6, 250), (7, 250), (8, 5), (12, 5),
              (13, 5)]
    got = run(book, r, series)
    assert [(t, e, s, step) for t, e, s, step, _ in got] == [
        (3, "fired", "warning", 0), (4, "escalated", "critical", 1),
        (6, "escalated", "critical", 2), (12, "resolved", "critical", 2)]
    assert not book.open


def test_fires_at_the_step_that_already_holds(write: Callable[[str, str], str]) -> None:
    r, book = rule(write), AlertBook()
    got = run(book, r, [(0, 80), (3, 80)])
    assert got[0][1:4] == ("fired", "critical", 1)


def test_realert_keeps_a_flapping_scope_quiet(write: Callable[[str, str], str]) -> None:
    r, book = rule(write), AlertBook()
    flap = [(0, 20), (3, 20), (4, 1), (9, 1),          # fired, resolved
            (20, 20), (23, 20), (24, 1), (29, 1),      # within realert: quiet
            (30, 20), (33, 20), (34, 60),              # quiet again, but an escalation pages
            (35, 1), (40, 1),                          # and then its resolution too
            (50, 60), (53, 60), (54, 1), (59, 1),      # back at the notified step: quiet
            (60, 250), (63, 250), (64, 1), (69, 1),    # worse than ever notified: pages
            (140, 20), (143, 20)]                      # past realert: pages again
    got = [(t, e, s) for t, e, s, *_ in run(book, r, flap)]
    assert got == [(3, "fired", "warning"), (9, "resolved", "warning"),
                   (34, "escalated", "critical"), (40, "resolved", "critical"),
                   (63, "fired", "critical"), (69, "resolved", "critical"),
                   (143, "fired", "warning")]


def test_state_round_trips(write: Callable[[str, str], str]) -> None:
    r, book = rule(write), AlertBook()
    run(book, r, [(0, 20), (3, 20)])
    copy = AlertBook.from_state(book.state(), {"r"})
    assert run(copy, r, [(4, 60)]) == run(book, r, [(4, 60)])
    assert AlertBook.from_state(book.state(), {"other"}).open == {}
