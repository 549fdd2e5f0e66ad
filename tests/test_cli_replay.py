"""`stormwatch replay` and `export` end to end: the --json contract, exit codes, bad input,
state kept with --db, and the export/replay round trip."""

from __future__ import annotations

import gzip
import os
import subprocess
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
SAMPLE = ROOT / "samples" / "acme-week.jsonl.gz"
CONFIG = ROOT / "samples" / "acme.yaml"
T0 = 1714554000.0  # 2024-05-01T09:00:00Z
CONTRACT_KEYS = ["event", "rule", "severity", "scope", "key", "topic", "at", "signals"]

THREAD_RULES = """
rules:
  - name: busy-thread
    scope: thread
    window: 10m
    when: {mentions: ">= 10", unique_authors: ">= 8"}
    severity: warning
    resolve_after: 30m
"""


def burst(n: int = 20, start: float = T0, thread: str = "t1") -> list[dict[str, Any]]:
    """A thread drawing a reply a minute from different people, then calm."""
    return [{"id": f"{thread}-{i}", "text": f"acme broke my order {i}",
             "created_at": iso(start + 60 * i), "thread_id": thread, "author": f"u{i}"}
            for i in range(n)]


def dump(path: Path, objs: list[Any]) -> str:
    path.write_bytes(b"".join((o if isinstance(o, bytes) else orjson.dumps(o)) + b"\n"
                              for o in objs))
    return str(path)


def events(stdout: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture
def rules(tmp_path: Path) -> str:
    p = tmp_path / "rules.yaml"
    p.write_text(THREAD_RULES)
    return str(p)


def test_json_output_is_exactly_the_contract(tmp_path: Path, rules: str) -> None:
    quiet_tail = [{"id": "late", "text": "acme ok", "created_at": iso(T0 + 3 * 3600)}]
    path = dump(tmp_path / "d.jsonl", burst() + quiet_tail)
    r = runner.invoke(app, ["replay", path, "--rules", rules, "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    evs = events(r.stdout)
    assert [e["event"] for e in evs] == ["fired", "resolved"]
    fired = evs[0]
    assert list(fired) == CONTRACT_KEYS
    assert (fired["rule"], fired["severity"], fired["scope"], fired["key"], fired["topic"]) == (
        "busy-thread", "warning", "thread", "dump:t1", "all")
    assert fired["at"] == iso(T0 + 9 * 60)  # the tenth reply itself: its event time
    assert fired["signals"]["mentions"] == 10 and fired["signals"]["unique_authors"] == 10
    assert "read 21 mention(s)" in r.stderr


def test_bad_lines_are_counted_and_the_rest_processed(tmp_path: Path, rules: str) -> None:
    objs: list[Any] = burst()
    objs.insert(3, b'{"id": "x", "text": "unterminated')
    objs.insert(5, {"id": "y", "text": "no time"})
    objs.insert(7, {"id": "z", "text": "bad time", "created_at": "yesterday"})
    objs.insert(9, b"\x00\xff\xfe binary garbage \x89PNG")
    path = dump(tmp_path / "d.jsonl", objs)
    r = runner.invoke(app, ["replay", path, "--rules", rules, "--json", "--quiet"])
    assert r.exit_code == 0
    assert [e["event"] for e in events(r.stdout)] == ["fired"]
    assert "skipped 4 bad line(s)" in r.stderr
    assert f"{path}:4: invalid JSON" in r.stderr
    assert f"{path}:6: missing 'created_at'" in r.stderr
    assert f"{path}:8: bad 'created_at'" in r.stderr
    assert f"{path}:10: invalid JSON" in r.stderr


def test_nothing_readable_exits_1(tmp_path: Path) -> None:
    path = dump(tmp_path / "d.jsonl", [b"{nope", b"{still nope"])
    r = runner.invoke(app, ["replay", path, "--quiet"])
    assert r.exit_code == 1
    assert "no mention could be read" in r.stderr


def test_binary_file_exits_1_with_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "photo.jpg"
    p.write_bytes(bytes(range(256)) * 40)
    r = runner.invoke(app, ["replay", str(p), "--quiet"])
    assert r.exit_code == 1
    assert "not a recognised dump" in r.stderr and "Traceback" not in r.output


def test_truncated_zst_warns_and_keeps_the_rest(tmp_path: Path, rules: str) -> None:
    import zstandard

    data = b"".join(orjson.dumps(o) + b"\n" for o in burst(20000))  # several zstd blocks
    frame = zstandard.ZstdCompressor().compress(data)
    p = tmp_path / "cut.jsonl.zst"
    p.write_bytes(frame[: len(frame) // 2])
    r = runner.invoke(app, ["replay", str(p), "--rules", rules, "--quiet"])
    assert r.exit_code == 0
    assert "could not read to the end" in r.stderr
    assert "truncated or corrupt compressed data" in r.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    r = runner.invoke(app, ["replay", str(tmp_path / "missing.jsonl"), "--quiet"])
    assert r.exit_code == 2 and "no such dump file" in r.stderr
    r = runner.invoke(app, ["replay", str(SAMPLE), "--format", "xml", "--quiet"])
    assert r.exit_code == 2 and "jsonl, pushshift, jetstream, csv" in r.stderr
    r = runner.invoke(app, ["replay", str(SAMPLE), "--notify", "--quiet"])
    assert r.exit_code == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: r\n    scope: topic\n    window: 5 minutes\n"
                   "    when: {mentions: '>= 1'}\n")
    r = runner.invoke(app, ["replay", str(SAMPLE), "--rules", str(bad), "--quiet"])
    assert r.exit_code == 2 and f"{bad}:4:" in r.stderr


def test_db_keeps_state_so_a_second_replay_continues(tmp_path: Path, rules: str) -> None:
    """The burst split over two replays into one database fires exactly as one replay."""
    db = f"sqlite:///{tmp_path / 'keep.db'}"
    objs = burst()
    first = dump(tmp_path / "a.jsonl", objs[:6])
    second = dump(tmp_path / "b.jsonl", objs[6:])
    r1 = runner.invoke(app, ["replay", first, "--rules", rules, "--json", "-q", "--db", db])
    assert r1.exit_code == 0 and events(r1.stdout) == []
    r2 = runner.invoke(app, ["replay", second, "--rules", rules, "--json", "-q", "--db", db])
    whole = runner.invoke(app, ["replay", dump(tmp_path / "all.jsonl", objs), "--rules", rules,
                                "--json", "-q"])
    assert events(r2.stdout) == events(whole.stdout) != []
    # replaying the same file again into the same database counts nothing twice
    r3 = runner.invoke(app, ["replay", second, "--rules", rules, "--json", "-q", "--db", db])
    assert events(r3.stdout) == [] and "14 duplicate(s)" in r3.stderr


def test_without_db_replays_are_independent(tmp_path: Path, rules: str) -> None:
    path = dump(tmp_path / "d.jsonl", burst())
    a = runner.invoke(app, ["replay", path, "--rules", rules, "--json", "-q"])
    b = runner.invoke(app, ["replay", path, "--rules", rules, "--json", "-q"])
    assert events(a.stdout) == events(b.stdout) != []


def test_export_round_trip_gives_the_same_alerts(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'sample.db'}"
    r1 = runner.invoke(app, ["replay", str(SAMPLE), "--config", str(CONFIG), "--json", "-q",
                             "--db", db])
    assert r1.exit_code == 0
    out = tmp_path / "export.jsonl"
    r = runner.invoke(app, ["export", "--db", db, "-o", str(out)])
    assert r.exit_code == 0
    with gzip.open(SAMPLE, "rb") as f:
        original = [orjson.loads(line) for line in f]
    exported = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    in_scope = [o for o in original if "acme hardware" not in o["text"].lower()]
    assert len(exported) == len(in_scope)
    by_id = {o["id"]: o for o in exported}
    for o in in_scope[:200]:
        e = by_id[o["id"]]
        for key in ("text", "created_at", "thread_id", "author", "url", "metrics"):
            assert e.get(key) == o.get(key, o["id"] if key == "thread_id" else None), key
        assert -1 <= e["sentiment"] <= 1
    r2 = runner.invoke(app, ["replay", str(out), "--config", str(CONFIG), "--json", "-q"])
    assert events(r2.stdout) == events(r1.stdout) != []


def test_python_dash_m_and_stdin(tmp_path: Path, rules: str) -> None:
    data = b"".join(orjson.dumps(o) + b"\n" for o in burst())
    proc = subprocess.run([sys.executable, "-m", "monitor", "replay", "-", "--rules", rules,
                           "--json"], input=gzip.compress(data), capture_output=True,
                          cwd=ROOT, env=dict(os.environ, COLUMNS="200"), check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert [e["event"] for e in events(proc.stdout.decode())] == ["fired"]


def test_sample_pages_its_incidents() -> None:
    """The bundled sample (seed 7 of benchmarks/scenarios.py) pages its outage and its
    viral complaint, and nothing else."""
    r = runner.invoke(app, ["replay", str(SAMPLE), "--config", str(CONFIG), "--json", "-q"])
    pages = [e for e in events(r.stdout)
             if e["event"] != "resolved" and e["severity"] in ("warning", "critical")]
    rules = {e["rule"] for e in pages}
    assert "negative-thread-taking-off" in rules and "topic-negative-spike" in rules
    assert all(e["signals"]["negative_share"] >= 0.35 for e in pages)


def test_overlapped_sentiment_changes_nothing(tmp_path: Path, rules: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring sentiment in a worker while the previous batch is detected gives the same
    events and counts as doing it in line, duplicates across batches included."""
    from monitor import app as core
    from monitor.inputs import DumpInputs
    from monitor.setup import setup

    monkeypatch.setattr(core, "BATCH_SIZE", 7)
    objs: list[Any] = burst(60)
    objs[20:20] = objs[14:17]  # duplicates of the previous batch
    objs[40:40] = [dict(o, text="acme is terrible, awful, I hate it") for o in objs[38:40]]
    path = dump(tmp_path / "d.jsonl", objs)
    s = setup(None, [rules])
    runs = []
    for workers in (False, True):
        got: list[Any] = []
        with DumpInputs([path]) as inputs:
            r = core.replay(s, inputs, workers=workers,
                            on_event=lambda e, got=got: got.append(e.contract_json()))
        runs.append((got, dict(r.counts)))
    assert runs[0] == runs[1]
    assert runs[0][1]["duplicates"] == 5 and runs[0][0] != []


def test_replay_notify_sends_each_incident_in_three_messages_or_fewer(tmp_path: Path) -> None:
    """The sample week through `replay --notify` to a local Slack webhook (real HTTP): the
    viral complaint (a thread page, the brand-wide spike it causes, critical, then calm)
    and the outage (page, critical, calm) arrive as three messages each; the info-level
    volume spike of the giveaway tells nobody. The first attempt meets a 500: retried."""
    from tests.fakes.slack import FakeSlack

    with FakeSlack() as slack:
        slack.failures.append((500, "rollup_error"))
        cfg = tmp_path / "notify.yaml"
        cfg.write_text(CONFIG.read_text().replace("../rules", str(ROOT / "rules")) +
                       f"notify:\n  channels:\n    care: {{type: slack, webhook_url: "
                       f"{slack.url}}}\n")
        r = runner.invoke(app, ["replay", str(SAMPLE), "--config", str(cfg), "--notify",
                                "--quiet", "--db", f"sqlite:///{tmp_path / 'n.db'}"])
        assert r.exit_code == 0, r.output
    assert "messages: 6 sent, 0 pending, 0 failed" in r.stderr
    by_incident: dict[str, list[str]] = {}
    for m in slack.messages:  # in order per incident (a retry does not hold up the others)
        why = m["attachments"][0]["blocks"][-1]["elements"][0]["text"]
        by_incident.setdefault(why.split("incident #")[1].split(",")[0], []).append(m["text"])
    assert [by_incident[k] for k in sorted(by_incident)] == [
        ["WARNING fired: negative-thread-taking-off on a thread in acme",
         "CRITICAL escalated: topic-negative-spike on topic acme",
         "RESOLVED: incident #2 on acme"],
        ["WARNING fired: topic-negative-spike on topic acme",
         "CRITICAL escalated: topic-negative-spike on topic acme",
         "RESOLVED: incident #3 on acme"]]
    heads = [m["attachments"][0]["blocks"][0]["text"]["text"] for m in slack.messages]
    assert sum("Escalated to CRITICAL (update to incident #" in h for h in heads) == 2
    page = next(m for m in slack.messages if "negative-thread" in m["text"])
    blocks = page["attachments"][0]["blocks"]
    why = blocks[-1]["elements"][0]["text"]
    assert why.startswith("Rule negative-thread-taking-off, thread bluesky:at://did:plc:")
    # the chart: the thread's own replies over the six hours before the page, counted
    # here from the sample itself
    [chart] = [b["elements"][0]["text"] for b in blocks
               if b["type"] == "context" and "15 min bars" in b["elements"][0]["text"]]
    thread = why.split("thread ")[1].split(", at ")[0]
    end = parse_time(why.split(", at ")[1].split(",")[0]) + 1
    with gzip.open(SAMPLE) as f:
        times = [parse_time(o["created_at"]) for o in map(orjson.loads, f)
                 if o.get("thread_id", o["id"]) == thread]
    bars = [sum(1 for t in times if end - 6 * 3600 + 900 * i <= t < end - 6 * 3600 + 900 * (
        i + 1)) for i in range(24)]
    assert chart.endswith(f"last 6 h, 15 min bars, peak {max(bars)} mentions"), chart
    assert chart[:24].index("█") == bars.index(max(bars))
    r = runner.invoke(app, ["alerts", "list", "--all", "--db",
                            f"sqlite:///{tmp_path / 'n.db'}"])
    assert r.exit_code == 0 and "topic-negative-spike" in r.stdout, r.output
