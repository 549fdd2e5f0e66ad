"""``stormwatch run`` as a process, against local Reddit and feed servers: clean stops on
SIGTERM, and a SIGKILL in the middle of a poll that loses nothing and duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor.store import Store
from tests.fakes.feeds import FeedServer, rss
from tests.fakes.reddit import CLIENT_ID, CLIENT_SECRET, FakeReddit, comment, submission

NOW = time.time()


def rfc822(t: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(t))


@pytest.fixture
def peers() -> Iterator[tuple[FakeReddit, FeedServer]]:
    with FakeReddit() as reddit, FeedServer() as feeds:
        reddit.state.add(
            comment("c1", NOW - 300, "acme ate my refund", link="t3_p1"),
            comment("c2", NOW - 200, "same here with acme", link="t3_p1"),
            comment("c3", NOW - 100, "nothing to see", link="t3_p2"),
            submission("p1", NOW - 400, "Acme refunds are broken"),
        )
        feeds.feeds["/a.xml"] = rss("A", [(f"a{i}", f"Acme story {i}", rfc822(NOW - 60 * i))
                                          for i in range(5)])
        feeds.feeds["/b.xml"] = rss("B", [(f"b{i}", f"acme outage report {i}",
                                           rfc822(NOW - 30 * i)) for i in range(300)])
        yield reddit, feeds


def config(tmp: Path, reddit: FakeReddit, feeds: FeedServer, db: str, *, rss: bool = True,
           search: bool = True, extra: str = "", run: str = "") -> Path:
    path = tmp / f"{db}.yaml"
    feeds_yaml = textwrap.indent(textwrap.dedent(f"""\
        rss:
          a: {{url: "{feeds.url}/a.xml", interval: 1h}}
          b: {{url: "{feeds.url}/b.xml", interval: 1h}}
        """), "  ") if rss else ""
    path.write_text(textwrap.dedent(f"""\
        database: sqlite:///{tmp / db}.db
        run: {{lease: 3s, health: "127.0.0.1:0"{run}}}   # a killed daemon's work waits 3 s
        topics:
          acme: {{terms: [acme]}}
        sources:
          reddit:
            client_id: {CLIENT_ID}
            client_secret: ${{TEST_REDDIT_SECRET}}
            user_agent: stormwatch-tests/0.1
            subreddits: [acme]
            search: {str(search).lower()}
            interval: 1h
            oauth_url: {reddit.url}
            reddit_url: {reddit.url}
        """) + feeds_yaml + extra)
    return path


STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def no_daemon_left_behind() -> Iterator[None]:
    """A failed test must not leave its daemon running."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def start(cfg: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, TEST_REDDIT_SECRET=CLIENT_SECRET)
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    STARTED.append(proc)
    return proc


def until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def polled(proc: subprocess.Popen[str], db: Path, timeout: float = 60.0) -> None:
    """Wait until every source of the daemon has been polled; if the daemon dies first,
    fail with what it said (not a bare timeout)."""
    until(lambda: all_polled(db) or proc.poll() is not None, timeout=timeout)
    if proc.poll() is not None:
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"the daemon exited ({proc.returncode}) before polling:\n{err}")


def stored(db: Path) -> tuple[set[str], dict[str, int]]:
    s = Store.open(f"sqlite:///{db}")
    try:
        ids = {m.id for m in s.iter_mentions()}
        totals = {name: st.mentions_total for name, st in s.load_sources().items()}
        return ids, totals
    finally:
        s.close()


def all_polled(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        s = Store.open(f"sqlite:///{db}")
    except Exception:  # noqa: BLE001 - created by the daemon just now
        return False
    try:
        states = s.load_sources()
        names = {"reddit", "rss:a", "rss:b"}
        return names <= set(states) and all(states[n].last_success for n in names) and \
            states["reddit"].cursor is not None and len(states["reddit"].cursor) == 3
    finally:
        s.close()


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str, float]:
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=15)
    return proc.returncode, err, time.monotonic() - t0


def test_run_polls_every_source_and_stops_cleanly_on_sigterm(
        tmp_path: Path, peers: tuple[FakeReddit, FeedServer]) -> None:
    reddit, feeds = peers
    cfg = config(tmp_path, reddit, feeds, "plain")
    proc = start(cfg)
    polled(proc, tmp_path / "plain.db")
    code, err, took = stop(proc)
    assert code == 0 and took < 10, err
    assert "SIGTERM: stopping" in err and "stopped" in err
    assert CLIENT_SECRET not in err
    ids, totals = stored(tmp_path / "plain.db")
    assert totals == {"reddit": 3, "rss:a": 5, "rss:b": 300}
    assert "reddit:t1_c3" not in ids  # out of scope: not about acme
    status = subprocess.run([sys.executable, "-m", "monitor", "status", "--config", str(cfg)],
                            capture_output=True, text=True,
                            env=dict(os.environ, TEST_REDDIT_SECRET="x"))
    assert status.returncode == 0, status.stderr
    for name in ("reddit", "rss:a", "rss:b"):
        assert name in status.stdout
    assert "ok" in status.stdout and "no open alerts" in status.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_json_logs_health_over_http_and_a_rules_reload_on_sighup(
        tmp_path: Path, peers: tuple[FakeReddit, FeedServer]) -> None:
    """What an operator sees: one JSON object per log line, /healthz and /metrics over
    HTTP, and SIGHUP reloading the rules."""
    import httpx

    reddit, feeds = peers
    port = free_port()
    cfg = config(tmp_path, reddit, feeds, "ops",
                 run=f', log_format: json, health: "127.0.0.1:{port}"')
    cfg.write_text(cfg.read_text().replace('health: "127.0.0.1:0", ', ""))
    proc = start(cfg)
    try:
        polled(proc, tmp_path / "ops.db")
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
    finally:
        code, err, _ = stop(proc)
    assert code == 0, err
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert set(health.json()["sources"]) == {"reddit", "rss:a", "rss:b"}
    assert 'stormwatch_mentions_stored_total{source="rss:b"} 300.0' in metrics
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert all({"timestamp", "level", "logger", "message"} <= set(x) for x in lines)
    messages = [x["message"] for x in lines]
    assert any(m.startswith("rules reloaded from") for m in messages), messages
    assert CLIENT_SECRET not in err and CLIENT_SECRET not in metrics


def test_sigkill_in_the_middle_of_a_poll_then_restart_equals_an_undisturbed_run(
        tmp_path: Path, peers: tuple[FakeReddit, FeedServer]) -> None:
    reddit, feeds = peers
    undisturbed = start(config(tmp_path, reddit, feeds, "calm"))
    polled(undisturbed, tmp_path / "calm.db")
    code, err, took = stop(undisturbed, signal.SIGINT)  # Ctrl-C stops it as cleanly
    assert code == 0 and took < 10 and "SIGINT: stopping" in err

    feeds.stall.add("/b.xml")  # feed b sends half its body, then hangs
    cfg = config(tmp_path, reddit, feeds, "killed")
    victim = start(cfg)
    assert feeds.stalled.wait(30), "the daemon never polled feed b"
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=15)
    feeds.stall.clear()
    feeds.release.set()
    ids_mid, totals_mid = stored(tmp_path / "killed.db")
    assert "rss:b" not in totals_mid or totals_mid["rss:b"] == 0  # nothing half-stored

    again = start(cfg)
    polled(again, tmp_path / "killed.db")
    assert stop(again)[0] == 0
    calm_ids, calm_totals = stored(tmp_path / "calm.db")
    killed_ids, killed_totals = stored(tmp_path / "killed.db")
    assert killed_ids == calm_ids and len(calm_ids) == 3 + 5 + 300
    assert killed_totals == calm_totals  # nothing counted twice across the restart


def test_a_storm_of_faults_is_logged_retried_and_loses_nothing(
        tmp_path: Path, peers: tuple[FakeReddit, FeedServer]) -> None:
    """Reddit answers 500 until praw gives up, a feed sends an HTML page, another is 50 MB,
    Jetstream cuts its connection mid-frame: the daemon logs each, keeps going, retries
    with backoff, and ends with every mention stored once."""
    from tests.fakes.jetstream import FakeJetstream, Script, identity, post

    reddit, feeds = peers
    reddit.state.fail("/r/acme/comments", 500, times=3)       # praw's 3 tries: one poll
    feeds.faults["/a.xml"] = [(200, b"<html><body>Service unavailable</body></html>")]
    feeds.feeds["/big.xml"] = b"<rss><channel>" + b"x" * (50 << 20)
    script = Script(frames=[post(1, "acme is down for me"), identity(2),
                            post(3, "is acme down?"), post(4, "cats"),
                            post(5, "acme status page says all good, lol")],
                    endings=["cut", "open"])
    with FakeJetstream(script) as js:
        cfg = config(tmp_path, reddit, feeds, "storm")
        cfg.write_text(cfg.read_text()
                       + f'    big: {{url: "{feeds.url}/big.xml", interval: 1h}}\n'
                       + f"  bluesky:\n    jetstream: {js.url}\n")
        proc = start(cfg)
        db = tmp_path / "storm.db"

        def settled() -> bool:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            if not all_polled(db):
                return False
            _, totals = stored(db)
            return totals.get("rss:a") == 5 and totals.get("bluesky:jetstream") == 3
        until(settled, timeout=60)
        code, err, took = stop(proc)
    assert code == 0 and took < 10, err
    ids, totals = stored(db)
    assert totals == {"reddit": 3, "rss:a": 5, "rss:b": 300, "rss:big": 0,
                      "bluesky:jetstream": 3}
    assert len(ids) == sum(totals.values())  # nothing stored twice, nothing lost
    assert "Traceback" not in err
    for line in ("reddit: Reddit answered 500", "rss:a: http", "not a readable RSS",
                 "rss:big: http", "more than 10 MiB", "(check sources.rss.big.max_bytes)",
                 "bluesky:jetstream: the Jetstream connection", "dropped"):
        assert line in err, line
    s = Store.open(f"sqlite:///{db}")
    try:
        health = s.load_sources()
    finally:
        s.close()
    assert health["rss:big"].errors_in_a_row >= 1 and health["rss:big"].last_success is None
    assert health["reddit"].errors_in_a_row == 0 and health["reddit"].last_error
    assert len(script.cursors) >= 2  # it reconnected


def angry_thread(reddit: FakeReddit) -> None:
    """Thirty angry comments from thirty people in one Reddit thread, ten to twenty
    minutes ago (event time is already past them when the clock ticks)."""
    now = time.time()
    reddit.state.add(*(comment(f"x{i:02d}", now - 1200 + 20 * i,
                               "acme lost my refund again, this is terrible and I am furious",
                               link="t3_angry", author=f"angry{i}") for i in range(30)))


def test_a_thread_taking_off_reaches_slack_through_the_outbox(
        tmp_path: Path, peers: tuple[FakeReddit, FeedServer]) -> None:
    """Thirty angry comments in one thread on Reddit: the daemon fires the shipped rule
    and the alert reaches a (local) Slack webhook once, after Slack's first 500."""
    from tests.fakes.slack import FakeSlack

    reddit, _ = peers
    angry_thread(reddit)
    with FakeSlack() as slack:
        slack.failures.append((500, "rollup_error"))
        cfg = config(tmp_path, reddit, peers[1], "slack", rss=False, search=False,
                     extra=f"notify:\n  channels:\n    care:\n      type: slack\n"
                           f"      webhook_url: {slack.url}\n")
        proc = start(cfg)
        try:
            until(lambda: any("negative-thread-taking-off" in m["text"]
                              for m in slack.messages), timeout=90)
        finally:
            code, err, _ = stop(proc)
        fired = [m for m in slack.messages if "fired" in m["text"]]
    assert code == 0, err
    assert len(fired) == 1 and "rollup_error" in err  # retried after the 500, sent once
    blocks = fired[0]["attachments"][0]["blocks"]
    assert "Negative thread taking off" in blocks[0]["text"]["text"]
    assert any("acme lost my refund" in json.dumps(b) for b in blocks)


def test_killed_during_a_send_the_alert_arrives_once_after_the_restart(
        tmp_path: Path, peers: tuple[FakeReddit, FeedServer]) -> None:
    """The daemon posts the page to Slack's bot API and is killed (SIGKILL) before Slack's
    answer comes back. After the restart the delivery is in doubt; the daemon finds the
    message in the channel by its key (message metadata) and does not post it again."""
    from tests.fakes.slack import TOKEN, FakeSlackApi

    reddit, _ = peers
    angry_thread(reddit)
    with FakeSlackApi() as slack:
        slack.stall()
        cfg = config(tmp_path, reddit, peers[1], "crash", rss=False, search=False,
                     extra=f"notify:\n  channels:\n    care:\n      type: slack\n"
                           f"      bot_token: {TOKEN}\n      channel: C0CARE\n"
                           f"      api_url: {slack.api}\n")
        proc = start(cfg)
        until(lambda: len(slack.posted) == 1, timeout=90)
        proc.kill()  # Slack has the message; the daemon never hears that it arrived
        proc.communicate(timeout=15)
        slack.release()
        db = Store.open(f"sqlite:///{tmp_path / 'crash'}.db")
        try:
            [d] = db.list_deliveries()
            assert d["status"] == "sending"  # in doubt
        finally:
            db.close()

        proc = start(cfg)
        try:
            def settled() -> bool:
                s = Store.open(f"sqlite:///{tmp_path / 'crash'}.db")
                try:
                    return [x["status"] for x in s.list_deliveries()] == ["sent"]
                finally:
                    s.close()
            until(settled, timeout=60)
        finally:
            code, err, _ = stop(proc)
        posted = list(slack.posted)
    assert code == 0, err
    assert len(posted) == 1, [p["text"] for p in posted]  # once, not twice
    assert "found by its key" in json.dumps(Store.open(
        f"sqlite:///{tmp_path / 'crash'}.db").list_deliveries()[0]["tries"])
    assert posted[0]["metadata"]["event_payload"]["delivery"].endswith(":care")
