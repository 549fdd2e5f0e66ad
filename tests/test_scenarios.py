"""The scenario generator and the detection judge of benchmarks/ (they measure the product,
so they are tested too), and one seeded week judged end to end through the CLI."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

from detection import judge, run_seed  # noqa: E402
from scenarios import generate  # noqa: E402

from monitor.models import parse_time  # noqa: E402

LABELS = {"incidents": [
    {"kind": "outage", "must_page": True, "start": "2024-05-07T15:00:00Z",
     "end": "2024-05-07T17:00:00Z", "deadline_minutes": 30},
    {"kind": "giveaway", "must_page": False, "start": "2024-05-08T15:00:00Z",
     "end": "2024-05-08T18:00:00Z", "thread": "bluesky:gift"},
]}


def ev(at: str, *, severity: str = "warning", scope: str = "topic", key: str = "acme",
       event: str = "fired") -> dict[str, Any]:
    return {"event": event, "rule": "r", "severity": severity, "scope": scope, "key": key,
            "topic": "acme", "at": at, "signals": {}}


def test_judge_latency_and_false_pages() -> None:
    v = judge([ev("2024-05-07T15:12:00Z")], LABELS, 1)
    assert v.ok and v.latency == {"outage": 12.0}
    late = judge([ev("2024-05-07T15:45:00Z")], LABELS, 1)
    assert not late.ok and late.latency == {"outage": None}  # after the deadline
    decoy = judge([ev("2024-05-07T15:05:00Z"),
                   ev("2024-05-08T15:30:00Z", scope="thread", key="bluesky:gift")], LABELS, 1)
    assert not decoy.ok and "giveaway decoy" in decoy.false_pages[0]
    calm = judge([ev("2024-05-07T15:05:00Z"), ev("2024-05-09T03:00:00Z")], LABELS, 1)
    assert calm.false_pages == ["r warning topic acme at 2024-05-09T03:00:00Z (calm time)"]
    quiet = judge([ev("2024-05-07T15:05:00Z"), ev("2024-05-09T03:00:00Z", severity="info"),
                   ev("2024-05-09T04:00:00Z", event="resolved")], LABELS, 1)
    assert quiet.ok  # info and resolutions page nobody


def test_generator_is_seeded_and_realistic() -> None:
    a, labels = generate(5)
    b, _ = generate(5)
    assert a == b and generate(6)[0] != a
    assert 7000 < len(a) < 14000  # about 9,500 mentions a week at rate 1
    assert len({m["id"] for m in a}) == len(a)
    assert len({m["text"] for m in a}) > 0.6 * len(a)  # mostly distinct texts
    times = [parse_time(m["created_at"]) for m in a]
    assert times == sorted(times)
    kinds = {i["kind"]: i for i in labels["incidents"]}
    assert set(kinds) == {"viral", "outage", "giveaway", "angry", "news"}
    # day/night rhythm: the busiest local hour has several times the quietest
    by_hour = Counter(int((t - 5 * 3600) // 3600) % 24 for t in times)
    assert max(by_hour.values()) > 5 * min(by_hour.values())
    # the viral thread really is hundreds of replies
    viral = kinds["viral"]["thread"]
    assert sum(m.get("thread_id") == viral for m in a) >= 250
    # the angry decoy is one account
    angry = [m for m in a if m["author"].startswith("angry_")]
    assert len(angry) >= 30 and len({m["author"] for m in angry}) == 1


def test_a_seeded_week_meets_the_bar_end_to_end() -> None:
    v = run_seed(3, str(BENCH.parent / "rules" / "default.yaml"),
                 str(BENCH.parent / "samples" / "acme.yaml"), 7)
    assert v.false_pages == []
    assert v.latency["outage"] is not None and v.latency["outage"] <= 30
    assert v.latency["viral"] is not None and v.latency["viral"] <= 60
