"""The ``stormwatch`` command line. Thin: parse, call ``monitor.app``, report.

Exit status: 0 success (warnings allowed), 1 runtime failure, 2 bad usage, config or rules.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Annotated, Any

import orjson
import typer

from monitor import output
from monitor.cli_alerts import alerts_app, silence_app
from monitor.cli_common import ConfigOpt, DbOpt, friendly
from monitor.errors import UsageError

app = typer.Typer(
    name="stormwatch", no_args_is_help=True, add_completion=False,
    help="Early-warning monitor for brand crises on social media.\n\n"
         "Replay a dump through the default rules:\n\n"
         "    stormwatch replay samples/acme-week.jsonl.gz --config samples/acme.yaml")
rules_app = typer.Typer(no_args_is_help=True, help="Validate and test rules files.")
app.add_typer(rules_app, name="rules")
app.add_typer(alerts_app, name="alerts")
app.add_typer(silence_app, name="silence")

@app.command()
@friendly
def replay(
    dumps: Annotated[list[str], typer.Argument(
        help="Dump files (mention JSONL, Pushshift, Jetstream NDJSON or CSV; plain, .gz "
             "or .zst), or - for standard input.", show_default=False)],
    config: ConfigOpt = None,
    rules: Annotated[list[str] | None, typer.Option(
        "--rules", "-r", help="Rules file or directory (repeatable). Default: the config's "
        "rules, else the shipped rules/default.yaml.", show_default=False)] = None,
    match: Annotated[list[str] | None, typer.Option(
        "--match", "-m", help="Ad-hoc topic term (repeatable); replaces the config's topics.",
        show_default=False)] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="One JSON object per alert event on standard output.")] = False,
    notify: Annotated[bool, typer.Option(
        "--notify", help="Deliver alerts through the configured channels and routes, as "
        "live (to try a route or a message on a past incident).")] = False,
    chart: Annotated[str | None, typer.Option(
        "--chart", help="Also write each topic's chart over the dump: CHART.png and "
        "CHART.html (volume against the baseline, negative share, alerts).",
        show_default=False)] = None,
    db: DbOpt = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", "-f", help="Force the dump format: jsonl, pushshift, jetstream, csv.",
        show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run historical dumps through the engine in event time and report the alerts.

    Without --db it works in a fresh temporary database; with --db the mentions, alerts
    and detector state are kept (and a later replay or `run` continues from them).

    Example:

        stormwatch replay samples/acme-week.jsonl.gz --config samples/acme.yaml

        zstd -dc RC_2024-01.zst | stormwatch replay - --match acme --json > alerts.jsonl
    """
    from monitor.inputs import DumpInputs
    from monitor.setup import setup

    s = setup(config, rules or [], match or [])
    if notify and not s.config.notify.channels:
        raise UsageError("--notify: no delivery channels are configured", path=config,
                         hint="add notify.channels to the config, or replay without "
                              "--notify to report alerts on standard output")
    on_event = output.event_json if json_out else output.event_line
    progress = output.null_progress() if quiet else output.progress_bar()
    # open the input first: a scan reads in its helper while the engine is imported
    with DumpInputs(dumps, fmt=fmt, prefilter=s.matcher.prefilter_terms(),
                    progress=progress) as inputs:
        from monitor import app as core

        result = core.replay(s, inputs, db_url=db, on_event=on_event, notify=notify,
                             chart=chart)
    output.replay_summary(result)
    if result.charts:
        output.say("wrote " + ", ".join(result.charts))
    if result.outbox is not None:
        ob = result.outbox
        output.say(f"messages: {ob['sent']:,} sent, {ob['pending']:,} pending, "
                   f"{ob['failed']:,} failed"
                   + (f" (last failure: {ob['last_failure']})" if ob["last_failure"] else ""))
        if ob["pending"]:
            output.warning("some messages are still pending: " + (
                "they stay in the database for `stormwatch run` to send" if db else
                "they are lost with the temporary database (use --db to keep them)"))
    for problem in result.report.broken:
        output.warning(f"could not read to the end (the lines before were used): {problem}")
    if result.mentions_read == 0:
        output.error("no mention could be read from the input")
        raise typer.Exit(1)


@app.command()
@friendly
def backtest(
    dumps: Annotated[list[str], typer.Argument(
        help="Dump files (as replay reads them), or - for standard input.",
        show_default=False)],
    labels: Annotated[str, typer.Option(
        "--labels", "-l", help="Labels file: the incidents (and non-incidents) to judge by.",
        show_default=False)],
    config: ConfigOpt = None,
    rules: Annotated[list[str] | None, typer.Option(
        "--rules", "-r", help="The rules to judge (repeatable). Default: the config's, else "
        "the shipped ones.", show_default=False)] = None,
    against: Annotated[list[str] | None, typer.Option(
        "--against", "-a", help="Candidate rules (repeatable): judged in the same pass, side "
        "by side, with what changed.", show_default=False)] = None,
    match: Annotated[list[str] | None, typer.Option(
        "--match", "-m", help="Ad-hoc topic term (repeatable).", show_default=False)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on standard "
                                           "output.")] = False,
    fmt: Annotated[str | None, typer.Option("--format", "-f", help="Force the dump format.",
                                            show_default=False)] = None,
    chart: Annotated[str | None, typer.Option(
        "--chart", help="Also write each topic's chart of the dump with the alerts: CHART.png "
        "and .html (the --against rules: CHART-2.*).", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Judge rules on a dump against labelled incidents: caught or missed, minutes to the
    first page, pages outside incidents per week, messages per incident; per rule and
    overall. With --against, the candidate rules side by side and what changed.

    Exit status 1 when an incident is missed (with --against: when the candidate misses
    an incident the rules caught), so a CI job can refuse a rules change.

    Example:

        stormwatch backtest samples/acme-week.jsonl.gz --config samples/acme.yaml \\
            --labels samples/acme-labels.yaml --against my-rules.yaml
    """
    from monitor.backtest import compare, load_labels, run_backtest
    from monitor.inputs import DumpInputs
    from monitor.rules import load_rules
    from monitor.setup import setup

    s = setup(config, rules or [], match or [])
    lab = load_labels(labels)
    rulesets = [(_rules_name(rules or list(s.config.rules_paths())), s.rules)]
    if against:
        cand = load_rules(against)
        rulesets.append((_rules_name(against), cand))
    progress = output.null_progress() if quiet or json_out else output.progress_bar()
    with DumpInputs(dumps, fmt=fmt, prefilter=s.matcher.prefilter_terms(),
                    progress=progress) as inputs:
        run = run_backtest(s, inputs, rulesets, lab, chart=chart)
    changes = compare(run.results[0], run.results[1]) if against else None
    days = 0.0
    if run.results[0].overall.weeks:
        days = run.results[0].overall.weeks * 7
    if json_out:
        sys.stdout.buffer.write(orjson.dumps({
            "mentions": run.replay.mentions_read, "days": round(days, 2),
            "results": [r.json() for r in run.results], "changes": changes}) + b"\n")
    else:
        output.backtest_report(run.results, changes, run.replay.mentions_read, days)
    for problem in run.replay.report.broken:
        output.warning(f"could not read to the end (the lines before were used): {problem}")
    if run.replay.charts:
        output.say("wrote " + ", ".join(run.replay.charts))
    lost = changes["newly_missed"] if changes is not None else run.results[0].overall.missed
    if lost:
        output.error(("the candidate rules miss " if changes is not None else "missed: ")
                     + ", ".join(lost))
        raise typer.Exit(1)


def _rules_name(paths: list[str]) -> str:
    return ", ".join(os.path.basename(p.rstrip("/")) or p for p in paths)


@rules_app.command("check")
@friendly
def rules_check(
    paths: Annotated[list[str] | None, typer.Argument(
        help="Rules files or directories. Default: the shipped rules/default.yaml.",
        show_default=False)] = None,
) -> None:
    """Validate rules files: exit 0 when all are valid, 2 with file:line and the fix.

    Example:

        stormwatch rules check rules/
    """
    from monitor.config import default_rules_path
    from monitor.rules import load_rules

    ruleset = load_rules(paths or [default_rules_path()])
    for path in ruleset.paths:
        names = [r.name for r in ruleset.rules if r.path == path]
        output.say(f"{path}: {len(names)} rule(s) OK ({', '.join(names)})")


@rules_app.command("test")
@friendly
def rules_test(
    paths: Annotated[list[str] | None, typer.Argument(
        help="Rule test files or directories holding them (default: rules/tests of the "
             "shipped rules).", show_default=False)] = None,
    run: Annotated[str | None, typer.Option(
        "--run", help="Only the tests whose name matches this regular expression.",
        show_default=False)] = None,
    junit: Annotated[str | None, typer.Option(
        "--junit", help="Also write the results as JUnit XML to this file (for CI).",
        show_default=False)] = None,
) -> None:
    """Run rule tests: input mentions (or series of them) and the alert events expected.
    A failing test shows expected (-) and what happened (+), line by line.

    Example:

        stormwatch rules test rules/tests/ --run viral --junit rule-tests.xml
    """
    from monitor.ruletest import default_tests_path, run_rule_tests, write_junit

    results = run_rule_tests(paths or [default_tests_path()], run)
    if not results:
        raise UsageError(f"--run {run}: no test has a matching name")
    if junit:
        try:
            write_junit(results, junit)
        except OSError as e:
            raise UsageError(f"--junit: cannot write {junit}: {e.strerror or e}") from None
    output.rule_test_report(results)
    if any(not r.passed for r in results):
        raise typer.Exit(1)


@rules_app.command("explain")
@friendly
def rules_explain(
    rule: Annotated[str, typer.Argument(help="The rule's name.", show_default=False)],
    dumps: Annotated[list[str], typer.Argument(help="Dump files (as replay reads them).",
                                               show_default=False)],
    at: Annotated[str, typer.Option("--at", help="The moment (ISO 8601 with a zone).",
                                    show_default=False)],
    key: Annotated[str | None, typer.Option(
        "--key", help="The thread (or topic) to explain; default: every topic of a topic "
        "rule, the five busiest threads of a thread rule.", show_default=False)] = None,
    config: ConfigOpt = None,
    rules: Annotated[list[str] | None, typer.Option(
        "--rules", "-r", help="Rules file or directory (repeatable).",
        show_default=False)] = None,
    match: Annotated[list[str] | None, typer.Option(
        "--match", "-m", help="Ad-hoc topic term (repeatable).", show_default=False)] = None,
    fmt: Annotated[str | None, typer.Option("--format", "-f", help="Force the dump format.",
                                            show_default=False)] = None,
) -> None:
    """Why a rule fired at a moment, or why it did not: its signals then and each
    condition's verdict (value, threshold, holds), escalation steps included.

    Example:

        stormwatch rules explain negative-thread-taking-off --at 2024-05-09T13:45:00Z \\
            samples/acme-week.jsonl.gz --config samples/acme.yaml
    """
    from monitor.explain import explain
    from monitor.inputs import DumpInputs
    from monitor.models import TimeFormatError, parse_time
    from monitor.setup import setup

    try:
        when = parse_time(at)
    except TimeFormatError as e:
        raise UsageError(f"--at: {e}") from None
    s = setup(config, rules or [], match or [])
    with DumpInputs(dumps, fmt=fmt, prefilter=s.matcher.prefilter_terms(),
                    progress=output.null_progress()) as inputs:
        found = explain(s, inputs, rule, when, key=key)
    output.explanations(found)


@app.command()
@friendly
def report(
    alert: Annotated[int | None, typer.Argument(
        help="An alert's id: write its incident's record (see `alerts list`).",
        show_default=False)] = None,
    topic: Annotated[str | None, typer.Option(help="Chart this topic.",
                                              show_default=False)] = None,
    thread: Annotated[str | None, typer.Option(help="Chart this thread.",
                                               show_default=False)] = None,
    since: Annotated[str | None, typer.Option(help="From (ISO 8601); default: a day before "
                                              "the end.", show_default=False)] = None,
    until: Annotated[str | None, typer.Option(help="To (ISO 8601); default: the last "
                                              "stored mention.", show_default=False)] = None,
    out: Annotated[str, typer.Option("--out", "-o", help="Where to write (a file name "
                                     "without extension).")] = "stormwatch-report",
    config: ConfigOpt = None, db: DbOpt = None,
) -> None:
    """Chart a topic or thread over a time range (volume against the baseline band,
    negative share, alert events marked), as a PNG and a self-contained HTML page; or,
    given an alert's id, its incident's record for the post-crisis review (HTML and
    Markdown, with the chart).

    Example:

        stormwatch report --topic acme --since 2024-05-09T06:00:00Z \\
            --until 2024-05-10T06:00:00Z --db sqlite:///acme.db -o acme-crisis
    """
    from monitor import report as rep
    from monitor.models import TimeFormatError, parse_time
    from monitor.setup import setup
    from monitor.store import Store

    if alert is None and (topic is None) == (thread is None):
        raise UsageError("say what to report: an alert's id, or --topic or --thread (one)")
    try:
        t0 = parse_time(since) if since else None
        t1 = parse_time(until) if until else None
    except TimeFormatError as e:
        raise UsageError(f"--since/--until: {e}") from None
    s = setup(config)
    store = Store.open(db or s.config.database)
    try:
        if alert is not None:
            from monitor.incident import write_record

            written = write_record(s, store, alert, out)
        else:
            try:
                t = rep.from_store(s, store, topic=topic, thread=thread, since=t0, until=t1)
            except LookupError as e:
                raise UsageError(str(e), hint="replay a dump with --db, or run the daemon, "
                                 "to store mentions") from None
            written = rep.write(t, out)
    finally:
        store.close()
    output.say("wrote " + ", ".join(written))


@app.command()
@friendly
def export(
    db: Annotated[str, typer.Option("--db", help="Database URL to read.")],
    out: Annotated[str, typer.Option("--output", "-o", help="File to write, - for stdout.")]
    = "-",
    since: Annotated[str | None, typer.Option(help="Only mentions at or after (ISO 8601).",
                                              show_default=False)] = None,
    until: Annotated[str | None, typer.Option(help="Only mentions before (ISO 8601).",
                                              show_default=False)] = None,
    topic: Annotated[str | None, typer.Option(help="Only this topic.", show_default=False)]
    = None,
) -> None:
    """Write stored mentions as mention JSONL (the format `replay` reads).

    Example:

        stormwatch export --db sqlite:///stormwatch.db --since 2024-05-01T00:00:00Z > may.jsonl
    """
    from monitor.models import TimeFormatError, parse_time
    from monitor.store import Store

    try:
        t0 = parse_time(since) if since else None
        t1 = parse_time(until) if until else None
    except TimeFormatError as e:
        raise UsageError(f"--since/--until: {e}") from None
    store = Store.open(db)
    n = 0
    try:
        with output.open_out(out) as f:
            for m in store.iter_mentions(since=t0, until=t1, topic=topic, latest=True):
                f.write(orjson.dumps(m.to_json()) + b"\n")
                n += 1
    finally:
        store.close()
    output.say(f"exported {n} mention(s)")


@app.command()
@friendly
def run(
    config: ConfigOpt = None,
    db: DbOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """The daemon: poll the config's sources on schedule, detect, store and report alerts.

    Stops cleanly on SIGINT (Ctrl-C) or SIGTERM: pages already fetched are committed, and
    a restart continues from the stored cursors. A second signal stops at once. SIGHUP,
    or saving a rules file, reloads the rules (a file with a mistake keeps the running
    rules; the log says where). Health and metrics: http://127.0.0.1:9464/healthz and
    /metrics (the config's run: section). Several instances may share one PostgreSQL.

    Example:

        stormwatch init && stormwatch run --config stormwatch.yaml
    """
    import logging
    import signal

    from monitor.setup import setup

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(output.InertFormatter("%(asctime)s %(levelname)-7s %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for noisy in ("alembic", "apscheduler", "httpx", "httpcore", "prawcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    s = setup(config)
    if s.config.run.log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter(  # one object per line; text escaped by JSON
            "{levelname}{name}{threadName}{message}", style="{", timestamp=True,
            rename_fields={"levelname": "level", "name": "logger", "threadName": "thread"}))
    from monitor import app as core
    from monitor.store import Store

    store = Store.open(db or s.config.database)
    daemon = core.build_daemon(s, store)
    if not daemon.polling and not daemon.subscriptions:
        store.close()
        raise UsageError("no sources to watch", path=config,
                         hint="add a 'sources:' section; `stormwatch init` writes an example")
    signals = 0

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            _exit_now(128 + signum)
        logging.getLogger("stormwatch").info("%s: stopping", signal.Signals(signum).name)
        daemon.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, lambda *_: daemon.request_reload())  # rules files again
    try:
        daemon.run()
    finally:
        store.close()


@app.command()
@friendly
def status(config: ConfigOpt = None, db: DbOpt = None) -> None:
    """Each source's health, the deliveries, and the open alerts.

    Per source: state (ok, retrying, failing, stale: no success for three intervals), last
    success, last error, lag (newest mention to its fetch), mentions today and in all.
    Instances of `stormwatch run` on this database, and what each holds. Deliveries:
    sent, pending and failed, with the latest failure.

    Example:

        stormwatch status --config stormwatch.yaml
    """
    from monitor import app as core
    from monitor.clock import SystemClock
    from monitor.setup import setup
    from monitor.store import Store

    s = setup(config)
    store = Store.open(db or s.config.database)
    try:
        now = SystemClock().now()
        states = store.load_sources()
        alerts = store.open_alerts()
        outbox = store.outbox_summary()
        instances = store.list_instances(now)
    finally:
        store.close()
    intervals = core.source_intervals(s)
    output.status_report(states, intervals, alerts, now, outbox, instances)


@app.command()
@friendly
def init(
    path: Annotated[str, typer.Argument(help="Where to write the config.")] = "stormwatch.yaml",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")]
    = False,
) -> None:
    """Write a commented example config (topics, Reddit, RSS) to edit.

    Example:

        stormwatch init stormwatch.yaml
    """
    from importlib import resources

    if os.path.exists(path) and not force:
        raise UsageError(f"{path} exists already", hint="use --force to overwrite it")
    text = resources.files("monitor").joinpath("stormwatch.example.yaml").read_text()
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None
    output.say(f"wrote {path}: set the topics and sources, then `stormwatch run --config "
               f"{path}`")


def main() -> None:
    """The ``stormwatch`` entry point.

    Once a command is done (it closes what it opened: helper processes, threads, temporary
    files, the database), the process ends without tearing the interpreter down: freeing
    SQLAlchemy, pydantic and the rest object by object would cost a tenth of a second on
    every run, for nothing (the same trick as Instagram's ``os._exit`` at exit).
    """
    try:
        app()
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    _exit_now(code)


def _exit_now(code: int) -> None:
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BrokenPipeError, ValueError):
            stream.flush()
    os._exit(code)
