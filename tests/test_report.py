"""Charts and incident records: `stormwatch report` and `replay --chart`, their numbers
against counts made here from the database, hostile text kept inert, and refusals."""

from __future__ import annotations

import gzip
import re
import time
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.clock import FixedClock
from monitor.models import AlertEvent, Mention, parse_time
from monitor.notify.plan import Planner
from monitor.notify.routes import Route, Routing
from monitor.store import Store

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
SAMPLE = str(ROOT / "samples" / "acme-week.jsonl.gz")
CONFIG = str(ROOT / "samples" / "acme.yaml")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    db = f"sqlite:///{tmp_path_factory.mktemp('report')}/acme.db"
    r = runner.invoke(app, ["replay", SAMPLE, "--config", CONFIG, "--db", db, "--quiet"])
    assert r.exit_code == 0, r.output
    return db


def test_a_topic_chart_counts_what_the_database_holds(sample_db: str, tmp_path: Path) -> None:
    from monitor import report
    from monitor.setup import setup

    start, end = parse_time("2024-05-09T06:00:00Z"), parse_time("2024-05-11T06:00:00Z")
    store = Store.open(sample_db)
    try:
        t = report.from_store(setup(CONFIG), store, topic="acme", since=start, until=end)
        stored = [m for m in store.iter_mentions(since=start, until=end) if "acme" in m.topics]
        events = [e for e in store.list_events() if start <= e["at"] < end]
    finally:
        store.close()
    assert t.step == 1800 and len(t.counts) == 96
    assert sum(t.counts) == len(stored)
    for i in (10, 50, 80):
        b0 = start + i * t.step
        mine = [m for m in stored if b0 <= m.created_at < b0 + t.step]
        assert t.counts[i] == len(mine)
        assert t.negative[i] == sum(1 for m in mine if (m.compound or 0) <= -0.05)
    assert [(e.event, e.at) for e in t.events] == [(e["event"], e["at"]) for e in events]
    assert all(x is not None for x in t.expected)  # two weeks of history: warmed up

    out = tmp_path / "crisis"
    r = runner.invoke(app, ["report", "--topic", "acme", "--since", "2024-05-09T06:00:00Z",
                            "--until", "2024-05-11T06:00:00Z", "--db", sample_db,
                            "--config", CONFIG, "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "crisis.png").read_bytes().startswith(PNG)
    page = (tmp_path / "crisis.html").read_text()
    assert "data:image/png;base64," in page
    assert not re.search(r"(src|href)=['\"]https?:", page)  # self-contained: nothing fetched
    assert page.count("<tr><td>") == len(events)


def test_the_incident_record_tells_the_story(sample_db: str, tmp_path: Path) -> None:
    store = Store.open(sample_db)
    try:
        alert = next(a for a in store.list_alerts(state=None, limit=50)
                     if a["rule"] == "negative-thread-taking-off")
        record = store.alert_record(alert["id"])
    finally:
        store.close()
    assert record is not None and record["incident"] is not None
    out = tmp_path / "incident"
    r = runner.invoke(app, ["report", str(alert["id"]), "--db", sample_db, "--config", CONFIG,
                            "-o", str(out)])
    assert r.exit_code == 0, r.output
    md = (tmp_path / "incident.md").read_text()
    inc = record["incident"]
    assert md.startswith(f"# Incident #{inc['id']} on acme")
    hours = (inc["resolved_at"] - inc["opened_at"]) / 3600
    assert f"time to resolve (from the first alert): {hours:.1f} h" in md
    assert "time to acknowledge (from the first message): n/a" in md
    rows = [line for line in md.splitlines() if line.startswith("| 2024-")]
    times = [line.split(" | ")[0][2:] for line in rows]
    assert times == sorted(times)
    detected = [line for line in rows if "| detected: " in line or "| escalated: " in line]
    assert len(detected) == 3  # thread fired, topic fired, topic escalated
    with gzip.open(SAMPLE) as f:
        thread_start = min(parse_time(o["created_at"]) for o in map(orjson.loads, f)
                           if o.get("thread_id") == alert["key"] or o["id"] == alert["key"])
    assert rows[0].startswith(f"| {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(thread_start))}"
                              " | first mention")
    assert "## Rules and playbooks" in md and "### topic-negative-spike" in md
    assert (tmp_path / "incident.png").read_bytes().startswith(PNG)
    assert "<h2>Timeline</h2>" in (tmp_path / "incident.html").read_text()


def test_messages_acknowledgement_and_hostile_posts_in_the_record(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/h.db"
    store = Store.open(url)
    t0 = 1_714_560_000.0
    hostile = {"id": "reddit:t1_x", "author": "mallory|evil",
               "text": "[click](https://evil.example) <script>alert(1)</script> | # *x*",
               "url": "javascript:alert(1)", "why": "most engaged complaint"}
    with store.transaction() as conn:
        store.add_mentions(conn, [Mention(id=f"reddit:t1_{i}", text="acme", created_at=t0 + i,
                                          thread_id="reddit:t3_x", topics=("acme",),
                                          compound=-0.5) for i in range(5)])
        Planner(Routing([Route("care", ("slack",))]), store, FixedClock(t0 + 60)).record(
            conn, [AlertEvent(event="fired", rule="negative-thread-taking-off",
                              severity="warning", scope="thread", key="reddit:t3_x",
                              topic="acme", at=t0 + 30, signals={"mentions": 5},
                              summary="Negative thread", top_posts=(hostile,))])
    [d] = store.list_deliveries()
    store.record_attempt(d["id"], t0 + 70, "sent", "ok", status="sent")
    [a] = store.list_alerts()
    store.acknowledge(a["id"], "ana", "on it", t0 + 70 + 600)
    store.close()
    r = runner.invoke(app, ["report", str(a["id"]), "--db", url, "-o", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    md = (tmp_path / "r.md").read_text()
    assert "time to acknowledge (from the first message): 10 min" in md
    assert "page sent to slack" in md and "acknowledged by ana" in md
    assert "\\[click\\](https://evil.example) \\<script\\>" in md and "javascript:" not in md
    page = (tmp_path / "r.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "javascript:" not in page


def test_replay_chart_and_refusals(tmp_path: Path) -> None:
    r = runner.invoke(app, ["replay", SAMPLE, "--config", CONFIG, "--chart",
                            str(tmp_path / "week"), "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    events = [line for line in r.stdout.splitlines() if line.strip()]
    assert (tmp_path / "week.png").read_bytes().startswith(PNG)
    assert (tmp_path / "week.html").read_text().count("<tr><td>") == len(events) > 0
    for args, said in ((["report"], "say what to report"),
                       (["report", "--topic", "acme", "--thread", "x"], "say what to report"),
                       (["report", "999"], "no alert 999"),
                       (["report", "--topic", "acme", "--since", "soon"], "--since/--until")):
        r = runner.invoke(app, [*args, "--db", f"sqlite:///{tmp_path}/empty.db"])
        assert r.exit_code == 2 and said in r.stderr, (args, r.output)
    r = runner.invoke(app, ["report", "--topic", "acme", "--db",
                            f"sqlite:///{tmp_path}/empty.db"])
    assert r.exit_code == 2 and "holds no mentions" in r.stderr
