"""A ``--match`` scan of a dump file in a helper process.

Scanning a big compressed dump for a brand is decompression-bound: some 750 MB of text
per million Reddit comments, of which one line in a hundred mentions the brand. Run in a
process of its own, decompressing and the SIMD search of
:func:`connectors.dump.candidate_lines` take the second core, and overlap with all the
rest a replay does (start-up, parsing, matching, detection, storage); only the candidate
lines cross over.

The helper is ``python -m connectors.scan PATH FORMAT TERM...`` (``FORMAT`` may be
``auto``). It writes pickled messages to standard output:

- ``("format", fmt)`` once, detected from the first lines unless given (after ``csv``
  it stops: CSV records may span lines, so CSV is not prefiltered);
- ``("lines", lines_so_far, raw_position, [(line_number, line), ...])`` per block;
- ``("end", report)``: the helper's :class:`~connectors.dump.SkipReport` (truncated or
  corrupt data, oversized lines).

If the helper dies, the reader notices (no ``end``), and reads the rest itself.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import IO

from connectors.dump import (
    SkipReport,
    _blocks,
    candidate_lines,
    count_lines,
    detect_format,
    open_blocks,
)

PIPE_BUFFER = 1 << 20


def helper_command(path: str, fmt: str, terms: list[str]) -> list[str]:
    return [sys.executable, "-m", "connectors.scan", path, fmt, *terms]


class ScanProcess:
    """The parent's side: start the helper, then read its candidate lines."""

    def __init__(self, path: str, fmt: str | None, terms: list[bytes]) -> None:
        self.path = path
        self.failed = False
        self.problem = ""
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            helper_command(path, fmt or "auto", [t.decode() for t in terms]),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            bufsize=PIPE_BUFFER)

    @staticmethod
    def usable() -> bool:
        """A helper only pays when it has a core of its own."""
        return (os.cpu_count() or 1) >= 2

    def start(self, fmt: str | None) -> str | None:
        """The dump's format, as the helper found it (``None``: it failed to start)."""
        msg = self._next()
        if msg is None or msg[0] != "format":
            return None
        return str(msg[1])

    def lines(self, report: SkipReport,
              on_progress: Callable[[int], None] | None) -> Iterator[tuple[int, bytes]]:
        """Candidate lines, counting the lines seen into ``report``."""
        while True:
            msg = self._next()
            if msg is None:
                self.failed = True
                report.warn(self.path, report.lines + 1, "the scanning helper failed",
                            f"{self.problem}; the rest is read without it")
                return
            if msg[0] == "end":
                theirs: SkipReport = msg[1]
                report.lines, theirs.lines = theirs.lines, 0
                report.merge(theirs)
                return
            _, lines, pos, found = msg
            report.lines = lines
            if on_progress is not None and pos is not None:
                on_progress(pos)
            yield from found

    def _next(self) -> tuple | None:  # type: ignore[type-arg]
        if self.proc is None:
            return None
        out: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        try:
            return pickle.load(out)  # type: ignore[no-any-return]
        except (EOFError, pickle.UnpicklingError, OSError, ValueError):
            err = self.proc.stderr.read() if self.proc.stderr else b""  # type: ignore[union-attr]
            code = self.proc.wait()
            last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            self.problem = f"exit status {code}" + (f": {last[0]}" if last[0] else "")
            self.close()
            return None

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def scan(path: str, fmt: str, terms: list[bytes], out: IO[bytes]) -> None:
    """The helper's side: decompress, find the candidate lines, send them."""
    report = SkipReport()
    reached: list[int | None] = [None]
    ahead = open_blocks(path)
    try:
        blocks = _blocks(ahead, path, report, lambda pos: reached.__setitem__(0, pos))
        first = next(blocks, b"")
        fmt = fmt if fmt != "auto" else detect_format(first, path)
        pickle.dump(("format", fmt), out)
        if fmt == "csv":
            return
        if first:
            _send(first, report, terms, reached[0], out)
        for block in blocks:
            _send(block, report, terms, reached[0], out)
        pickle.dump(("end", report), out)
    finally:
        ahead.close()
        out.flush()


def _send(block: bytes, report: SkipReport, terms: list[bytes], pos: int | None,
          out: IO[bytes]) -> None:
    base = report.lines
    report.lines += count_lines(block)
    found = list(candidate_lines(block, terms, base))
    pickle.dump(("lines", report.lines, pos, found), out, protocol=pickle.HIGHEST_PROTOCOL)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: python -m connectors.scan PATH FORMAT TERM...", file=sys.stderr)
        return 2
    path, fmt, terms = argv[0], argv[1], [t.encode() for t in argv[2:]]
    try:
        scan(path, fmt, terms, sys.stdout.buffer)
    except BrokenPipeError:  # the reader stopped early
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
