"""`stormwatch rules check|test` and the command line's help, through the real entry point."""

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from monitor.cli import app

runner = CliRunner()


def test_rules_check_accepts_the_shipped_rules() -> None:
    r = runner.invoke(app, ["rules", "check"])
    assert r.exit_code == 0, r.output
    assert "5 rule(s) OK" in r.output


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


def busy_test(write: Callable[[str, str], str], expect: str) -> str:
    """A rule test file: six mentions in a thread under a rule that fires at five (a
    warning), with the expectations given."""
    rules = write("r.yaml", """
        rules:
          - name: busy
            scope: thread
            window: 10m
            when: {mentions: ">= 5"}
        """)
    return write("r_test.yaml", f"""
        rule_files: [{rules}]
        tests:
          - name: five in a thread fire
            series:
              - {{thread: t1, start: 2024-05-01T10:00:00Z, every: 1m, values: "1x6", text: hi}}
            expect: {expect}
        """)


def test_rules_test_fails_with_a_readable_diff(write: Callable[[str, str], str]) -> None:
    tests = busy_test(write, '[{event: fired, rule: busy, key: "test:t1", severity: critical}]')
    r = runner.invoke(app, ["rules", "test", tests])
    assert r.exit_code == 1
    lines = [line.strip() for line in r.output.splitlines()]
    at = lines.index("expected (-) and what happened (+), in the order expected:")
    assert lines[at + 1] == "- fired busy critical key=test:t1"
    assert lines[at + 2].startswith("+ fired busy warning thread key=test:t1 at=2024-05-01T10:04")
    assert "0 passed, 1 failed" in r.output


def test_rules_test_run_picks_tests_by_name_and_junit_records_them(
        tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    from monitor.ruletest import default_tests_path

    shipped = default_tests_path()
    junit = tmp_path / "rules.xml"
    r = runner.invoke(app, ["rules", "test", shipped, "--run", "viral|outage",
                            "--junit", str(junit)])
    assert r.exit_code == 0, r.output
    ran = [line for line in r.output.splitlines() if line.startswith("ok")]
    assert ran and all(("viral" in line.lower() or "outage" in line.lower()) for line in ran)
    root = ET.parse(junit).getroot()
    cases = root.findall("./testsuite/testcase")
    assert root.get("tests") == str(len(cases)) == str(len(ran)) and root.get("failures") == "0"
    r = runner.invoke(app, ["rules", "test", shipped, "--run", "no such test"])
    assert r.exit_code == 2 and "no test has a matching name" in r.output
    r = runner.invoke(app, ["rules", "test", shipped, "--run", "("])
    assert r.exit_code == 2 and "not a regular expression" in r.output


def test_junit_carries_the_diff_of_a_failing_test(write: Callable[[str, str], str],
                                                  tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    tests = busy_test(write, "[]")
    junit = tmp_path / "out.xml"
    r = runner.invoke(app, ["rules", "test", tests, "--junit", str(junit)])
    assert r.exit_code == 1
    [case] = ET.parse(junit).getroot().findall("./testsuite/testcase")
    failure = case.find("failure")
    assert case.get("name") == "five in a thread fire" and failure is not None
    assert failure.get("message") == "1 difference(s)"
    assert "+ fired busy warning thread key=test:t1" in (failure.text or "")


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
