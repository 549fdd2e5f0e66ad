"""``stormwatch alerts`` and ``stormwatch silence``: the frontline's record and its mutes.

Each command opens the database of the config (or ``--db``), does one thing, and says
what it did. Who did it is ``--by`` (default: the login name), kept with the time.
"""

from __future__ import annotations

import contextlib
import getpass
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from monitor import output
from monitor.cli_common import ConfigOpt, DbOpt, friendly
from monitor.errors import UsageError

alerts_app = typer.Typer(no_args_is_help=True, help=(
    "The alerts and their incidents: list, show the record, acknowledge, resolve.\n\n"
    "    stormwatch alerts list --config stormwatch.yaml\n\n"
    "    stormwatch alerts ack 12 --note 'answering in the thread'"))
silence_app = typer.Typer(no_args_is_help=True, help=(
    "Mute alerts that match, for a while: add, list, expire.\n\n"
    "    stormwatch silence add --key reddit:t3_1abc --for 2h --comment 'answered, refund sent'"))

ByOpt = Annotated[str | None, typer.Option(
    "--by", help="Who does it (default: your login name).", show_default=False)]
NoteOpt = Annotated[str, typer.Option("--note", "-n", help="Why, for the record.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on standard output.")]


@contextlib.contextmanager
def _opened(config: str | None, db: str | None) -> Iterator[Any]:
    from monitor.setup import setup
    from monitor.store import Store

    s = setup(config)
    store = Store.open(db or s.config.database)
    try:
        yield s, store
    finally:
        store.close()


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        raise UsageError("who are you? (no login name here)", hint="pass --by NAME") from None


def _now() -> float:
    from monitor.clock import SystemClock

    return SystemClock().now()


@alerts_app.command("list")
@friendly
def alerts_list(
    config: ConfigOpt = None, db: DbOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Resolved alerts too.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """Firing alerts (with --all, resolved ones too), newest first, with their incident
    and who acknowledged it."""
    with _opened(config, db) as (_, store):
        rows = store.list_alerts(state=None if all_ else "firing", limit=limit)
    if json_out:
        output.json_lines(rows)
    else:
        output.alerts_table(rows)


@alerts_app.command("show")
@friendly
def alerts_show(
    alert_id: Annotated[int, typer.Argument(help="The alert's id (see `alerts list`).")],
    config: ConfigOpt = None, db: DbOpt = None, json_out: JsonOpt = False,
) -> None:
    """An alert's record: its events with their numbers, its incident, and every message
    about the incident with each delivery attempt (the audit trail)."""
    with _opened(config, db) as (_, store):
        record = store.alert_record(alert_id)
    if record is None:
        raise UsageError(f"no alert {alert_id}", hint="see: stormwatch alerts list")
    if json_out:
        output.json_lines([record])
    else:
        output.alert_record(record)


@alerts_app.command("ack")
@friendly
def alerts_ack(
    alert_id: Annotated[int, typer.Argument(help="The alert's id (see `alerts list`).")],
    by: ByOpt = None, note: NoteOpt = "", config: ConfigOpt = None, db: DbOpt = None,
) -> None:
    """Acknowledge an alert's incident: someone owns it. Reminders and the escalation to
    the next people stop."""
    who = _who(by)
    with _opened(config, db) as (_, store):
        incident = store.acknowledge(alert_id, who, note, _now())
    output.say(f"incident #{incident['id']} acknowledged by {who}")


@alerts_app.command("resolve")
@friendly
def alerts_resolve(
    alert_id: Annotated[int, typer.Argument(help="The alert's id (see `alerts list`).")],
    by: ByOpt = None, note: NoteOpt = "", config: ConfigOpt = None, db: DbOpt = None,
) -> None:
    """Close a firing alert by hand (the thread was answered, the outage is over). If the
    incident has no other firing alert, the resolution is sent where its messages went (by
    the running daemon). If the trouble goes on, the alert comes back quietly, and pages
    again only when it gets worse."""
    from monitor import app as core

    who = _who(by)
    with _opened(config, db) as (s, store):
        _, planner = core.build_notify(s, store)
        ev = store.resolve_by_hand(alert_id, who, note, _now(),
                                   plan=planner.plan if planner is not None else None)
    if ev is None:
        raise UsageError(f"alert {alert_id} is not firing", hint="see: stormwatch alerts list")
    output.say(f"alert {alert_id} ({ev.rule} on {ev.scope} {ev.key}) resolved by {who}")


@silence_app.command("add")
@friendly
def silence_add(
    comment: Annotated[str, typer.Option("--comment", help="Why (required: the next "
                                         "person will ask).", show_default=False)],
    rule: Annotated[str | None, typer.Option(help="Only this rule.")] = None,
    topic: Annotated[str | None, typer.Option(help="Only this topic.")] = None,
    key: Annotated[str | None, typer.Option(help="Only this thread (or topic) key.")] = None,
    scope: Annotated[str | None, typer.Option(help="Only thread or topic alerts.")] = None,
    for_: Annotated[str | None, typer.Option("--for", help="How long, e.g. 2h, 30m, 1d.",
                                             show_default=False)] = None,
    until: Annotated[str | None, typer.Option(help="Until when (ISO 8601 with a zone).",
                                              show_default=False)] = None,
    by: ByOpt = None, config: ConfigOpt = None, db: DbOpt = None,
) -> None:
    """Mute the alerts that match (every matcher given must match) from now on: their
    events are recorded, nobody is told. Ends by itself (--for or --until)."""
    from monitor.models import TimeFormatError, iso, parse_time
    from monitor.rules import parse_duration

    if not any((rule, topic, key, scope)):
        raise UsageError("a silence needs at least one of --rule, --topic, --key, --scope",
                         hint="muting everything is what stopping the daemon is for")
    if scope not in (None, "thread", "topic"):
        raise UsageError(f"--scope: expected thread or topic, found {scope!r}")
    if (for_ is None) == (until is None):
        raise UsageError("say how long: --for 2h, or --until 2024-05-01T18:00:00Z (one)")
    now = _now()
    try:
        ends = now + parse_duration(for_) if for_ is not None else parse_time(until)
    except (ValueError, TimeFormatError) as e:
        raise UsageError(f"--{'for' if for_ is not None else 'until'}: {e}") from None
    if ends <= now:
        raise UsageError(f"--until {until} is already past")
    with _opened(config, db) as (_, store):
        sid = store.add_silence(rule=rule, topic=topic, key=key, scope=scope, starts_at=now,
                                ends_at=ends, by=_who(by), comment=comment)
    output.say(f"silence {sid} until {iso(ends)}")


@silence_app.command("list")
@friendly
def silence_list(
    config: ConfigOpt = None, db: DbOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Ended ones too.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Active silences (with --all, ended ones too)."""
    with _opened(config, db) as (_, store):
        rows = store.list_silences(_now(), all_=all_)
    if json_out:
        output.json_lines(rows)
    else:
        output.silences_table(rows, _now())


@silence_app.command("expire")
@friendly
def silence_expire(
    silence_id: Annotated[int, typer.Argument(help="The silence's id (see `silence list`).")],
    config: ConfigOpt = None, db: DbOpt = None,
) -> None:
    """End a silence now."""
    with _opened(config, db) as (_, store):
        done = store.expire_silence(silence_id, _now())
    if not done:
        raise UsageError(f"no active silence {silence_id}", hint="see: stormwatch silence list")
    output.say(f"silence {silence_id} expired")
