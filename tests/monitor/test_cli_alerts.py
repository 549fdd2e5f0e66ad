"""``stormwatch alerts`` and ``stormwatch silence`` through the command line: the record
a post-incident review needs (who, when, every message and attempt), and clear refusals."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.clock import FixedClock
from monitor.models import AlertEvent
from monitor.notify.plan import Planner
from monitor.notify.routes import Route, Routing
from monitor.store import Store

runner = CliRunner()
HOSTILE_KEY = "reddit:t3_\x1b]0;pwned\x07[red]x[/red]"


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A database with one incident: a hostile thread's alert, paged and tried twice."""
    url = f"sqlite:///{tmp_path}/a.db"
    store = Store.open(url)
    now = time.time()
    with store.transaction() as conn:
        Planner(Routing([Route("care", ("slack",))]), store, FixedClock(now)).record(
            conn, [AlertEvent(event="fired", rule="negative-thread-taking-off",
                              severity="warning", scope="thread", key=HOSTILE_KEY,
                              topic="acme", at=now - 60, signals={"mentions": 31},
                              summary="Negative thread \u202etaking off")])
    [d] = store.list_deliveries()
    store.record_attempt(d["id"], now, "retry", "Slack answered 500 rollup_error",
                         status="pending", next_at=now + 10)
    store.record_attempt(d["id"], now + 10, "sent", "ok", status="sent")
    store.close()
    return url


def test_list_show_ack_resolve(db: str) -> None:
    r = runner.invoke(app, ["alerts", "list", "--db", db])
    assert r.exit_code == 0, r.output
    assert "negative-thread-taking-off" in r.stdout and "#1" in r.stdout
    assert "\x1b" not in r.stdout and "\u202e" not in r.stdout and "[red]x[/red]" in r.stdout

    r = runner.invoke(app, ["alerts", "ack", "1", "--by", "ana", "--note", "on it",
                            "--db", db])
    assert r.exit_code == 0 and "incident #1 acknowledged by ana" in r.stderr, r.output

    r = runner.invoke(app, ["alerts", "show", "1", "--db", db])
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "acknowledged by ana" in out and ": on it" in out
    assert "slack: page (fired, warning) sent" in out
    assert "retry: Slack answered 500 rollup_error" in out and "sent: ok" in out

    r = runner.invoke(app, ["alerts", "resolve", "1", "--by", "bo", "--note", "refunded",
                            "--db", db])
    assert r.exit_code == 0 and "resolved by bo" in r.stderr, r.output
    r = runner.invoke(app, ["alerts", "list", "--db", db])
    assert "no alerts" in r.stdout  # nothing firing any more
    r = runner.invoke(app, ["alerts", "list", "--all", "--json", "--db", db])
    [row] = [json.loads(line) for line in r.stdout.splitlines()]
    assert (row["state"], row["resolved_by"], row["acked_by"]) == ("resolved", "bo", "ana")
    assert row["key"] == HOSTILE_KEY  # JSON keeps the data as it was


def test_refusals_exit_2_and_say_what_to_do(db: str) -> None:
    for args, said in (
            (["alerts", "show", "9"], "no alert 9"),
            (["alerts", "ack", "9", "--by", "ana"], "no alert 9"),
            (["silence", "add", "--for", "1h", "--comment", "x"], "at least one of --rule"),
            (["silence", "add", "--rule", "r", "--comment", "x"], "say how long"),
            (["silence", "add", "--rule", "r", "--for", "soon", "--comment", "x"], "--for"),
            (["silence", "add", "--rule", "r", "--until", "2001-01-01T00:00:00Z",
              "--comment", "x"], "already past"),
            (["silence", "add", "--scope", "post", "--for", "1h", "--comment", "x"],
             "thread or topic"),
            (["silence", "expire", "4"], "no active silence 4")):
        r = runner.invoke(app, [*args, "--db", db])
        assert r.exit_code == 2 and said in r.stderr, (args, r.output)
    runner.invoke(app, ["alerts", "resolve", "1", "--by", "bo", "--db", db])
    r = runner.invoke(app, ["alerts", "resolve", "1", "--by", "bo", "--db", db])
    assert r.exit_code == 2 and "not firing" in r.stderr


def test_silences_add_list_expire(db: str) -> None:
    r = runner.invoke(app, ["silence", "add", "--key", HOSTILE_KEY, "--for", "2h",
                            "--by", "ana", "--comment", "answered \x1b[31mpublicly", "--db", db])
    assert r.exit_code == 0 and "silence 1 until" in r.stderr, r.output
    r = runner.invoke(app, ["silence", "list", "--db", db])
    assert "ana" in r.stdout and "\x1b" not in r.stdout and "key=reddit:t3_" in r.stdout
    r = runner.invoke(app, ["silence", "expire", "1", "--db", db])
    assert r.exit_code == 0 and "silence 1 expired" in r.stderr
    assert "no silences" in runner.invoke(app, ["silence", "list", "--db", db]).stdout
    r = runner.invoke(app, ["silence", "list", "--all", "--json", "--db", db])
    [row] = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["expired_at"] is not None and row["created_by"] == "ana"
