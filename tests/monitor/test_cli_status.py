"""``stormwatch status`` and ``stormwatch init``, through the command line."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from monitor.cli import app
from monitor.clock import FixedClock
from monitor.models import AlertEvent, SourceState
from monitor.notify.plan import Planner
from monitor.notify.routes import Route, Routing
from monitor.store import Store

runner = CliRunner()
NOW_ISH = 4_102_444_800.0  # 2100-01-01: far from any stale threshold


def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "sw.yaml"
    cfg.write_text(f"database: sqlite:///{tmp_path}/sw.db\n"
                   "topics:\n  acme: {terms: [acme]}\n"
                   "sources:\n  rss:\n"
                   "    news: {url: 'https://news.example/feed', interval: 10m}\n"
                   "    quiet: {url: 'https://quiet.example/feed', interval: 10m}\n")
    return cfg


def test_status_shows_health_and_open_alerts_as_inert_text(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    store = Store.open(f"sqlite:///{tmp_path}/sw.db")
    ok = SourceState(name="rss:news")
    ok.succeeded(at=NOW_ISH - 60, stored=4, newest=NOW_ISH - 90)
    bad = SourceState(name="rss:quiet")
    bad.failed(at=NOW_ISH - 30, message="https://quiet.example/feed answered 503 "
               "\x1b[31m[bold]boom[/bold]")
    hostile_key = "reddit:t3_\x1b]0;pwned\x07[red]x[/red]"
    with store.transaction() as conn:
        store.save_source(conn, ok)
        store.save_source(conn, bad)
        planner = Planner(Routing([Route("all", ("slack",))]), store, FixedClock(NOW_ISH - 100))
        planner.record(conn, [AlertEvent(
            event="fired", rule="negative-thread-taking-off", severity="warning",
            scope="thread", key=hostile_key, topic="acme", at=NOW_ISH - 120,
            signals={"mentions": 30}, summary="Negative thread \u202etaking off")])
    [d] = store.list_deliveries()
    store.record_attempt(d["id"], NOW_ISH - 90, "failed", "Slack answered 404 no_service",
                         status="failed")
    store.close()
    r = runner.invoke(app, ["status", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "rss:news" in out and "ok" in out and "rss:quiet" in out and "failing" in out
    assert "negative-thread-taking-off" in out and "open alerts" in out
    assert "deliveries: 0 sent, 0 pending, 1 failed (last failure: slack: Slack answered 404" \
        in out
    assert "\x1b" not in out and "\u202e" not in out  # escapes shown, never obeyed
    assert "\\x1b" in out and "[red]x[/red]" in out  # markup printed as text


def test_a_source_without_success_for_three_intervals_is_stale(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    store = Store.open(f"sqlite:///{tmp_path}/sw.db")
    st = SourceState(name="rss:news")
    st.succeeded(at=1_000_000.0, stored=1, newest=999_000.0)  # long ago
    with store.transaction() as conn:
        store.save_source(conn, st)
    store.close()
    r = runner.invoke(app, ["status", "--config", str(cfg)])
    assert r.exit_code == 0 and "stale" in r.stdout and "waiting" in r.stdout


def test_init_writes_a_config_that_loads_and_refuses_to_overwrite(
        tmp_path: Path, monkeypatch: object) -> None:
    import pytest

    from monitor.config import load_config

    mp = pytest.MonkeyPatch()
    for var in ("REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET", "BSKY_HANDLE",
                "BSKY_APP_PASSWORD", "SLACK_WEBHOOK_URL", "SMTP_PASSWORD"):
        mp.setenv(var, "https://hooks.slack.com/services/T/B/X" if "URL" in var else "x")
    try:
        path = tmp_path / "stormwatch.yaml"
        r = runner.invoke(app, ["init", str(path)])
        assert r.exit_code == 0 and path.exists()
        c = load_config(str(path))
        assert c.sources.reddit is not None and set(c.sources.rss) == {
            "acme-alerts", "acme-status"}
        assert set(c.notify.channels) == {"care", "pr-lead"} and len(c.notify.routes) == 2
        again = runner.invoke(app, ["init", str(path)])
        assert again.exit_code == 2 and "exists already" in again.output
        assert runner.invoke(app, ["init", str(path), "--force"]).exit_code == 0
    finally:
        mp.undo()


def test_status_lists_the_instances_and_what_each_holds(tmp_path: Path) -> None:
    from monitor.clock import SystemClock
    from monitor.leases import Leases

    cfg = config(tmp_path)
    store = Store.open(f"sqlite:///{tmp_path}/sw.db")
    names = ["source:rss:news", "source:rss:quiet", "topic:acme"]
    clock = SystemClock()
    a = Leases(store, names, holder="web-1", clock=clock)
    b = Leases(store, names, holder="web-2", clock=clock)
    a.keep()
    b.keep()
    a.keep()   # web-1 sees web-2 and leaves it its share
    b.keep()
    store.close()
    r = runner.invoke(app, ["status", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line for line in r.stdout.splitlines()
            if line.strip().startswith("web-")}
    assert set(rows) == {"web-1", "web-2"}
    held = [n for n in names if n in rows["web-1"]], [n for n in names if n in rows["web-2"]]
    assert sorted(held[0] + held[1]) == names and held[0] and held[1]
