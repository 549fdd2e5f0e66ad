"""Replay throughput against the inherent cost (VADER), and memory against dump length.

Measures, in one run and on the same texts:

1. a bare vaderSentiment loop over every text of the dump (the inherent cost);
2. ``stormwatch replay DUMP --rules rules/default.yaml`` end to end (its own process:
   start-up, parsing, matching, dedup, sentiment, detection, rules, SQLite storage);
3. the replay's peak memory on the first quarter of the dump and on the whole dump.

The dump is the scenario generator's calm brand conversation scaled up to a brand 145
times the sample's size (mostly unique texts of social-media length, so the sentiment
cache cannot make it trivial). Episodes are left out: scaled by 145, an outage alone
would be 60,000 new threads in an hour, and memory follows such a peak rate (threads
active in the last hour), which would hide whether it grows with the dump's length.

Bar: replay rate >= 70% of the bare VADER rate, and peak memory that does not grow with
the dump's length.

    python benchmarks/throughput.py                 # 1,000,000 mentions
    python benchmarks/throughput.py --mentions 200000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(ROOT, "bench-data")


def make_dump(n: int) -> str:
    """A JSONL dump of about ``n`` mentions (cached in bench-data/)."""
    path = os.path.join(DATA, f"throughput-{n}.jsonl")
    if os.path.exists(path):
        return path
    os.makedirs(DATA, exist_ok=True)
    days = 7
    rate = max(1.0, n / 6500.0)  # calm weeks hold 7,000-9,000 mentions at rate 1
    tmp = path + ".tmp"
    subprocess.run([sys.executable, os.path.join(HERE, "scenarios.py"), "--seed", "42",
                    "--days", str(days), "--rate", f"{rate:.3f}", "--calm", "--out", tmp],
                   check=True)
    # trim to exactly n lines
    with open(tmp, "rb") as src, open(path, "wb") as dst:
        written = 0
        for line in src:
            if written >= n:
                break
            dst.write(line)
            written += 1
    if written < n:
        sys.exit(f"the generator made only {written:,} mentions; raise the rate estimate")
    os.remove(tmp)
    for extra in (tmp[:-len(".jsonl.tmp")] + ".labels.json", tmp + ".labels.json"):
        if os.path.exists(extra):
            os.remove(extra)
    return path


def head(path: str, n: int) -> str:
    out = f"{path}.head{n}"
    if not os.path.exists(out):
        with open(path, "rb") as src, open(out, "wb") as dst:
            for i, line in enumerate(src):
                if i >= n:
                    break
                dst.write(line)
    return out


def bare_vader(path: str) -> tuple[int, float]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    texts = []
    with open(path, "rb") as f:
        for line in f:
            d = orjson.loads(line)
            title = d.get("title")
            texts.append(f"{title}. {d['text']}" if title else d["text"])
    analyzer = SentimentIntensityAnalyzer()
    t0 = time.perf_counter()
    for text in texts:
        analyzer.polarity_scores(text)
    return len(texts), time.perf_counter() - t0


def replay(path: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one `stormwatch replay`: its process and its
    sentiment worker together."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "monitor", "replay", path, "--rules",
                          os.path.join(ROOT, "rules", "default.yaml"), "--quiet"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    peak = [0.0]
    stop = False

    def watch() -> None:  # the worker is a grandchild: sample the process tree's RSS
        while not stop:
            peak[0] = max(peak[0], tree_rss_mib(p.pid))
            time.sleep(0.2)

    import threading

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    _, err = p.communicate()
    stop = True
    t.join()
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"replay failed ({p.returncode}): {err.decode()[-2000:]}")
    return secs, peak[0]


def tree_rss_mib(pid: int) -> float:
    """Resident set of ``pid`` and its descendants together (MiB), from /proc."""
    total = 0.0
    todo = [pid]
    while todo:
        cur = todo.pop()
        try:
            with open(f"/proc/{cur}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024.0
            with open(f"/proc/{cur}/task/{cur}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mentions", type=int, default=1_000_000)
    a = ap.parse_args()
    dump = make_dump(a.mentions)
    quarter = head(dump, a.mentions // 4)
    q_secs, q_rss = replay(quarter)
    n, v_secs = bare_vader(dump)
    r_secs, r_rss = replay(dump)
    v_rate, r_rate = n / v_secs, n / r_secs
    print(f"mentions                     {n:,}")
    print(f"bare vaderSentiment loop     {v_secs:8.1f} s  {v_rate:9,.0f} mentions/s")
    print(f"stormwatch replay (all)      {r_secs:8.1f} s  {r_rate:9,.0f} mentions/s")
    print(f"replay / bare VADER rate     {r_rate / v_rate:8.2f}   (bar: >= 0.70)")
    print(f"peak RSS, first quarter      {q_rss:8.0f} MiB ({a.mentions // 4:,} mentions, "
          f"{q_secs:.1f} s)")
    print(f"peak RSS, whole dump         {r_rss:8.0f} MiB ({n:,} mentions)")
    print(f"memory growth quarter->all   {r_rss / q_rss:8.2f}x  (flat: ~1.0)")


if __name__ == "__main__":
    main()
