from collections.abc import Callable

import pytest

from monitor.config import default_rules_path
from monitor.errors import RulesError
from monitor.rules import load_rules, parse_duration, render

GOOD = """
rules:
  - name: r1
    scope: thread
    window: 30m
    when: {mentions: ">= 10"}
"""


def error_of(write: Callable[[str, str], str], text: str) -> RulesError:
    path = write("rules.yaml", text)
    with pytest.raises(RulesError) as info:
        load_rules([path])
    return info.value


def test_shipped_rules_load() -> None:
    rs = load_rules([default_rules_path()])
    names = {r.name for r in rs.rules}
    assert {"negative-thread-taking-off", "topic-negative-spike", "volume-spike",
            "crisis-keywords"} <= names


def test_unknown_key_names_line_rule_and_suggests(write: Callable[[str, str], str]) -> None:
    err = error_of(write, GOOD.replace("window: 30m", "windw: 30m"))
    assert err.line == 4
    assert "rule 'r1'" in err.message and "unknown key 'windw'" in err.message
    assert err.hint is not None and "did you mean 'window'" in err.hint
    assert str(err).startswith(f"{err.path}:4: ")


def test_bad_severity_lists_choices(write: Callable[[str, str], str]) -> None:
    err = error_of(write, GOOD + "    severity: urgent\n")
    assert err.line == 6
    assert "'info', 'warning' or 'critical'" in err.message and "'urgent'" in err.message


def test_bad_duration_and_window(write: Callable[[str, str], str]) -> None:
    err = error_of(write, GOOD.replace("30m", "30 minutes"))
    assert err.line == 4 and "duration like" in err.message
    err = error_of(write, GOOD.replace("30m", "90s"))
    assert "whole minutes" in err.message


def test_unknown_signal_and_wrong_scope(write: Callable[[str, str], str]) -> None:
    err = error_of(write, GOOD.replace("mentions:", "mentionz:"))
    assert err.line == 5 and "unknown signal 'mentionz'" in err.message
    assert "unique_authors" in err.message  # the valid choices are listed
    err = error_of(write, GOOD.replace("mentions:", "zscore:"))
    assert "'zscore' does not exist for scope 'thread'" in err.message


def test_bad_comparison(write: Callable[[str, str], str]) -> None:
    err = error_of(write, GOOD.replace('">= 10"', '"lots"'))
    assert "expected a comparison like '>= 10'" in err.message and err.line == 5
    assert "key 'when.mentions'" in err.message and "found 'lots'" in err.message


def test_severity_may_not_go_down(write: Callable[[str, str], str]) -> None:
    err = error_of(write, GOOD + """    severity: critical
    escalate:
      - when: {mentions: ">= 50"}
        severity: info
""")
    assert "lowers the severity" in err.message


def test_template_fields_are_checked(write: Callable[[str, str], str]) -> None:
    err = error_of(write, GOOD + "    annotations: {summary: '{secret_key}'}\n")
    assert "unknown template field '{secret_key}'" in err.message


def test_duplicate_keys_names_and_bad_yaml(write: Callable[[str, str], str]) -> None:
    err = error_of(write, GOOD + "    window: 1h\n")
    assert "duplicate key 'window'" in err.message and err.line == 6
    err = error_of(write, GOOD + GOOD.replace("rules:\n", ""))
    assert "defined twice" in err.message
    err = error_of(write, "rules:\n  - name: [unclosed\n")
    assert "not valid YAML" in err.message and err.line is not None
    err = error_of(write, "just: a mapping\n")
    assert "'rules:'" in err.message


def test_render_only_substitutes_values() -> None:
    assert render("{mentions} / {ratio:.1f}x", {"mentions": 3, "ratio": 2.25}) == "3 / 2.2x"
    assert render("{expected:.0f}", {}) == "n/a"
    assert render("{mentions.__class__}", {"mentions": 3}) == "{mentions.__class__}"


def test_durations() -> None:
    assert [parse_duration(x) for x in ("45s", "30m", "2h", "1d", "1w", 90)] == [
        45, 1800, 7200, 86400, 604800, 90]
    with pytest.raises(ValueError):
        parse_duration("soon")
