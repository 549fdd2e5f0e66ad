"""`stormwatch rules check|test` and the command line's help, through the real entry point."""

import subprocess
import sys
from collections.abc import Callable

from typer.testing import CliRunner

from monitor.cli import app

runner = CliRunner()


def test_rules_check_accepts_the_shipped_rules() -> None:
    r = runner.invoke(app, ["rules", "check"])
    assert r.exit_code == 0, r.output
    assert "4 rule(s) OK" in r.output


def test_rules_check_bad_file_exits_2_with_file_line_and_fix(
        write: Callable[[str, str], str]) -> None:
    path = write("bad.yaml", """
        rules:
          - name: r1
            scope: topic
            window: 1h
            when: {zscore: ">= 3"}
            severity: high
        """)
    r = runner.invoke(app, ["rules", "check", path])
    assert r.exit_code == 2
    assert f"{path}:6: rule 'r1', key 'severity'" in r.output
    assert "'info', 'warning' or 'critical'" in r.output
    assert "Traceback" not in r.output


def test_rules_test_runs_the_shipped_tests() -> None:
    r = runner.invoke(app, ["rules", "test"])
    assert r.exit_code == 0, r.output
    assert "8 passed, 0 failed" in r.output


def test_rules_test_fails_with_a_readable_diff(write: Callable[[str, str], str]) -> None:
    rules = write("r.yaml", """
        rules:
          - name: busy
            scope: thread
            window: 10m
            when: {mentions: ">= 5"}
        """)
    tests = write("r_test.yaml", f"""
        rule_files: [{rules}]
        tests:
          - name: five in a thread fire
            series:
              - {{thread: t1, start: 2024-05-01T10:00:00Z, every: 1m, values: "1x6", text: hi}}
            expect:
              - {{event: fired, rule: busy, key: "test:t1", severity: critical}}
        """)
    r = runner.invoke(app, ["rules", "test", tests])
    assert r.exit_code == 1
    assert "expected, did not happen: event=fired, rule=busy, severity=critical" in r.output
    assert "happened, not expected: fired busy warning thread key=test:t1" in r.output
    assert "0 passed, 1 failed" in r.output


def test_python_dash_m_monitor_is_the_same_command() -> None:
    p = subprocess.run([sys.executable, "-m", "monitor", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0
    for command in ("replay", "rules", "export"):
        assert command in p.stdout


def test_every_command_has_an_example() -> None:
    for args in (["replay", "--help"], ["rules", "check", "--help"],
                 ["rules", "test", "--help"], ["export", "--help"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0 and "Example" in r.output, args
