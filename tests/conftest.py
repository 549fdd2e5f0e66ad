"""Shared helpers for the tests: mention factories and a rules-file writer."""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from monitor.models import Mention

T0 = 1714521600.0  # 2024-05-01T00:00:00Z

PG_URL = os.environ.get("STORMWATCH_TEST_PG_URL", "")


def pg_store_url() -> Iterator[str]:
    """A fresh schema in the test PostgreSQL database, dropped afterwards."""
    if not PG_URL:
        pytest.skip("PostgreSQL tests need STORMWATCH_TEST_PG_URL "
                    "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    schema = f"sw_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL)
    try:
        with admin.begin() as c:
            c.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except sa.exc.OperationalError as e:
        pytest.skip(f"PostgreSQL at {PG_URL} is not reachable: {e.orig}")
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as c:
        c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[Any]:
    """A migrated store on SQLite, and again on PostgreSQL (a fresh schema). A module
    with a ``store`` fixture of its own uses that one instead."""
    from monitor.store import Store

    if request.param == "sqlite":
        s = Store.open(f"sqlite:///{tmp_path}/t.db")
        yield s
        s.close()
        return
    gen = pg_store_url()
    s = Store.open(next(gen))
    yield s
    s.close()
    next(gen, None)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL schema for one test (skips without the server)."""
    yield from pg_store_url()


def mention(i: int | str, t: float, text: str = "acme is fine", *, thread: str = "",
            author: str | None = None, compound: float | None = 0.0,
            topics: tuple[str, ...] = ("all",), metrics: dict[str, int] | None = None
            ) -> Mention:
    mid = f"dump:{i}"
    return Mention(id=mid, text=text, created_at=t, thread_id=thread,
                   author=author if author is not None else f"user{i}", topics=topics,
                   compound=compound, metrics=metrics or {})


@pytest.fixture
def write(tmp_path: os.PathLike[str]) -> Callable[[str, str], str]:
    """write(name, text) -> path of a dedented file in tmp_path."""

    def _write(name: str, text: str) -> str:
        path = os.path.join(tmp_path, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(textwrap.dedent(text).lstrip("\n"))
        return path

    return _write
