"""Flatline rules (``scope: source``): a source that usually brings mentions and goes
quiet pages whoever runs Stormwatch, and resolves when it comes back; a new source
or one this instance does not poll does not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.clock import FixedClock
from monitor.config import default_rules_path
from monitor.errors import RulesError
from monitor.flatline import TOPIC, Flatline
from monitor.leases import Leases
from monitor.models import AlertEvent
from monitor.rules import load_rules
from monitor.store import Store

DAY = 86400
NOW = 1_714_560_000.0 + 30 * DAY


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path}/f.db")
    yield s
    s.close()


def history(store: Store, source: str, per_hour: int, days: int, *, today: bool) -> None:
    """``per_hour`` mentions an hour around this time of day on the ``days`` days before
    NOW (and the last hours of today if ``today``)."""
    with store.transaction() as conn:
        for d in range(days, -1, -1):
            if d == 0 and not today:
                break
            for h in range(3):
                store.add_volume(conn, source, per_hour, NOW - d * DAY - h * 3600 - 600)


def flatline(store: Store, clock: FixedClock, holds: bool = True,
             leases: Leases | None = None) -> tuple[Flatline, Leases]:
    if leases is None:
        leases = Leases(store, ["job:flatline"] if holds else [], holder="me", clock=clock)
        leases.keep()
    return Flatline(store, load_rules([default_rules_path()]), leases, None, clock=clock), \
        leases


def test_a_source_gone_quiet_pages_and_resolves_when_it_comes_back(store: Store) -> None:
    history(store, "rss:news", 20, 7, today=False)  # 20 an hour usually; none today
    clock = FixedClock(NOW)
    fl, leases = flatline(store, clock)
    got: list[AlertEvent] = []
    assert fl.evaluate(["rss:news"], got.append) == 1
    [ev] = got
    assert (ev.event, ev.rule, ev.key, ev.topic) == ("fired", "source-gone-quiet", "rss:news",
                                                     TOPIC)
    assert ev.signals["mentions"] == 0 and ev.signals["expected"] == 20
    assert "rss:news brought no mention in 1h; about 20 usual" in ev.summary
    [alert] = store.list_alerts()
    assert alert["state"] == "firing"

    clock.advance(60)
    leases.keep()                                        # the keeper renews, as it does
    assert fl.evaluate(["rss:news"], got.append) == 0   # still quiet: nothing new
    with store.transaction() as conn:
        store.add_volume(conn, "rss:news", 3, clock.now())  # it is back
    clock.advance(60)
    leases.keep()
    fl2, _ = flatline(store, clock, leases=leases)  # a new evaluator goes on from the state
    assert fl2.evaluate(["rss:news"], got.append) == 0
    clock.advance(5 * 60)
    leases.keep()
    assert fl2.evaluate(["rss:news"], got.append) == 1
    assert got[-1].event == "resolved"
    assert [a["state"] for a in store.list_alerts()] == ["resolved"]


def test_a_source_without_history_or_usually_quiet_does_not_page(store: Store) -> None:
    clock = FixedClock(NOW)
    fl, _ = flatline(store, clock)
    assert fl.evaluate(["rss:news"], lambda ev: None) == 0       # no history at all
    history(store, "rss:news", 2, 7, today=False)                # two an hour: quiet is normal
    assert fl.evaluate(["rss:news"], lambda ev: None) == 0
    assert store.list_alerts() == []


def test_an_instance_without_the_flatline_job_leaves_it_to_its_holder(store: Store) -> None:
    history(store, "rss:news", 20, 7, today=False)
    fl, _ = flatline(store, FixedClock(NOW), holds=False)
    assert fl.evaluate(["rss:news"], lambda ev: None) == 0
    assert store.list_alerts() == []


@pytest.mark.parametrize(("when", "extra", "message"), [
    ('{negative_share: ">= 0.5"}', "", "signal 'negative_share' does not exist for scope "
                                       "'source'"),
    ('{mentions: "== 0"}', "    topics: [acme]\n", "a source rule watches a source"),
])
def test_a_source_rule_with_signals_or_keys_it_cannot_have_is_refused(
        tmp_path: Path, when: str, extra: str, message: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("rules:\n  - name: quiet\n    scope: source\n    window: 1h\n"
                    f"    when: {when}\n" + extra)
    with pytest.raises(RulesError) as e:
        load_rules([str(path)])
    assert message in str(e.value) and f"{path}:" in str(e.value)
