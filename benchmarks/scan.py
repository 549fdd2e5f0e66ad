"""Scanning a Pushshift .zst dump with --match, against `zstd -dc FILE | grep -ci TERM`.

Generates Pushshift-shaped comment dumps (RC_ NDJSON with the usual keys, compressed with
a 2 GiB window like the real monthly dumps, 100 comments a second of event time like all
of Reddit) in which the brand appears on a given share of lines, then times, in the same
run, best of three each, alternating:

- ``zstd -dc FILE | grep -ci TERM`` (decompress and count, nothing else);
- ``stormwatch replay FILE --match TERM --rules rules/default.yaml`` (decompress, find,
  parse, match, score, detect and store every mention of the brand);
- a bare vaderSentiment loop over the texts of the matching lines (the inherent cost of
  scoring what was found, which grows with the share, not with the file).

Bar: the replay within 2x of the zstd|grep pipeline, at a brand's share of all Reddit.
0.1% of all comments (about 8,000 a day) is already a very big brand; 1% (80,000 a day)
is a mega-topic, where scoring the matches alone costs about as much as the whole
zstd|grep pipeline and the bar does not apply (the throughput benchmark covers that).

    python benchmarks/scan.py                                # 1,000,000 lines
    python benchmarks/scan.py --lines 3000000 --shares 0.001
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time

import orjson
import zstandard

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(ROOT, "bench-data")
WORDS = (
    "the", "this", "that", "game", "patch", "update", "server", "people", "just", "really",
    "think", "would", "like", "because", "about", "their", "there", "time", "when", "what",
    "which", "good", "bad", "never", "always", "again", "weekend", "price", "store", "order",
    "support", "delivery", "thanks", "lol", "honestly", "pretty",
)


PER_SECOND = 100  # comments a second: all of Reddit, as in the monthly RC_ dumps


def make_dump(lines: int, term: str, share: float) -> str:
    """The dump for these settings, generated once into bench-data/."""
    path = os.path.join(DATA, f"RC_scan-{lines}-{PER_SECOND}ps-{share:g}.zst")
    if os.path.exists(path):
        return path
    os.makedirs(DATA, exist_ok=True)
    rnd = random.Random(7)
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=31)
    cctx = zstandard.ZstdCompressor(compression_params=params)
    t0 = 1714521600
    with open(path + ".tmp", "wb") as raw, cctx.stream_writer(raw) as out:
        for i in range(lines):
            words = rnd.choices(WORDS, k=rnd.randint(8, 40))
            if rnd.random() < share:
                words.insert(rnd.randrange(len(words)), rnd.choice(
                    (term, term.capitalize(), f"@{term}", term.upper())))
            sub = rnd.choice(("gaming", "pcmasterrace", "buildapc", "sales", "AskReddit"))
            link = f"t3_{rnd.randrange(36 ** 6):06x}"
            cid = f"{i:07x}"
            out.write(orjson.dumps({
                "all_awardings": [], "archived": False, "associated_award": None,
                "author": f"user_{rnd.randrange(200000)}", "author_flair_css_class": None,
                "author_flair_text": None, "author_fullname": f"t2_{rnd.randrange(10**8):x}",
                "body": " ".join(words), "controversiality": 0,
                "created_utc": t0 + i // PER_SECOND, "distinguished": None, "edited": False,
                "gilded": 0, "id": cid, "is_submitter": False, "link_id": link,
                "locked": False, "parent_id": link, "permalink":
                f"/r/{sub}/comments/{link[3:]}/_/{cid}/",
                "retrieved_on": t0 + i // PER_SECOND + 3600,
                "score": rnd.randint(-5, 50), "send_replies": True, "stickied": False,
                "subreddit": sub, "subreddit_id": "t5_2qh03", "subreddit_type": "public",
                "total_awards_received": 0}) + b"\n")
    os.rename(path + ".tmp", path)
    return path


def timed(cmd: str | list[str], shell: bool = False) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, shell=shell, capture_output=True, text=True, cwd=ROOT)
    secs = time.perf_counter() - t0
    if p.returncode not in (0, 1) or (not shell and p.returncode):
        sys.exit(f"{cmd} failed ({p.returncode}): {p.stderr[-2000:]}")
    return secs, p.stdout.strip() or p.stderr.strip().splitlines()[0]


def vader_secs(dump: str, term: str) -> float:
    """Seconds for a bare VADER loop over the texts of the lines that mention ``term``."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from connectors.dump import read_dump

    texts = [m.text for m in read_dump(dump, prefilter=[term], helper=False)
             if term in m.text.lower()]
    score = SentimentIntensityAnalyzer().polarity_scores
    t0 = time.perf_counter()
    for t in texts:
        score(t)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--term", default="acme")
    ap.add_argument("--shares", default="0.001,0.01",
                    help="shares of lines mentioning the term, comma-separated; the bar "
                         "is judged on the first")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    sys.path.insert(0, ROOT)
    for n, share in enumerate(float(x) for x in a.shares.split(",")):
        dump = make_dump(a.lines, a.term, share)
        size = os.path.getsize(dump)
        # best of three for each side, alternating, so both see the same machine
        g_runs, r_runs = [], []
        for _ in range(a.repeat):
            g_secs, g_out = timed(f"zstd -dc --long=31 {dump} | grep -ci {a.term}",
                                  shell=True)
            g_runs.append(g_secs)
            r_secs, _ = timed([sys.executable, "-m", "monitor", "replay", dump, "--match",
                               a.term, "--rules", os.path.join(ROOT, "rules", "default.yaml"),
                               "--quiet"])
            r_runs.append(r_secs)
        g_secs, r_secs = min(g_runs), min(r_runs)
        v_secs = vader_secs(dump, a.term)
        bar = "bar: <= 2.0" if n == 0 else "no bar at this share"
        print(f"dump                          {os.path.basename(dump)} ({size / 2**20:.0f} MiB "
              f"compressed, {a.lines:,} lines, {share:.1%} mention {a.term})")
        print(f"zstd -dc | grep -ci {a.term:<8s}  {g_secs:8.2f} s  ({g_out} matching lines)")
        print(f"stormwatch replay --match     {r_secs:8.2f} s")
        print(f"bare VADER over the matches   {v_secs:8.2f} s  (inherent, in the replay)")
        print(f"replay / zstd|grep            {r_secs / g_secs:8.2f}x  ({bar})")
        print()


if __name__ == "__main__":
    main()
