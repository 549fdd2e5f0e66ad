"""Dump readers, through ``read_dump``: formats, compression, stdin, bad lines, prefilter.

Input shapes follow the sources' own documentation: Pushshift / Arctic Shift comment and
submission objects, Jetstream's README frames (commit, identity, account).
"""

from __future__ import annotations

import gzip
import io
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from connectors import dump
from connectors.dump import SkipReport, read_dump
from monitor.errors import DumpError, UsageError
from monitor.models import parse_time


def lines(*objs: Any) -> bytes:
    return b"".join((o if isinstance(o, bytes) else orjson.dumps(o)) + b"\n" for o in objs)


def read(path: Path | str, **kw: Any) -> tuple[list[Any], SkipReport]:
    report = SkipReport()
    return list(read_dump(str(path), report=report, **kw)), report


def zst_long(data: bytes) -> bytes:
    """A zstd frame written with a 2 GiB window, like the Pushshift / Arctic Shift dumps."""
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=31)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(
            out, closefd=False) as w:
        w.write(data)
    return out.getvalue()


MENTION = {"id": "m1", "text": "Acme lost my parcel", "created_at": "2024-05-01T12:00:00Z"}

# --------------------------------------------------------------------------- mention JSONL


def test_mention_jsonl_fields_ids_and_unknown_keys(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    p.write_bytes(lines(
        MENTION,
        {"id": 7, "text": "reply", "created_at": 1714564860, "source": "reddit",
         "thread_id": "t3_abc", "parent_id": "reddit:t1_x", "author": "bob",
         "author_followers": 12, "metrics": {"score": 3, "likes": 2}, "campaign": {"a": 1}},
    ))
    ms, rep = read(p)
    assert [m.id for m in ms] == ["dump:m1", "reddit:7"]
    assert ms[0].thread_id == "dump:m1" and ms[0].source == "dump"
    assert ms[0].created_at == parse_time("2024-05-01T12:00:00Z")
    assert ms[1].thread_id == "reddit:t3_abc"
    assert ms[1].parent_id == "reddit:t1_x"  # already qualified: not qualified twice
    assert ms[1].metrics == {"score": 3, "likes": 2} and ms[1].engagement == 5
    assert ms[1].extra == {"campaign": {"a": 1}}
    assert (rep.lines, rep.skipped, rep.warnings) == (2, 0, 0)


def test_bad_lines_are_skipped_with_reason_and_line_number(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_bytes(lines(
        MENTION,
        b'{"id": "m2", "text": "cut in the mid',
        {"text": "no id", "created_at": 1714564800},
        {"id": "m4", "text": "naive", "created_at": "2024-05-01T12:00:00"},
        [1, 2],
        b"",
        {"id": "m5", "text": "kept", "created_at": 1714564800, "author_followers": "many"},
    ))
    ms, rep = read(p)
    assert [m.id for m in ms] == ["dump:m1", "dump:m5"]
    assert ms[1].author_followers is None
    assert rep.skipped == 4 and rep.warnings == 1
    assert rep.by_reason["invalid JSON"] == 1
    assert rep.by_reason["missing 'id'"] == 1
    assert rep.by_reason["not a JSON object"] == 1
    places = {line: msg for _, line, msg in rep.examples}
    assert places[2].startswith("invalid JSON")
    assert "no time zone" in places[4]
    assert places[7].startswith("bad 'author_followers' dropped")


def test_lines_across_block_boundaries_keep_their_numbers(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dump, "CHUNK", 7)  # every line spans several reads
    p = tmp_path / "m.jsonl"
    objs = [dict(MENTION, id=f"m{i}", text="x" * i) for i in range(30)]
    objs[17] = b"{broken"
    p.write_bytes(lines(*objs))
    ms, rep = read(p)
    assert len(ms) == 29 and ms[-1].text == "x" * 29
    assert rep.examples[0][1] == 18 and rep.lines == 30


def test_last_line_without_newline_is_read(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    p.write_bytes(lines(MENTION) + orjson.dumps(dict(MENTION, id="m2")))
    ms, rep = read(p)
    assert [m.id for m in ms] == ["dump:m1", "dump:m2"] and rep.lines == 2


# --------------------------------------------------------------------------- compression, stdin


@pytest.mark.parametrize("name", ["m.jsonl.gz", "m.jsonl.zst", "no-extension"])
def test_compression_is_detected_from_content(tmp_path: Path, name: str) -> None:
    data = lines(MENTION, dict(MENTION, id="m2"))
    p = tmp_path / name
    p.write_bytes(gzip.compress(data) if name.endswith(".gz") else
                  zst_long(data) if name.endswith(".zst") else data)
    ms, _ = read(p)
    assert [m.id for m in ms] == ["dump:m1", "dump:m2"]


def test_zst_with_a_2gib_window_needs_the_large_window(tmp_path: Path) -> None:
    data = lines(*(dict(MENTION, id=f"m{i}") for i in range(100)))
    frame = zst_long(data)
    with pytest.raises(zstandard.ZstdError):  # what a default decompressor says
        zstandard.ZstdDecompressor().stream_reader(io.BytesIO(frame)).read()
    (tmp_path / "RC.zst").write_bytes(frame)
    ms, _ = read(tmp_path / "RC.zst")
    assert len(ms) == 100


def test_truncated_zst_keeps_what_was_read_and_says_so(tmp_path: Path) -> None:
    data = lines(*(dict(MENTION, id=f"m{i}", text=f"text {i} " * 50) for i in range(2000)))
    frame = zst_long(data)
    p = tmp_path / "cut.zst"
    p.write_bytes(frame[: len(frame) * 2 // 3])
    ms, rep = read(p)
    assert 0 < len(ms) < 2000
    assert [m.id for m in ms] == [f"dump:m{i}" for i in range(len(ms))]
    assert rep.broken and str(p) in rep.broken[0]
    assert rep.by_reason["truncated or corrupt compressed data"] == 1


def test_truncated_gzip_is_reported(tmp_path: Path) -> None:
    p = tmp_path / "cut.gz"
    p.write_bytes(gzip.compress(lines(*(dict(MENTION, id=f"m{i}") for i in range(500))))[:-20])
    ms, rep = read(p)
    assert len(ms) < 500 and rep.broken


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    data = gzip.compress(lines(MENTION))

    class Stdin:
        buffer = io.BufferedReader(io.BytesIO(data))  # type: ignore[arg-type]

    monkeypatch.setattr(sys, "stdin", Stdin)
    ms, _ = read("-")
    assert [m.text for m in ms] == ["Acme lost my parcel"]


def test_missing_file_and_unknown_format_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such dump file"):
        read(tmp_path / "nope.jsonl")
    (tmp_path / "m.jsonl").write_bytes(lines(MENTION))
    with pytest.raises(UsageError, match="jsonl, pushshift, jetstream, csv"):
        read(tmp_path / "m.jsonl", fmt="xml")


# --------------------------------------------------------------------------- Pushshift

RC = {  # a Pushshift / Arctic Shift comment, trimmed to the fields that matter here
    "all_awardings": [], "author": "throwaway_42", "author_flair_text": None,
    "body": "Acme charged me twice and support hung up on me", "controversiality": 0,
    "created_utc": 1714564800, "distinguished": None, "edited": False, "gilded": 0,
    "id": "l2abcd1", "is_submitter": False, "link_id": "t3_1chxyz0",
    "parent_id": "t1_l2abcc0", "permalink": "/r/acme/comments/1chxyz0/billing/l2abcd1/",
    "retrieved_on": 1714600000, "score": 14, "stickied": False, "subreddit": "acme",
    "subreddit_id": "t5_2qh1i",
}
RS = {
    "author": "[deleted]", "created_utc": "1714564700", "domain": "self.acme",
    "id": "1chxyz0", "is_self": True, "num_comments": 120, "over_18": False,
    "permalink": "/r/acme/comments/1chxyz0/billing/", "score": 512,
    "selftext": "Anyone else double charged?", "subreddit": "acme",
    "title": "Acme billing is broken", "url": "https://www.reddit.com/r/acme/comments/1chxyz0/",
}


def test_pushshift_comments_and_submissions(tmp_path: Path) -> None:
    p = tmp_path / "RC_2024-05.zst"
    removed = dict(RC, id="l2gone", body="[removed]")
    p.write_bytes(zst_long(lines(RS, RC, removed)))
    ms, rep = read(p)
    sub, com = ms
    assert sub.id == "reddit:t3_1chxyz0" and sub.thread_id == sub.id
    assert sub.title == "Acme billing is broken" and sub.text == "Anyone else double charged?"
    assert sub.author is None  # [deleted]
    assert sub.created_at == 1714564700.0  # created_utc as a string
    assert sub.metrics == {"score": 512, "replies": 120}
    assert com.id == "reddit:t1_l2abcd1"
    assert com.thread_id == "reddit:t3_1chxyz0" and com.parent_id == "reddit:t1_l2abcc0"
    assert com.url == "https://www.reddit.com/r/acme/comments/1chxyz0/billing/l2abcd1/"
    assert com.extra == {"subreddit": "acme"} and com.author == "throwaway_42"
    assert rep.ignored == 1 and rep.skipped == 0


def test_pushshift_bad_time_is_skipped(tmp_path: Path) -> None:
    p = tmp_path / "RC.ndjson"
    p.write_bytes(lines(RC, dict(RC, id="x2", created_utc="yesterday")))
    ms, rep = read(p)
    assert len(ms) == 1 and rep.by_reason["bad 'created_utc'"] == 1


# --------------------------------------------------------------------------- Jetstream

DID = "did:plc:eygmaihciaxprqvxpfvl6flk"
ROOT = "at://did:plc:wa7b35aakoll7hugkrjtf3xf/app.bsky.feed.post/3l3pte3p2e325"


def frame(rkey: str, text: str, *, reply: bool = False, created: str = "2024-09-09T19:46:02.102Z",
          operation: str = "create", collection: str = "app.bsky.feed.post") -> dict[str, Any]:
    record: dict[str, Any] = {"$type": collection, "createdAt": created, "langs": ["en"],
                              "text": text}
    if reply:
        record["reply"] = {"parent": {"cid": "bafyparent", "uri": ROOT + "p"},
                           "root": {"cid": "bafyroot", "uri": ROOT}}
    return {"did": DID, "time_us": 1725911162329308, "kind": "commit",
            "commit": {"rev": "3l3qo2vutsw2b", "operation": operation, "collection": collection,
                       "rkey": rkey, "record": record,
                       "cid": "bafyreidwaivazkwu67xztlmuobx35hs2lnfh3kolmgfmucldvhd3sgzcqi"}}


def test_jetstream_posts_only_threads_from_reply_root(tmp_path: Path) -> None:
    like = frame("3l3qo2vuowo2b", "", collection="app.bsky.feed.like")
    identity = {"did": DID, "time_us": 1725516665234703, "kind": "identity",
                "identity": {"did": DID, "handle": "someone.bsky.social", "seq": 1409752997,
                             "time": "2024-09-05T06:11:04.870Z"}}
    delete = {"did": DID, "time_us": 1725911162329308, "kind": "commit",
              "commit": {"rev": "x", "operation": "delete", "collection": "app.bsky.feed.post",
                         "rkey": "3l3old"}}
    p = tmp_path / "jetstream.ndjson"
    p.write_bytes(lines(identity, frame("3kaaa", "acme stole my weekend"), like,
                        frame("3kbbb", "same here", reply=True), delete))
    ms, rep = read(p)
    top, reply = ms
    assert top.id == f"bluesky:at://{DID}/app.bsky.feed.post/3kaaa"
    assert top.thread_id == top.id and top.author == DID and top.lang == "en"
    assert top.url == f"https://bsky.app/profile/{DID}/post/3kaaa"
    assert top.created_at == parse_time("2024-09-09T19:46:02.102Z")
    assert reply.thread_id == f"bluesky:{ROOT}" and reply.parent_id == f"bluesky:{ROOT}p"
    assert rep.ignored == 3 and rep.skipped == 0


def test_jetstream_far_off_created_at_falls_back_to_time_us(tmp_path: Path) -> None:
    p = tmp_path / "j.ndjson"
    p.write_bytes(lines(frame("3kccc", "acme", created="1999-01-01T00:00:00Z")))
    ms, rep = read(p)
    assert ms[0].created_at == pytest.approx(1725911162.329308)
    assert rep.warnings == 1


# --------------------------------------------------------------------------- CSV


def test_csv_with_header_quoted_newlines_and_metrics(tmp_path: Path) -> None:
    p = tmp_path / "export.csv"
    p.write_text(
        "id,created_at,text,author,metrics.likes,score,channel\n"
        'a1,2024-05-01T12:00:00Z,"line one\nline two, with comma",ann,4,2,web\n'
        "a2,2024-05-01T12:01:00Z,short,,,,\n"
        "a3,2024-05-01T12:02:00Z,too,many,cells,1,2,3\n"
        "a4,not a time,bad,,,,\n", encoding="utf-8")
    ms, rep = read(p)
    assert [m.id for m in ms] == ["dump:a1", "dump:a2"]
    assert ms[0].text == "line one\nline two, with comma"
    assert ms[0].metrics == {"likes": 4, "score": 2} and ms[0].extra == {"channel": "web"}
    assert ms[1].author is None
    assert rep.by_reason["wrong number of CSV columns"] == 1
    assert rep.by_reason["bad 'created_at'"] == 1
    assert {line for _, line, _ in rep.examples} == {5, 6}


def test_text_that_is_no_known_format_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("hello world\nthis is not a dump\n")
    with pytest.raises(DumpError) as e:
        read(p)
    assert "missing: id, text, created_at" in str(e.value) and str(p) in str(e.value)


def test_forced_format(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    p.write_bytes(lines(RC))
    ms, _ = read(p, fmt="jsonl")  # read as mention JSONL, RC lacks 'text'
    assert ms == []
    assert read(p, fmt="pushshift")[0][0].id == "reddit:t1_l2abcd1"


# --------------------------------------------------------------------------- prefilter


@pytest.mark.parametrize("helper", [False, True], ids=["in-process", "helper"])
def test_prefilter_keeps_every_line_with_a_term_and_true_line_numbers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, helper: bool) -> None:
    monkeypatch.setattr(dump, "CHUNK", 300)
    objs: list[Any] = []
    for i in range(200):
        word = "ACME" if i % 7 == 0 else "other"
        objs.append(dict(MENTION, id=f"m{i}", text=f"{word} brand {i}"))
    objs[70] = b'{"id": "broken", "text": "acme'  # a bad line that contains the term
    objs[71] = b'{"id": "broken2", "text": "no term'  # a bad line that does not
    p = tmp_path / "m.jsonl"
    p.write_bytes(lines(*objs))
    filtered, rep = read(p, prefilter=["acme"], helper=helper)
    everything, _ = read(p)
    assert [m.id for m in filtered] == [m.id for m in everything if "acme" in m.text.lower()]
    assert rep.lines == 200 and rep.skipped == 1
    assert rep.examples[0][1] == 71


# --------------------------------------------------------------------------- scan helper


def big_dump(tmp_path: Path) -> Path:
    """A Pushshift zst of several blocks, with bad lines that do and do not hold the term."""
    objs: list[Any] = []
    for i in range(12000):
        word = "Acme" if i % 50 == 0 else "other"
        objs.append({"id": f"c{i}", "link_id": f"t3_{i % 97}", "subreddit": "shops",
                     "author": f"u{i % 300}", "created_utc": 1714521600 + i,
                     "body": f"{word} brand, comment number {i} " + "filler words " * 12})
    objs[5000] = b'{"id": "broken", "body": "acme and then the line ends'
    objs[5001] = b'{"id": "broken2", "body": "no term either'
    objs[9000] = {"id": "c9000", "body": "ACME without a time", "link_id": "t3_1",
                  "subreddit": "shops"}
    p = tmp_path / "RC_big.zst"
    p.write_bytes(zst_long(lines(*objs)))
    assert p.stat().st_size > 0 and len(lines(*objs)) > 2 * dump.CHUNK
    return p


def test_the_scan_helper_reads_what_reading_in_process_reads(tmp_path: Path) -> None:
    p = big_dump(tmp_path)
    seen: list[int] = []
    rep_h = SkipReport()
    with_helper = list(read_dump(str(p), prefilter=["acme"], helper=True, report=rep_h,
                                 on_progress=seen.append))
    alone, rep_a = read(p, prefilter=["acme"], helper=False)
    assert [m.to_json() for m in with_helper] == [m.to_json() for m in alone]
    assert len(alone) == 12000 // 50 - 2  # line 5001 is broken, 9001 has no time
    assert rep_h == rep_a
    assert rep_a.lines == 12000 and rep_a.skipped == 2
    assert [line for _, line, _ in rep_a.examples] == [5001, 9001]
    assert seen and seen == sorted(seen) and seen[-1] == p.stat().st_size


def test_the_scan_helper_reports_a_truncated_file_like_reading_in_process(
        tmp_path: Path) -> None:
    p = big_dump(tmp_path)
    cut = tmp_path / "RC_cut.zst"
    cut.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with_helper, rep_h = read(cut, prefilter=["acme"], helper=True)
    alone, rep_a = read(cut, prefilter=["acme"], helper=False)
    assert 0 < len(with_helper) == len(alone) < 239
    assert rep_h == rep_a and rep_h.broken
    assert rep_h.by_reason["truncated or corrupt compressed data"] == 1


def test_when_the_helper_dies_the_rest_is_read_in_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The helper's output stops in the middle (killed, out of memory): nothing is lost
    and nothing is read twice, and the summary says what happened."""
    from connectors import scan

    real = scan.helper_command

    def dies_midway(path: str, fmt: str, terms: list[str]) -> list[str]:
        cmd = " ".join(f"'{a}'" for a in real(path, fmt, terms))
        return ["sh", "-c", f"{cmd} | head -c 9000"]

    monkeypatch.setattr(scan, "helper_command", dies_midway)
    p = big_dump(tmp_path)
    with_helper, rep_h = read(p, prefilter=["acme"], helper=True)
    alone, rep_a = read(p, prefilter=["acme"], helper=False)
    assert [m.id for m in with_helper] == [m.id for m in alone]
    assert rep_h.lines == rep_a.lines and rep_h.skipped == rep_a.skipped
    assert rep_h.by_reason["the scanning helper failed"] == 1


def test_a_csv_is_not_prefiltered_even_with_a_helper(tmp_path: Path) -> None:
    p = tmp_path / "m.csv"
    p.write_text('id,text,created_at\n1,"acme\nsplit over lines",2024-05-01T12:00:00Z\n'
                 "2,other brand,2024-05-01T12:01:00Z\n")
    ms, rep = read(p, prefilter=["acme"], helper=True)
    assert [m.id for m in ms] == ["dump:1", "dump:2"] and rep.lines == 4


def test_line_numbers_count_from_one_in_each_file(tmp_path: Path) -> None:
    from monitor.inputs import DumpInputs

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(lines(MENTION, dict(MENTION, id="m2"), b"{bad"))
    b.write_bytes(lines(dict(MENTION, id="m3"), b"{bad"))
    with DumpInputs([str(a), str(b)]) as inputs:
        got = [m.id for m in inputs]
    assert got == ["dump:m1", "dump:m2", "dump:m3"]
    assert inputs.report.lines == 5
    assert [(path, line) for path, line, _ in inputs.report.examples] == [
        (str(a), 3), (str(b), 2)]


def test_the_helper_command_explains_its_usage() -> None:
    import subprocess

    p = subprocess.run([sys.executable, "-m", "connectors.scan"], capture_output=True,
                       text=True)
    assert p.returncode == 2 and "usage" in p.stderr
