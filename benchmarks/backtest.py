"""Backtest cost: one pass over a dump with two rules files against one replay.

The dump is the throughput benchmark's (calm chatter of a brand 145 times the sample's
size, 1,000,000 mentions by default, cached in bench-data/). In one run, alternating
(each measured twice, the faster kept, so that a busy moment of the machine does not
decide):

1. ``stormwatch replay DUMP --rules rules/default.yaml`` (parse, match, dedup,
   sentiment, detection, storage in a temporary SQLite database);
2. ``stormwatch backtest DUMP --labels L --rules rules/default.yaml --against STRICT``
   (the same pass, both rule sets evaluated on every mention, judged against labels;
   STRICT is the shipped rules with every ``mentions`` threshold doubled).

Bar: backtest / replay < 1.3.

    python benchmarks/backtest.py
    python benchmarks/backtest.py --mentions 200000
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from throughput import make_dump  # noqa: E402

RULES = os.path.join(ROOT, "rules", "default.yaml")
LABELS = """incidents:
  - {name: a-calm-afternoon, topic: all, start: "2024-05-08T14:00:00Z",
     end: "2024-05-08T16:00:00Z"}
"""


def timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "monitor", *args, "--quiet"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
                       check=False)
    secs = time.perf_counter() - t0
    if p.returncode not in (0, 1):  # a backtest that misses the label exits 1: fine here
        sys.exit(f"{args[0]} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
    return secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mentions", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    dump = make_dump(a.mentions)
    with tempfile.TemporaryDirectory(prefix="stormwatch-backtest-bench-") as tmp:
        strict = os.path.join(tmp, "strict.yaml")
        with open(RULES) as f:
            text = f.read()
        with open(strict, "w") as f:
            f.write(re.sub(r'mentions: ">= (\d+)"',
                           lambda m: f'mentions: ">= {2 * int(m.group(1))}"', text))
        labels = os.path.join(tmp, "labels.yaml")
        with open(labels, "w") as f:
            f.write(LABELS)
        replays, backtests = [], []
        for _ in range(a.rounds):
            replays.append(timed(["replay", dump, "--rules", RULES]))
            backtests.append(timed(["backtest", dump, "--labels", labels, "--rules", RULES,
                                    "--against", strict]))
    r, b = min(replays), min(backtests)
    print(f"mentions                          {a.mentions:,}")
    print(f"replay, one rules file            {r:8.1f} s   (runs: "
          f"{', '.join(f'{x:.1f}' for x in replays)})")
    print(f"backtest, two rules files         {b:8.1f} s   (runs: "
          f"{', '.join(f'{x:.1f}' for x in backtests)})")
    print(f"backtest / replay                 {b / r:8.2f}   (bar: < 1.3)")


if __name__ == "__main__":
    main()
