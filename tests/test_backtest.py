"""`stormwatch backtest`: its numbers against an independent count from the raw alert
events of `replay --json`, messages against what `replay --notify` delivers, a rules
change judged with `--against` (and its exit status), and labels errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.models import iso, parse_time

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from scenarios import generate, write  # noqa: E402

RANK = {"info": 0, "warning": 1, "critical": 2}


def week(tmp: Path, seed: int, cut: float | None = None, grace: int = 7200
         ) -> tuple[str, str, dict[str, Any]]:
    """A generated week and a labels file for its two must-page incidents and decoys;
    with ``cut``, each incident is labelled as ending ``cut`` seconds after its start
    (so that later pages fall in the grace, or outside as noise)."""
    mentions, labels = generate(seed, 7)
    dump = str(tmp / f"seed{seed}.jsonl")
    write(mentions, labels, dump)
    if cut is not None:
        for inc in labels["incidents"]:
            inc["end"] = iso(parse_time(inc["start"]) + cut)
    lines = [f"grace: {grace}s", "incidents:"]
    decoys = ["non_incidents:"]
    for inc in labels["incidents"]:
        entry = [f"  - name: {inc['kind']}", f"    start: {inc['start']}",
                 f"    end: {inc['end']}", "    topic: acme"]
        if inc.get("thread"):
            entry.append(f"    thread: \"{inc['thread']}\"")
        if inc["must_page"]:
            entry.append(f"    within: {inc['deadline_minutes']}m")
            lines += entry
        else:
            decoys += entry
    path = tmp / f"seed{seed}-labels.yaml"
    path.write_text("\n".join(lines + decoys) + "\n")
    return dump, str(path), labels


def independent(events: list[dict[str, Any]], labels: dict[str, Any], first: float,
                last: float, grace: int) -> dict[str, Any]:
    """The labels' verdict counted here from scratch, from the --json events."""
    pages = [e for e in events if e["event"] in ("fired", "escalated")
             and RANK[e["severity"]] >= 1]
    caught: dict[str, float | None] = {}
    inside = set()
    for inc in labels["incidents"]:
        if not inc["must_page"]:
            continue
        t0, t1 = parse_time(inc["start"]), parse_time(inc["end"])
        mine = [e for e in pages if t0 <= parse_time(e["at"]) <= t1 + grace and (
            e["scope"] == "topic" or inc.get("thread") in (None, e["key"]))]
        inside.update(id(e) for e in mine)
        soon = [parse_time(e["at"]) - t0 for e in mine
                if parse_time(e["at"]) - t0 <= inc["deadline_minutes"] * 60]
        caught[inc["kind"]] = round(min(soon) / 60, 1) if soon else None
    outside = [e for e in pages if id(e) not in inside]
    return {"caught": caught, "outside": len(outside),
            "per_week": round(len(outside) / max((last - first) / (7 * 86400), 1 / 7), 2)}


@pytest.mark.parametrize("seed,cut,grace", [(3, None, 7200), (11, 1200, 900), (7, 600, 0)])
def test_backtest_numbers_match_a_count_from_the_raw_events(
        tmp_path: Path, seed: int, cut: float | None, grace: int) -> None:
    dump, labels_path, labels = week(tmp_path, seed, cut, grace)
    config = str(ROOT / "samples" / "acme.yaml")
    r = runner.invoke(app, ["replay", dump, "--config", config, "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    events = [orjson.loads(line) for line in r.stdout.splitlines() if line.strip()]
    times = [parse_time(orjson.loads(line)["created_at"])
             for line in Path(dump).read_bytes().splitlines()]
    want = independent(events, labels, min(times), max(times), grace)

    r = runner.invoke(app, ["backtest", dump, "--config", config, "--labels", labels_path,
                            "--json", "--quiet"])
    assert r.exit_code in (0, 1), r.output
    got = orjson.loads(r.stdout)["results"][0]["overall"]
    assert got["caught"] == want["caught"]
    assert got["pages_outside_incidents"] == want["outside"]
    assert got["pages_outside_per_week"] == want["per_week"]
    assert r.exit_code == (1 if None in want["caught"].values() else 0)


def test_messages_per_incident_are_what_replay_notify_delivers(tmp_path: Path) -> None:
    from tests.fakes.slack import FakeSlack

    sample, config = ROOT / "samples" / "acme-week.jsonl.gz", ROOT / "samples" / "acme.yaml"
    r = runner.invoke(app, ["backtest", str(sample), "--config", str(config), "--labels",
                            str(ROOT / "samples" / "acme-labels.yaml"), "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    messages = orjson.loads(r.stdout)["results"][0]["messages_per_incident"]
    with FakeSlack() as slack:
        cfg = tmp_path / "n.yaml"
        cfg.write_text(config.read_text().replace("../rules", str(ROOT / "rules"))
                       + f"notify:\n  channels:\n    care: {{type: slack, webhook_url: "
                         f"{slack.url}}}\n")
        r = runner.invoke(app, ["replay", str(sample), "--config", str(cfg), "--notify",
                                "--quiet"])
        assert r.exit_code == 0, r.output
        received = len(slack.messages)
    assert sum(messages.values()) == received == 6
    assert messages == {"router-complaint-goes-viral": 3, "site-outage": 3}


def test_against_shows_exactly_what_a_higher_threshold_stops_catching(tmp_path: Path) -> None:
    """The thread rule alone, then with its threshold raised from 25 to 200 replies in
    30 minutes: the viral complaint is no longer caught within its hour. The report names
    exactly the incidents the first caught and the second not, and the exit status says
    whether any was lost."""
    base = (ROOT / "rules" / "default.yaml").read_text()
    start = base.index("  - name: negative-thread-taking-off")
    end = base.index("  - name: ", start + 10)
    thread_rule = "rules:\n" + base[start:end]
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(thread_rule)
    b.write_text(thread_rule.replace('mentions: ">= 25"', 'mentions: ">= 200"'))
    assert 'mentions: ">= 200"' in b.read_text()
    dump, labels_path, _ = week(tmp_path, 7)
    config = str(ROOT / "samples" / "acme.yaml")
    r = runner.invoke(app, ["backtest", dump, "--config", config, "--labels", labels_path,
                            "--rules", str(a), "--against", str(b), "--json", "--quiet"])
    out = orjson.loads(r.stdout)
    was = {k for k, v in out["results"][0]["overall"]["caught"].items() if v is not None}
    now = {k for k, v in out["results"][1]["overall"]["caught"].items() if v is not None}
    assert was == {"viral"} and now == set()  # the thread rule alone never sees an outage
    assert out["changes"]["newly_missed"] == ["viral"] and out["changes"]["newly_caught"] == []
    assert r.exit_code == 1 and "the candidate rules miss viral" in r.stderr
    # the same change the other way round loses nothing: exit 0
    r = runner.invoke(app, ["backtest", dump, "--config", config, "--labels", labels_path,
                            "--rules", str(b), "--against", str(a), "--quiet",
                            "--chart", str(tmp_path / "chart")])
    assert r.exit_code == 0, r.output
    assert "newly caught: viral" in r.stdout and "newly missed: none" in r.stdout
    # a chart per rules set, each with its own alerts listed
    rows_b = (tmp_path / "chart.html").read_text().count("<tr><td>")
    rows_a = (tmp_path / "chart-2.html").read_text().count("<tr><td>")
    assert rows_b == 0  # the 200-reply rule: no alert at all in this week
    assert rows_a >= 1 and "b.yaml" in (tmp_path / "chart.html").read_text()


@pytest.mark.parametrize("text,message,line", [
    ("incidents: []\n", "no incidents", 1),
    ("incidents:\n  - name: x\n    topic: acme\n    start: yesterday\n"
     "    end: 2024-05-01T00:00:00Z\n", "not ISO 8601", 4),
    ("incidents:\n  - name: x\n    start: 2024-05-02T00:00:00Z\n    end: 2024-05-01T00:00:00Z\n",
     "ends before it starts", 4),
    ("incidents:\n  - name: x\n    tpoic: acme\n    start: 2024-05-01T00:00:00Z\n"
     "    end: 2024-05-02T00:00:00Z\n", "unknown key 'tpoic'", 3),
])
def test_labels_errors_name_the_line(tmp_path: Path, text: str, message: str,
                                     line: int) -> None:
    path = tmp_path / "labels.yaml"
    path.write_text(text)
    r = runner.invoke(app, ["backtest", str(ROOT / "samples" / "acme-week.jsonl.gz"),
                            "--labels", str(path), "--quiet"])
    assert r.exit_code == 2 and message in r.stderr and f"labels.yaml:{line}:" in r.stderr, \
        r.output
