"""Detection on generated scenarios: every incident paged in time, no page on decoys or calm.

For each seed: generate a week for the brand (``benchmarks/scenarios.py``), replay it
through the real command line (``python -m monitor replay DUMP --config
samples/acme.yaml --rules RULES --json``), and judge the alert events against the labels:

- a page is a ``fired`` or ``escalated`` event of severity ``warning`` or ``critical``;
- each must-page incident (viral complaint: 60 min, outage: 30 min) needs a page between
  its start and its deadline: a topic page, or a thread page on the incident's thread;
- a page on a decoy's thread, or any page that is not within a must-page incident (from
  its start to two hours after its end), is a false page.

Bar: all incidents caught in time, zero false pages, over every seed. Exit 0 only then.

    python benchmarks/detection.py                    # seeds 1-30
    python benchmarks/detection.py --seeds 1-100 --rules rules/default.yaml
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from scenarios import generate, seeds_from, write  # noqa: E402

PAGE = {"warning", "critical"}
GRACE = 2 * 3600  # pages this long after a must-page incident's end still belong to it


def parse_time(s: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


@dataclass
class Verdict:
    seed: int
    latency: dict[str, float | None] = field(default_factory=dict)  # kind -> minutes
    false_pages: list[str] = field(default_factory=list)
    pages: int = 0

    @property
    def ok(self) -> bool:
        return not self.false_pages and all(v is not None for v in self.latency.values())


def judge(events: list[dict[str, Any]], labels: dict[str, Any], seed: int) -> Verdict:
    """Score one replay's alert events against its labels (see the module doc)."""
    v = Verdict(seed)
    incidents = [dict(i, t0=parse_time(i["start"]), t1=parse_time(i["end"]))
                 for i in labels["incidents"]]
    must = [i for i in incidents if i["must_page"]]
    for inc in must:
        v.latency[inc["kind"]] = None
    for ev in events:
        if ev["event"] not in ("fired", "escalated") or ev["severity"] not in PAGE:
            continue
        v.pages += 1
        at = parse_time(ev["at"])
        decoy = next((i for i in incidents if not i["must_page"] and i.get("thread")
                      and ev["scope"] == "thread" and ev["key"] == i["thread"]), None)
        if decoy is not None:
            v.false_pages.append(f"{ev['rule']} on the {decoy['kind']} decoy at {ev['at']}")
            continue
        owner = None
        for inc in must:
            if inc["t0"] <= at <= inc["t1"] + GRACE and (
                    ev["scope"] == "topic" or inc.get("thread") in (None, ev["key"])):
                owner = inc
                break
        if owner is None:
            inside = next((i["kind"] for i in incidents
                           if i["t0"] <= at <= i["t1"] + GRACE), "calm time")
            v.false_pages.append(f"{ev['rule']} {ev['severity']} {ev['scope']} {ev['key']} "
                                 f"at {ev['at']} ({inside})")
            continue
        minutes = (at - owner["t0"]) / 60
        if minutes <= owner["deadline_minutes"] and v.latency[owner["kind"]] is None:
            v.latency[owner["kind"]] = minutes
    return v


def run_seed(seed: int, rules: str, config: str, days: int) -> Verdict:
    mentions, labels = generate(seed, days)
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, f"seed{seed}.jsonl")
        write(mentions, labels, dump)
        proc = subprocess.run(
            [sys.executable, "-m", "monitor", "replay", dump, "--config", config,
             "--rules", rules, "--json", "--quiet"],
            capture_output=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed}: replay failed ({proc.returncode}):\n"
                         f"{proc.stderr.decode()[-2000:]}")
    events = [orjson.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return judge(events, labels, seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1-30", help="e.g. 1-30 or 1,5,9")
    ap.add_argument("--rules", default=os.path.join(ROOT, "rules", "default.yaml"))
    ap.add_argument("--config", default=os.path.join(ROOT, "samples", "acme.yaml"))
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    a = ap.parse_args()
    seeds = seeds_from(a.seeds)
    with ThreadPoolExecutor(a.jobs) as pool:
        verdicts = list(pool.map(lambda s: run_seed(s, a.rules, a.config, a.days), seeds))
    kinds = sorted({k for v in verdicts for k in v.latency})
    for v in verdicts:
        lat = "  ".join(f"{k} {'MISSED' if v.latency[k] is None else f'{v.latency[k]:.0f} min'}"
                        for k in kinds)
        print(f"seed {v.seed:>3}: {'ok  ' if v.ok else 'FAIL'}  {lat}  pages {v.pages}"
              + "".join(f"\n           false page: {f}" for f in v.false_pages))
    print()
    for k in kinds:
        got = [v.latency[k] for v in verdicts if v.latency[k] is not None]
        line = f"{k}: caught in time {len(got)}/{len(verdicts)}"
        if got:
            line += (f", minutes to first page: median {statistics.median(got):.0f}, "
                     f"max {max(got):.0f}")
        print(line)
    false = sum(len(v.false_pages) for v in verdicts)
    print(f"false pages (decoys and calm time): {false} over {len(verdicts)} seeded weeks")
    ok = all(v.ok for v in verdicts)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
