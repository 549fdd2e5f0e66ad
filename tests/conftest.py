"""Shared helpers for the tests: mention factories and a rules-file writer."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable

import pytest

from monitor.models import Mention

T0 = 1714521600.0  # 2024-05-01T00:00:00Z


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
