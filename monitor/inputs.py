"""The dumps a replay reads, one after another, as one stream of mentions with progress.

Opening the inputs opens the first dump at once: a ``--match`` scan then starts its helper
process (:mod:`connectors.scan`) while the caller is still starting the engine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Protocol

from connectors.dump import DumpReader, SkipReport, read_dump
from monitor.models import Mention


class Progress(Protocol):
    def start(self, path: str, total: int | None) -> None: ...

    def update(self, done: int) -> None: ...

    def stop(self) -> None: ...


class NoProgress:
    def start(self, path: str, total: int | None) -> None:
        pass

    def update(self, done: int) -> None:
        pass

    def stop(self) -> None:
        pass


class DumpInputs:
    """Mentions of ``dumps`` in order; ``report`` sums what reading them cost."""

    def __init__(self, dumps: Sequence[str], *, fmt: str | None = None,
                 prefilter: list[str] | None = None, progress: Progress | None = None) -> None:
        self.dumps = list(dumps)
        self.fmt, self.prefilter = fmt, prefilter
        self.progress = progress or NoProgress()
        self.report = SkipReport()
        self._first = self._open(self.dumps[0]) if self.dumps else None

    def _open(self, path: str) -> DumpReader:
        return read_dump(path, fmt=self.fmt, prefilter=self.prefilter, report=self.report,
                         on_progress=self.progress.update)

    def __iter__(self) -> Iterator[Mention]:
        for i, path in enumerate(self.dumps):
            total = None
            if path != "-":
                try:
                    total = os.path.getsize(path)
                except OSError:
                    total = None
            self.progress.start(path, total)
            reader = self._first if i == 0 and self._first is not None else self._open(path)
            with reader:
                yield from reader

    def close(self) -> None:
        if self._first is not None:
            self._first.close()

    def __enter__(self) -> DumpInputs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
