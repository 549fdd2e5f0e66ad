"""Dump readers: historical mentions from files, streamed, never the whole file in memory.

One entry point, ``read_dump(path)``, yields :class:`~monitor.models.Mention` objects from

- **jsonl** — mention JSONL, the interchange format (DESIGN.md CONTRACT);
- **pushshift** — Pushshift / Arctic Shift Reddit NDJSON, comments (``RC_``) and
  submissions (``RS_``);
- **jetstream** — Bluesky Jetstream frames saved as NDJSON (posts only);
- **csv** — CSV with a header naming the mention JSONL keys.

Each may be plain, gzip or zstandard (detected from the magic bytes, not the name), or
``-`` for standard input. The format is detected from the content; ``fmt=`` forces it.
A bad line is skipped and counted in the :class:`SkipReport` with its reason and place;
a file that cannot be read to its end (truncated, corrupt) keeps what was read and is
recorded in ``report.broken``. The record parsers are shared with the live connectors
(:mod:`connectors.records`).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import os
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson
import stringzilla as sz
import zstandard

from connectors.records import PARSERS, Ignore, Notes, Parser, Skip, parse_mention
from monitor.errors import DumpError, UsageError
from monitor.models import METRIC_KEYS, Mention

FORMATS = ("jsonl", "pushshift", "jetstream", "csv")
CHUNK = 1 << 20
MAX_LINE = 16 << 20  # a longer line is skipped, not buffered
ZSTD_READ = 1 << 17
ZSTD_MAX_WINDOW = 2**31  # Pushshift / Arctic Shift dumps are compressed with --long=31
MAX_EXAMPLES = 20

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass
class SkipReport:
    """What reading cost: lines seen, skipped (with reasons and a few examples), ignored."""

    lines: int = 0
    skipped: int = 0
    ignored: int = 0
    warnings: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    examples: list[tuple[str, int, str]] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)

    def skip(self, path: str, line: int, reason: str, detail: str = "") -> None:
        self.skipped += 1
        self._note(path, line, reason, detail)

    def warn(self, path: str, line: int, reason: str, detail: str = "") -> None:
        self.warnings += 1
        self._note(path, line, reason, detail)

    def merge(self, other: SkipReport) -> None:
        """Add another report's counts (another file's, or a helper's) to this one."""
        self.lines += other.lines
        self.skipped += other.skipped
        self.ignored += other.ignored
        self.warnings += other.warnings
        self.by_reason.update(other.by_reason)
        self.examples.extend(other.examples[:max(0, MAX_EXAMPLES - len(self.examples))])
        self.broken.extend(other.broken)

    def _note(self, path: str, line: int, reason: str, detail: str) -> None:
        self.by_reason[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append((path, line, f"{reason}: {detail}" if detail else reason))


# --------------------------------------------------------------------------- opening


def open_dump(path: str) -> tuple[IO[bytes], IO[bytes]]:
    """(decompressed stream, raw stream) for a path or ``-``; compression from magic bytes."""
    if path == "-":
        raw: IO[bytes] = sys.stdin.buffer
    else:
        try:
            raw = open(path, "rb")  # noqa: SIM115 - closed by read_dump
        except FileNotFoundError:
            raise UsageError("no such dump file", path=path) from None
        except OSError as e:
            raise DumpError(f"cannot open dump: {e.strerror or e}", path=path) from None
    buffered = raw if hasattr(raw, "peek") else io.BufferedReader(raw)  # type: ignore[arg-type]
    head = buffered.peek(4)[:4]  # type: ignore[attr-defined]
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=buffered, mode="rb"), raw
    if head.startswith(ZSTD_MAGIC):
        return ZstdFrames(buffered), raw  # type: ignore[return-value]
    return buffered, raw


class ZstdFrames:
    """Decompress concatenated zstd frames, and say so when the data ends inside a frame.

    (``ZstdDecompressor.stream_reader`` ends a truncated file silently: a cut dump would
    pass for a complete one.)
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        self.frame = self.dctx.decompressobj()
        self.fed = False

    def read(self, size: int = CHUNK) -> bytes:
        while True:
            # small compressed reads: a megabyte in at once makes ~8 MB out, and zstandard
            # then spends more time growing its output buffer than decompressing
            data = self.raw.read(ZSTD_READ)
            if not data:
                if self.fed and not self.frame.eof:
                    raise zstandard.ZstdError("the data ends inside a zstd frame (truncated)")
                return b""
            out = [self.frame.decompress(data)]
            self.fed = True
            while self.frame.eof and self.frame.unused_data:
                rest = self.frame.unused_data
                self.frame = self.dctx.decompressobj()
                out.append(self.frame.decompress(rest))
            if self.frame.eof:
                self.frame, self.fed = self.dctx.decompressobj(), False
            joined = b"".join(out)
            if joined:
                return joined


DECOMPRESS_ERRORS = (zstandard.ZstdError, EOFError, gzip.BadGzipFile, zlib.error, OSError)


class BlockReader:
    """Blocks of a dump, decompressed, with the position reached in the raw file."""

    def __init__(self, stream: IO[bytes], raw: IO[bytes]) -> None:
        self.stream, self.raw = stream, raw

    def read(self) -> tuple[bytes, int | None]:
        """The next block ('' at the end) and how far into the raw file it came from."""
        block = self.stream.read(CHUNK)
        try:
            return block, self.raw.tell()
        except (OSError, ValueError):
            return block, None

    def close(self) -> None:
        if self.raw is not sys.stdin.buffer:
            self.raw.close()


def open_blocks(path: str) -> BlockReader:
    """A block reader for ``path`` (or ``-``)."""
    return BlockReader(*open_dump(path))


def _blocks(ahead: BlockReader, path: str, report: SkipReport,
            on_progress: Callable[[int], None] | None) -> Iterator[bytes]:
    """Blocks of whole lines (each ending in ``\\n`` except maybe the last)."""
    rest = b""
    oversized = False
    while True:
        try:
            block, pos = ahead.read()
        except DECOMPRESS_ERRORS as e:
            report.broken.append(f"{path}: {e}")
            report.skip(path, report.lines + 1, "truncated or corrupt compressed data",
                        "the rest of this file is lost; the lines before it were read")
            return
        if on_progress is not None and pos is not None:
            on_progress(pos)
        if not block:
            if rest and not oversized:
                yield rest
            return
        cut = block.rfind(b"\n")
        if cut < 0:
            if oversized:
                continue
            rest += block
            if len(rest) > MAX_LINE:
                oversized, rest = True, b""
            continue
        first = block.find(b"\n") + 1
        if oversized:
            report.lines += 1
            report.skip(path, report.lines, "line longer than 16 MiB")
            oversized = False
        elif rest or first == cut + 1:
            yield rest + block[:first]  # the line carried over, completed: small
        else:
            first = 0
        if first < cut + 1:
            yield block[first:cut + 1]  # one copy of the block, not two
        rest = block[cut + 1:]


# --------------------------------------------------------------------------- reading


def read_dump(path: str, *, fmt: str | None = None, prefilter: list[str] | None = None,
              report: SkipReport | None = None,
              on_progress: Callable[[int], None] | None = None,
              helper: bool | None = None) -> DumpReader:
    """Stream mentions out of one dump file (or ``-``): iterate the returned reader.

    ``prefilter``: lowercase ASCII literals; a JSON line containing none of them is not
    parsed (it cannot be in scope). Not used for CSV, whose records may span lines.
    ``helper`` (default: on two cores or more): such a scan of a file runs in a helper
    process (:mod:`connectors.scan`), started now, so that decompressing and searching
    overlap with whatever the caller does meanwhile. Line numbers count from 1 per file.
    """
    return DumpReader(path, fmt=fmt, prefilter=prefilter, report=report,
                      on_progress=on_progress, helper=helper)


class DumpReader:
    """The mentions of one dump; see :func:`read_dump`. ``close()`` if not read to the end.

    What reading cost goes to ``report`` when the reader is done or closed.
    """

    def __init__(self, path: str, *, fmt: str | None, prefilter: list[str] | None,
                 report: SkipReport | None, on_progress: Callable[[int], None] | None,
                 helper: bool | None) -> None:
        if fmt is not None and fmt not in FORMATS:
            raise UsageError(
                f"unknown dump format {fmt!r}; expected one of: {', '.join(FORMATS)}")
        from connectors.scan import ScanProcess  # the helper imports this module

        self.path, self.fmt = path, fmt
        self.report = report if report is not None else SkipReport()
        self.own = SkipReport()  # this file's, so that its line numbers count from 1
        self.on_progress = on_progress
        self.terms = [t.encode() for t in prefilter] if prefilter else None
        self.scan: ScanProcess | None = None
        if path != "-" and not os.path.exists(path):
            raise UsageError("no such dump file", path=path)
        use_helper = ScanProcess.usable() if helper is None else helper
        if self.terms and use_helper and os.path.isfile(path) and fmt != "csv":
            self.scan = ScanProcess(path, fmt, self.terms)
        self._iter = self._mentions()
        self._merged = False

    def __iter__(self) -> Iterator[Mention]:
        return self._iter

    def __next__(self) -> Mention:
        return next(self._iter)

    def __enter__(self) -> DumpReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._iter.close()
        self._done()

    def _done(self) -> None:
        if self.scan is not None:
            self.scan.close()
        if not self._merged:
            self._merged = True
            self.report.merge(self.own)

    def _mentions(self) -> Iterator[Mention]:
        try:
            yield from self._read()
        finally:
            self._done()

    def _read(self) -> Iterator[Mention]:
        path, own = self.path, self.own
        if self.scan is not None:
            fmt = self.scan.start(self.fmt)
            if fmt is not None and fmt != "csv":
                yield from _parse_lines(self.scan.lines(own, self.on_progress), path, own,
                                        PARSERS[fmt])
                if self.scan.failed:
                    # the helper died: read here what it had not delivered
                    done = own.lines
                    yield from _parse_lines(self._lines_after(done), path, own, PARSERS[fmt])
                return
            self.scan.close()
        ahead = open_blocks(path)
        blocks = _closing(ahead, _blocks(ahead, path, own, self.on_progress))
        first = next(blocks, b"")
        fmt = self.fmt or detect_format(first, path)
        if fmt == "csv":
            yield from _read_csv(_chain(first, blocks), path, own)
        else:
            yield from _parse_lines(_numbered(_chain(first, blocks), own, self.terms), path,
                                    own, PARSERS[fmt])

    def _lines_after(self, done: int) -> Iterator[tuple[int, bytes]]:
        again = SkipReport()
        ahead = open_blocks(self.path)
        blocks = _closing(ahead, _blocks(ahead, self.path, again, None))
        for lineno, line in _numbered(blocks, again, self.terms):
            if lineno > done:
                yield lineno, line
        self.own.lines = again.lines
        again.lines = 0
        self.own.merge(again)


def _closing(ahead: BlockReader, blocks: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from blocks
    finally:
        ahead.close()


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def count_lines(block: bytes) -> int:
    """Lines in a block of whole lines (the last may lack its newline)."""
    return sz.count(block, "\n") + (0 if block.endswith(b"\n") else 1)


def _numbered(blocks: Iterator[bytes], report: SkipReport,
              terms: list[bytes] | None) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of every line, or with ``terms`` of the candidate lines."""
    for block in blocks:
        base = report.lines
        report.lines += count_lines(block)
        if terms is None:
            yield from enumerate(block.split(b"\n"), base + 1)
        else:
            yield from candidate_lines(block, terms, base)


def detect_format(block: bytes, path: str) -> str:
    """Guess the format from the first lines: JSON keys decide, anything else is CSV."""
    saw_json = False
    for line in block.split(b"\n", 200)[:200]:
        line = line.strip()
        if not line:
            continue
        if not line.startswith(b"{"):
            return "jsonl" if saw_json else "csv"
        saw_json = True
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        if "did" in obj and "time_us" in obj and "kind" in obj:
            return "jetstream"
        if "created_utc" in obj and ("subreddit" in obj or "link_id" in obj):
            return "pushshift"
        return "jsonl"
    return "jsonl"


def _parse_lines(lines: Iterator[tuple[int, bytes]], path: str, report: SkipReport,
                 parse: Parser) -> Iterator[Mention]:
    for lineno, line in lines:
        if not line or line.isspace():
            continue
        notes: Notes = []
        try:
            obj = orjson.loads(line)
            if not isinstance(obj, dict):
                raise Skip("not a JSON object", f"found {type(obj).__name__}")
            mention = parse(obj, notes)
        except orjson.JSONDecodeError as e:
            report.skip(path, lineno, "invalid JSON", str(e).split(":")[0])
            continue
        except Skip as s:
            report.skip(path, lineno, s.reason, s.detail)
            continue
        except Ignore:
            report.ignored += 1
            continue
        for reason, detail in notes:
            report.warn(path, lineno, reason, detail)
        yield mention


def candidate_lines(block: bytes, terms: list[bytes], base: int) -> Iterator[tuple[int, bytes]]:
    """Lines of ``block`` containing any term (case-insensitive), with line numbers.

    StringZilla's SIMD search with Unicode case folding is a superset of the topic
    matcher's case-insensitivity, and some ten times faster than lowering the block and
    searching it with ``bytes.find``: a scan then costs little more than decompressing.
    """
    search = sz.utf8_uncased_search
    starts: set[int] = set()
    for term in terms:
        pos = search(block, term)
        while pos >= 0:
            start = block.rfind(b"\n", 0, pos) + 1
            starts.add(start)
            end = block.find(b"\n", pos)
            if end < 0:
                break
            pos = search(block, term, end)
    lineno, counted = base + 1, 0
    for start in sorted(starts):
        lineno += sz.count(block, "\n", counted, start) if start > counted else 0
        counted = start
        end = block.find(b"\n", start)
        yield lineno, block[start:] if end < 0 else block[start:end]


# --------------------------------------------------------------------------- CSV

CSV_REQUIRED = ("id", "text", "created_at")


def _read_csv(blocks: Iterator[bytes], path: str, report: SkipReport) -> Iterator[Mention]:
    """CSV with a header row naming mention JSONL keys; ``metrics.likes`` style columns (or
    bare ``likes``, ``score``...) fill ``metrics``; other columns are kept in ``extra``."""
    csv.field_size_limit(MAX_LINE)
    reader = csv.reader(_text_lines(blocks, path, report))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as e:
        raise DumpError(f"cannot read the CSV header: {e}", path=path, line=1) from None
    header = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise DumpError(
            f"not a recognised dump: the first line is neither a JSON object nor a CSV "
            f"header with {', '.join(CSV_REQUIRED)} (missing: {', '.join(missing)}; "
            f"found: {', '.join(h[:30] for h in header[:10]) or 'nothing'})", path=path, line=1,
            hint="force the format with --format jsonl|pushshift|jetstream|csv")
    report.lines = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            report.lines = reader.line_num
            report.skip(path, reader.line_num, "bad CSV row", str(e))
            continue
        report.lines = reader.line_num
        if not row or all(not c for c in row):
            continue
        if len(row) != len(header):
            report.skip(path, reader.line_num, "wrong number of CSV columns",
                        f"expected {len(header)}, found {len(row)}")
            continue
        obj: dict[str, Any] = {}
        metrics: dict[str, str] = {}
        for key, cell in zip(header, row, strict=True):
            if cell == "":
                continue
            if key.startswith("metrics."):
                metrics[key[8:]] = cell
            elif key in METRIC_KEYS:
                metrics[key] = cell
            elif key == "author_followers":
                obj[key] = int(cell) if cell.isdigit() else cell
            else:
                obj[key] = cell
        if metrics:
            obj["metrics"] = metrics
        notes: Notes = []
        try:
            mention = parse_mention(obj, notes)
        except Skip as s:
            report.skip(path, reader.line_num, s.reason, s.detail)
            continue
        for reason, detail in notes:
            report.warn(path, reader.line_num, reason, detail)
        yield mention


def _text_lines(blocks: Iterator[bytes], path: str, report: SkipReport) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for block in blocks:
        parts = decoder.decode(block).split("\n")
        for part in parts[:-1]:
            yield part + "\n"
        if parts[-1]:
            yield parts[-1]
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail
