"""What every ``stormwatch`` command shares: its error handling and common options."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any, TypeVar

import typer

from monitor import output
from monitor.errors import StormwatchError

F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = Annotated[str | None, typer.Option(
    "--config", "-c", help="Config file (database, rules, topics). Default: built-in "
    "defaults (SQLite, shipped rules, every mention in scope under topic 'all').",
    show_default=False)]
DbOpt = Annotated[str | None, typer.Option(
    "--db", help="Database URL, e.g. sqlite:///stormwatch.db or "
    "postgresql+psycopg://user@host/db.", show_default=False)]


def friendly(fn: F) -> F:
    """Turn Stormwatch errors into one clear message and the contract's exit status."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StormwatchError as e:
            output.error(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            output.error("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None

    return wrapper  # type: ignore[return-value]
