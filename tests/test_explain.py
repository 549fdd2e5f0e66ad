"""`stormwatch rules explain`: the signals and each condition's verdict at a moment, on the
bundled sample, checked against counts made here from the sample itself."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
from typer.testing import CliRunner

from monitor.cli import app
from monitor.models import parse_time

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
SAMPLE = str(ROOT / "samples" / "acme-week.jsonl.gz")
CONFIG = str(ROOT / "samples" / "acme.yaml")
THREAD = "bluesky:at://did:plc:user_558677/app.bsky.feed.post/3k1c10"
RULE = "negative-thread-taking-off"


def rows(out: str) -> dict[str, tuple[str, str]]:
    """condition -> (value, verdict), from the printed table."""
    found = {}
    for line in out.splitlines():
        parts = line.rsplit(None, 2)
        if len(parts) == 3 and parts[2] in ("yes", "no"):
            found[parts[0].strip()] = (parts[1], parts[2])
    return found


def thread_times() -> list[float]:
    with gzip.open(SAMPLE) as f:
        return [parse_time(o["created_at"]) for o in map(orjson.loads, f)
                if o.get("thread_id") == THREAD or o["id"] == THREAD]


def test_before_the_25th_reply_the_thread_rule_does_not_hold_and_says_why() -> None:
    r = runner.invoke(app, ["rules", "explain", RULE, SAMPLE, "--config", CONFIG,
                            "--at", "2024-05-09T13:47:30Z", "--key", THREAD])
    assert r.exit_code == 0, r.output
    got = rows(r.stdout)
    at = parse_time("2024-05-09T13:47:30Z")
    minute = parse_time("2024-05-09T13:47:00Z")
    window = [t for t in thread_times() if minute - 1800 <= t <= at]
    assert got["mentions >= 25"] == (str(len(window)), "no") and len(window) < 25
    assert got["escalate to critical: mentions >= 90"][1] == "no"
    assert "does not hold; alert not open" in r.stdout


def test_after_it_the_rule_holds_and_the_alert_is_firing() -> None:
    r = runner.invoke(app, ["rules", "explain", RULE, SAMPLE, "--config", CONFIG,
                            "--at", "2024-05-09T13:50:00Z", "--key", THREAD])
    assert r.exit_code == 0, r.output
    got = rows(r.stdout)
    assert all(verdict == "yes" for cond, (_, verdict) in got.items()
               if not cond.startswith("escalate"))
    assert "holds; alert firing since 2024-05-09T13:47:57Z, warning" in r.stdout


def test_without_a_key_a_topic_rule_explains_each_topic() -> None:
    r = runner.invoke(app, ["rules", "explain", "topic-negative-spike", SAMPLE, "--config",
                            CONFIG, "--at", "2024-05-10T18:00:00Z"])
    assert r.exit_code == 0, r.output
    assert "topic acme: holds; alert firing since 2024-05-10T17:49:08Z, critical" in r.stdout


def test_mistakes_exit_2_with_what_to_do() -> None:
    for args, said in (
            (["rules", "explain", "negative-thread", SAMPLE, "--at", "2024-05-09T13:50:00Z"],
             "did you mean 'negative-thread-taking-off'"),
            (["rules", "explain", RULE, SAMPLE, "--at", "yesterday"], "--at: not ISO 8601"),
            (["rules", "explain", RULE, SAMPLE, "--at", "2024-05-09T13:50:00Z", "--key",
              "reddit:t3_nothing"], "thread reddit:t3_nothing is not in the engine"),
            (["rules", "explain", RULE, SAMPLE, "--at", "2001-01-01T00:00:00Z"],
             "no mention at or before")):
        r = runner.invoke(app, [*args, "--config", CONFIG])
        assert r.exit_code == 2 and said in r.stderr, (args, r.output)
