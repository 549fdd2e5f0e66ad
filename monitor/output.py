"""What the command line prints: events on standard output, everything else on standard error.

Text from social media (thread ids, topic names from dumps, summaries that quote them)
may hold terminal escape sequences; ``inert`` makes it printable before it reaches a
terminal, and rich markup is never interpreted in it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import statistics
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from monitor.inputs import NoProgress
from monitor.models import AlertEvent, SourceState, iso

if TYPE_CHECKING:
    from monitor.app import ReplayResult
    from monitor.ruletest import RuleTestResult

err = Console(stderr=True, highlight=False)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def inert(text: str) -> str:
    """Control characters and bidi overrides shown as escapes, never obeyed."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", text)


class InertFormatter(logging.Formatter):
    """Log lines carry text from strangers (feed titles, thread ids, error bodies):
    control characters and bidi overrides are shown as escapes, never obeyed."""

    def format(self, record: logging.LogRecord) -> str:
        return inert(super().format(record))


def say(message: str) -> None:
    err.print(inert(message), markup=False, soft_wrap=True)


def error(message: str) -> None:
    """``error: path:line: ...`` on one line, never wrapped (editors jump to it)."""
    err.print("[bold red]error:[/] ", end="")
    err.print(inert(message), markup=False, soft_wrap=True)


def warning(message: str) -> None:
    err.print("[yellow]warning:[/] ", end="")
    err.print(inert(message), markup=False, soft_wrap=True)


def event_json(ev: AlertEvent) -> None:
    sys.stdout.buffer.write(orjson.dumps(ev.contract_json()) + b"\n")
    sys.stdout.buffer.flush()


def event_line(ev: AlertEvent) -> None:
    label = {"fired": "FIRED", "escalated": "ESCALATED", "resolved": "resolved"}[ev.event]
    where = f"{ev.scope} {ev.key}" + (f" ({ev.topic})" if ev.scope == "thread" else "")
    line = f"{iso(ev.at)}  {label:<9} {ev.severity:<8} {ev.rule}  {where}"
    if ev.summary and ev.event != "resolved":
        line += f"\n    {ev.summary}"
    for post in ev.top_posts[:3] if ev.event != "resolved" else ():
        text = " ".join(str(post.get("text", "")).split())
        text = text if len(text) <= 140 else text[:139] + "…"
        line += f"\n    - [{post.get('why')}] {post.get('author') or '?'}: {text}"
        if post.get("url"):
            line += f"\n      {post['url']}"
    sys.stdout.write(inert(line) + "\n")
    sys.stdout.flush()


class _Bar:
    """A rich progress bar on standard error, by bytes of the current file."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 DownloadColumn(), TimeElapsedColumn(), console=err,
                                 transient=True)
        self.task: Any = None

    def start(self, path: str, total: int | None) -> None:
        if self.task is None:
            self.progress.start()
        else:
            self.progress.remove_task(self.task)
        name = "stdin" if path == "-" else path.rsplit("/", 1)[-1]
        self.task = self.progress.add_task(inert(name)[:40], total=total)

    def update(self, done: int) -> None:
        self.progress.update(self.task, completed=done)

    def stop(self) -> None:
        if self.task is not None:
            self.progress.stop()


def progress_bar() -> _Bar | NoProgress:
    return _Bar() if err.is_terminal else NoProgress()


def null_progress() -> NoProgress:
    return NoProgress()


def replay_summary(r: ReplayResult) -> None:
    rep = r.report
    c = r.counts
    err.print(
        f"read {r.mentions_read:,} mention(s) from {rep.lines:,} line(s) in {r.elapsed:.1f}s "
        f"({r.rate:,.0f}/s): {c['in_scope']:,} in scope, {c['out_of_scope']:,} out of scope, "
        f"{c['duplicates']:,} duplicate(s), {r.late:,} late", markup=False, soft_wrap=True)
    if rep.ignored:
        err.print(f"ignored {rep.ignored:,} line(s) that are not posts (deletes, likes, ...)",
                  markup=False)
    if rep.skipped or rep.warnings:
        err.print(f"[yellow]warning:[/] skipped {rep.skipped:,} bad line(s), "
                  f"{rep.warnings:,} mention(s) kept with a dropped field:")
        for reason, n in rep.by_reason.most_common():
            err.print(f"  {n:>8,}  {inert(reason)}", markup=False)
        for path, line, message in rep.examples[:10]:
            err.print(f"  {inert(path)}:{line}: {inert(message)}", markup=False, soft_wrap=True)
    if not r.events:
        err.print("no alerts")
        return
    table = Table(title="alerts", title_justify="left", show_edge=False)
    for col in ("rule", "severity", "fired", "escalated", "resolved"):
        table.add_column(col, justify="right" if col in ("fired", "escalated", "resolved")
                         else "left")
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for (rule, sev, kind), n in r.events.items():
        rows.setdefault((rule, sev), {})[kind] = n
    for (rule, sev), kinds in sorted(rows.items()):
        table.add_row(rule, sev, *(str(kinds.get(k, 0)) for k in ("fired", "escalated",
                                                                  "resolved")))
    err.print(table)


def rule_test_report(results: list[RuleTestResult]) -> None:
    failed = [r for r in results if not r.passed]
    for r in results:
        mark = "[green]ok[/]  " if r.passed else "[red]FAIL[/]"
        err.print(f"{mark} ", end="")
        err.print(f"{inert(r.path)}: {inert(r.name)}", markup=False)
        for line in r.problems:
            err.print(f"      {inert(line)}", markup=False)
    err.print(f"{len(results) - len(failed)} passed, {len(failed)} failed", markup=False)


@contextlib.contextmanager
def open_out(path: str) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with open(path, "wb") as f:
        yield f


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    secs = max(0.0, now - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs / size:.0f}{unit} ago"
    return f"{secs:.0f}s ago"


def status_report(states: dict[str, SourceState], intervals: dict[str, float],
                  alerts: list[dict[str, Any]], now: float,
                  outbox: dict[str, Any] | None = None,
                  instances: list[dict[str, Any]] | None = None) -> None:
    """``stormwatch status``: sources, instances, deliveries and open alerts, on
    standard output."""
    out = _table_console()
    table = Table(title="sources", title_justify="left", show_edge=False)
    for col in ("source", "state", "last success", "last error", "lag", "today", "total"):
        table.add_column(col, justify="right" if col in ("lag", "today", "total") else "left")
    names = sorted(set(states) | set(intervals))
    for name in names:
        st = states.get(name) or SourceState(name=name)
        interval = intervals.get(name)
        if name not in intervals:
            state = Text("not configured", style="dim")
        elif st.last_success is None:
            state = Text("failing" if st.last_error else "waiting",
                         style="red" if st.last_error else "yellow")
        elif interval and now - st.last_success > 3 * interval:
            state = Text("stale", style="red")
        elif st.errors_in_a_row:
            state = Text(f"retrying ({st.errors_in_a_row})", style="yellow")
        else:
            state = Text("ok", style="green")
        error = "" if st.last_error is None else (
            f"{_ago(st.last_error_at, now)}: {st.last_error}")
        table.add_row(Text(inert(name)), state, _ago(st.last_success, now),
                      Text(inert(error[:160])),
                      "" if st.lag is None else f"{st.lag:.0f}s",
                      f"{st.mentions_today:,}" if st.day == iso(now)[:10] else "0",
                      f"{st.mentions_total:,}")
    out.print(table if names else Text("no sources yet"))
    if instances:
        table = Table(title="instances", title_justify="left", show_edge=False)
        for col in ("instance", "seen", "since", "holds"):
            table.add_column(col)
        for i in instances:
            held = i["leases"]
            table.add_row(Text(inert(i["name"])), _ago(i["seen_at"], now),
                          _ago(i["started_at"], now),
                          Text(inert(", ".join(held)) if held else "nothing (standby)"))
        out.print(table)
    if outbox and any(outbox[k] for k in ("pending", "sent", "failed")):
        line = (f"deliveries: {outbox['sent']:,} sent, {outbox['pending']:,} pending, "
                f"{outbox['failed']:,} failed")
        if outbox["last_failure"]:
            line += f" (last failure: {outbox['last_failure']})"
        out.print(Text(inert(line[:300]), style="red" if outbox["failed"] else ""))
    if not alerts:
        out.print("no open alerts")
        return
    table = Table(title="open alerts", title_justify="left", show_edge=False)
    for col in ("since", "severity", "rule", "scope", "summary"):
        table.add_column(col)
    for a in alerts:
        table.add_row(iso(a["opened_at"]), a["severity"], Text(inert(a["rule"])),
                      Text(inert(f"{a['scope']} {a['key']}")),
                      Text(inert(a.get("summary") or "")))
    out.print(table)


def _table_console() -> Console:
    """Standard output for tables; piped or redirected: wide rows, not folded ones."""
    out = Console(highlight=False, soft_wrap=False)
    return out if out.is_terminal else Console(highlight=False, soft_wrap=False, width=200)


def json_lines(rows: list[dict[str, Any]]) -> None:
    """One JSON object per row on standard output (data from strangers stays data)."""
    for r in rows:
        sys.stdout.buffer.write(orjson.dumps(r, default=str, option=orjson.OPT_NON_STR_KEYS)
                                + b"\n")
    sys.stdout.buffer.flush()


def alerts_table(rows: list[dict[str, Any]]) -> None:
    """``stormwatch alerts list``."""
    out = _table_console()
    if not rows:
        out.print("no alerts")
        return
    table = Table(show_edge=False)
    for col in ("id", "incident", "opened", "state", "severity", "rule", "scope",
                "acknowledged", "summary"):
        table.add_column(col, justify="right" if col in ("id", "incident") else "left")
    for a in rows:
        acked = f"{a['acked_by']} {iso(a['acked_at'])}" if a.get("acked_by") else ""
        state = a["state"] + (f" by {a['resolved_by']}" if a.get("resolved_by") else "")
        table.add_row(str(a["id"]), "" if a["incident_id"] is None else f"#{a['incident_id']}",
                      iso(a["opened_at"]), Text(inert(state)), a["severity"],
                      Text(inert(a["rule"])), Text(inert(f"{a['scope']} {a['key']}")),
                      Text(inert(acked)), Text(inert((a.get("summary") or "")[:160])))
    out.print(table)


def alert_record(r: dict[str, Any]) -> None:
    """``stormwatch alerts show``: the alert, its events, its incident, its messages."""
    out = _table_console()

    def line(text: str, style: str = "") -> None:
        out.print(Text(inert(text), style=style))

    line(f"alert {r['id']}: {r['rule']} on {r['scope']} {r['key']} ({r['topic']})", "bold")
    line(f"  {r['state']}, {r['severity']}, opened {iso(r['opened_at'])}"
         + (f", resolved {iso(r['resolved_at'])}" if r.get("resolved_at") else "")
         + (f" by {r['resolved_by']}" if r.get("resolved_by") else ""))
    inc = r.get("incident")
    if inc:
        ack = (f", acknowledged by {inc['acked_by']} at {iso(inc['acked_at'])}"
               + (f": {inc['ack_note']}" if inc.get("ack_note") else "")
               if inc.get("acked_by") else ", not acknowledged")
        line(f"  incident #{inc['id']} ({inc['group_key']}): {inc['state']}, "
             f"{inc['severity']}{ack}")
        for a in r.get("incident_alerts", []):
            if a["id"] != r["id"]:
                line(f"    also alert {a['id']}: {a['rule']} on {a['scope']} {a['key']}, "
                     f"{a['state']}")
    line("events:", "bold")
    for e in r["events"]:
        s = e["signals"]
        nums = ", ".join(f"{k} {s[k]}" for k in ("mentions", "expected", "negative_share",
                                                 "unique_authors") if k in s)
        line(f"  {iso(e['at'])}  {e['event']:<9} {e['severity']:<8} {e['summary']}")
        if nums:
            line(f"      {nums}", "dim")
    line("messages:", "bold")
    if not r["messages"]:
        line("  none (no channel was told: not routed, silenced, or folded)")
    for m in r["messages"]:
        line(f"  {m['channel']}: {m['kind']} ({m['event']}, {m['severity']}) {m['status']}"
             + (f" at {iso(m['sent_at'])}" if m.get("sent_at") else ""))
        for t in m["tries"]:
            line(f"      {iso(t['at'])}  {t['outcome']}: {t['detail']}", "dim")


def silences_table(rows: list[dict[str, Any]], now: float) -> None:
    """``stormwatch silence list``."""
    out = _table_console()
    if not rows:
        out.print("no silences")
        return
    table = Table(show_edge=False)
    for col in ("id", "matches", "until", "by", "comment"):
        table.add_column(col)
    for s in rows:
        matches = ", ".join(f"{k}={s[k]}" for k in ("rule", "topic", "key", "scope")
                            if s[k] is not None)
        if s["expired_at"] is not None:
            until = f"expired {iso(s['expired_at'])}"
        else:
            until = iso(s["ends_at"]) + (" (ended)" if s["ends_at"] <= now else "")
        table.add_row(str(s["id"]), Text(inert(matches)), until, Text(inert(s["created_by"])),
                      Text(inert(s["comment"])))
    out.print(table)


def backtest_report(results: list[Any], changes: dict[str, Any] | None, mentions: int,
                    days: float) -> None:
    """``stormwatch backtest``: each labelled incident per rules file, noise, per rule,
    and (with --against) what changed."""
    out = _table_console()
    out.print(Text(inert(f"{mentions:,} mention(s) over {days:.1f} day(s)")))
    table = Table(title="incidents", title_justify="left", show_edge=False)
    table.add_column("incident")
    for r in results:
        table.add_column(Text(inert(r.name)))
    for name in results[0].overall.caught:
        cells = []
        for r in results:
            minutes = r.overall.caught[name]
            cells.append(Text("MISSED", style="bold red") if minutes is None else Text(
                f"caught after {minutes:.0f} min, {r.messages.get(name, 0)} message(s)"))
        table.add_row(Text(inert(name)), *cells)
    table.add_row("pages outside incidents", *(
        f"{len(r.overall.noise)} ({r.overall.noise_per_week:.1f}/week)" for r in results))
    for non in sorted({n for r in results for n in r.overall.on_non_incidents}):
        table.add_row(Text(inert(f"  of which on {non}")), *(
            str(r.overall.on_non_incidents.get(non, 0)) for r in results))
    out.print(table)
    for r in results:
        rules = Table(title=f"per rule: {inert(r.name)}", title_justify="left",
                      show_edge=False)
        for col in ("rule", "caught", "first page, median", "outside/week"):
            rules.add_column(col, justify="left" if col == "rule" else "right")
        for rule, v in r.per_rule.items():
            got = [m for m in v.caught.values() if m is not None]
            median = f"{statistics.median(got):.0f} min" if got else "-"
            rules.add_row(Text(inert(rule)), f"{len(got)}/{len(v.caught)}", median,
                          f"{v.noise_per_week:.1f}")
        out.print(rules)
    if changes is not None:
        out.print(Text(f"changes, {inert(results[0].name)} -> {inert(results[1].name)}",
                       style="bold"))
        out.print(Text(inert("  newly missed: " + (", ".join(changes["newly_missed"]) or "none")),
                       style="bold red" if changes["newly_missed"] else ""))
        out.print(Text(inert("  newly caught: " + (", ".join(changes["newly_caught"]) or "none"))))
        noise = changes["new_noise"]
        out.print(Text(f"  new noise: {len(noise)} page(s)"
                       + (" (pages outside incidents per week "
                          f"{changes['noise_per_week'][0]} -> {changes['noise_per_week'][1]})")))
        for n in noise[:10]:
            out.print(Text(inert(f"    {n['at']}  {n['rule']} {n['severity']} {n['scope']} "
                                 f"{n['key']}")))


def explanations(found: list[Any]) -> None:
    """``stormwatch rules explain``: each scope's verdict, condition by condition."""
    out = _table_console()
    if not found:
        out.print("no scope of this rule had any mention by then")
        return
    first = found[0]
    out.print(Text(inert(f"rule {first.rule.name} ({first.rule.scope}, window "
                         f"{first.rule.window // 60} min) at {iso(first.at)} (mentions up "
                         f"to then; the engine's minute {iso(first.minute)})"), style="bold"))
    for ex in found:
        verdict = "holds" if ex.holds else "does not hold"
        where = f"{ex.scope} {ex.key}" + (f" ({ex.topic})" if ex.scope == "thread" else "")
        out.print(Text(inert(f"{where}: {verdict}; alert {ex.state}"),
                       style="bold green" if ex.holds else "bold"))
        table = Table(show_edge=False, box=None, padding=(0, 2))
        for col in ("condition", "value", "verdict"):
            table.add_column(col, justify="right" if col == "value" else "left")
        for c in ex.checks:
            table.add_row(str(c.condition), _value(c.value),
                          Text("yes", style="green") if c.holds else Text("no", style="red"))
        for sev, checks in ex.steps:
            for c in checks:
                table.add_row(f"escalate to {sev}: {c.condition}", _value(c.value),
                              Text("yes", style="green") if c.holds else Text("no"))
        out.print(table)


def _value(v: Any) -> str:
    if v is None:
        return "n/a (warming up)"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)
