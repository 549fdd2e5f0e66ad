"""The config file: sources, topics, secrets from the environment, and precise errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from monitor.config import load_config
from monitor.errors import ConfigError

GOOD = """\
database: sqlite:///sw.db
topics:
  acme:
    terms: [acme]
sources:
  reddit:
    client_id: abc
    client_secret: ${SW_TEST_SECRET}
    user_agent: "stormwatch tests"
    subreddits: [r/acme, CustomerService]
    interval: 90s
    multireddits: [u/brandteam/m/watch, other_user/list2]
  bluesky:
    jetstream: null
    handle: brand.bsky.social
    app_password: ${SW_TEST_SECRET}
  rss:
    news:
      url: https://news.example/feed.xml/
      interval: 15m
      topic: acme
"""


def test_a_full_config_loads_with_secrets_from_the_environment(
        write: Callable[[str, str], str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SW_TEST_SECRET", "s3cret")
    c = load_config(write("sw.yaml", GOOD))
    assert c.sources.reddit is not None and c.sources.bluesky is not None
    assert c.sources.reddit.client_secret == "s3cret"
    assert c.sources.reddit.subreddits == ["acme", "CustomerService"]
    assert c.sources.reddit.interval == 90
    assert c.sources.reddit.multireddits == ["brandteam/watch", "other_user/list2"]
    assert c.sources.bluesky.jetstream is None and c.sources.bluesky.search_interval == 120
    assert c.sources.rss["news"].interval == 900
    assert c.sources.rss["news"].url == "https://news.example/feed.xml"


def test_a_missing_secret_names_the_variable_and_the_line(
        write: Callable[[str, str], str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SW_TEST_SECRET", raising=False)
    with pytest.raises(ConfigError, match="SW_TEST_SECRET is not set") as e:
        load_config(write("sw.yaml", GOOD))
    assert e.value.line == 8


@pytest.mark.parametrize("change,line,message", [
    (("interval: 90s", "interval: 5s"), 11, "at least 10s"),
    (("interval: 90s", "intervall: 90s"), 11, "unknown key 'intervall'"),
    (("topic: acme", "topic: acme-corp"), 21, "no topic 'acme-corp'"),
    (("subreddits: [r/acme, CustomerService]", "subreddits: [acme!]"), 10,
     "not a subreddit name"),
    (("    app_password: ${SW_TEST_SECRET}\n", ""), 13, "handle and app_password go together"),
    (("jetstream: null", "jetstream: https://x.example"), 14, "ws:// or wss://"),
    (("list2]", "list2, justaname]"), 12, "expected 'user/name'"),
    (("url: https://news.example/feed.xml/", "url: news.example/feed.xml"), 19,
     "http:// or https://"),
])
def test_bad_sources_say_file_line_and_what_to_do(
        write: Callable[[str, str], str], monkeypatch: pytest.MonkeyPatch,
        change: tuple[str, str], line: int, message: str) -> None:
    monkeypatch.setenv("SW_TEST_SECRET", "s3cret")
    path = write("sw.yaml", GOOD.replace(*change))
    with pytest.raises(ConfigError, match=message) as e:
        load_config(path)
    assert e.value.path == path and e.value.line == line, str(e.value)


@pytest.mark.parametrize("slack,message", [
    ("webhook_url: https://hooks.slack.com/services/T/B/X", None),
    ("bot_token: xoxb-1\n      channel: C024BE91L", None),
    ("bot_token: xoxb-1", "bot_token and channel go together"),
    ("api_url: https://slack.com/api", "set webhook_url, or bot_token and channel"),
    ("webhook_url: https://hooks.slack.com/x\n      bot_token: b\n      channel: c",
     "set webhook_url, or bot_token and channel"),
    ("webhook_url: ftp://hooks.slack.com/x", "http:// or https://"),
])
def test_slack_is_a_webhook_or_a_bot_token_and_channel(
        write: Callable[[str, str], str], slack: str, message: str | None) -> None:
    path = write("sw.yaml", f"notify:\n  channels:\n    care:\n      type: slack\n"
                            f"      {slack}\n")
    if message is None:
        assert load_config(path).notify.channels["care"].type == "slack"
        return
    with pytest.raises(ConfigError, match=message) as e:
        load_config(path)
    assert e.value.path == path and e.value.line is not None


def test_email_needs_addresses_that_cannot_inject_headers(
        write: Callable[[str, str], str]) -> None:
    good = ("notify:\n  channels:\n    pr:\n      type: email\n"
            "      host: smtp.example.com\n      sender: sw@acme.example\n"
            "      to: [care@acme.example]\n")
    assert load_config(write("ok.yaml", good)).notify.channels["pr"].type == "email"
    bad = good.replace("[care@acme.example]", '["care@acme.example\\r\\nBcc: x@evil"]')
    with pytest.raises(ConfigError, match="not an email address") as e:
        load_config(write("bad.yaml", bad))
    assert e.value.line == 7


ROUTED = """notify:
  channels:
    care: {type: slack, webhook_url: "https://hooks.slack.com/services/T/B/X"}
    lead: {type: webhook, url: "https://ops.example.com/hook"}
  time_intervals:
    office: [{weekdays: [mon, tue, wed, thu, fri], times: ["09:00-18:00"],
              timezone: Europe/Paris}]
  routes:
    - name: care
      to: [care]
      active: [office]
      escalate: {after: 30m, to: [lead]}
"""


@pytest.mark.parametrize("change,message,line", [
    (("to: [care]", "to: [carre]"), "notify.routes.0.to: no channel 'carre'", 10),
    (("to: [lead]", "to: [boss]"), "no channel 'boss'", 12),
    (("active: [office]", "active: [nights]"), "no time interval 'nights'", 11),
    (("09:00-18:00", "18:00-09:00"), "ends before it starts", 6),
    (("Europe/Paris", "Mars/Olympus"), "unknown time zone", 7),
    (("type: webhook", "type: pager"), "slack", 4),
    (("after: 30m", "after: soon"), "duration", 12),
])
def test_routes_name_what_exists(write: Callable[[str, str], str],
                                 change: tuple[str, str], message: str, line: int) -> None:
    assert load_config(write("ok.yaml", ROUTED)).notify.routes[0].escalate is not None
    with pytest.raises(ConfigError, match=message) as e:
        load_config(write("bad.yaml", ROUTED.replace(*change)))
    assert e.value.line == line, str(e.value)
