"""Alert fatigue: how many messages a person receives per incident, on the scenarios.

For each seed: generate a week for the brand (``benchmarks/scenarios.py``), replay it
through the real command line with ``--notify`` (``python -m monitor replay DUMP --config
CFG --notify --db ...``) to two channels on loopback, with the default route (warning
and above, grouping, inhibition, folding): a local Slack incoming webhook (HTTP) and a
local SMTP server (aiosmtpd). Then count, per incident, the alert events behind it (what
a naive notifier would send) and the messages each channel actually received (read off
the messages themselves: each names its incident).

An incident "escalates twice" when, after its first page-level event, two more
page-level events come (a new alert joining it, or a higher severity step); the bar is
at most three messages per channel for every such incident that resolves.

    python benchmarks/fatigue.py                    # seeds 1-30
    python benchmarks/fatigue.py --seeds 7 --show out/   # the sample week; save what
                                                         # a person receives
"""

from __future__ import annotations

import argparse
import email
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from email import policy
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from scenarios import generate, seeds_from, write  # noqa: E402

from monitor.store import Store  # noqa: E402
from tests.fakes.slack import FakeSlack  # noqa: E402

PAGE = {"warning", "critical"}
INCIDENT = re.compile(r"incident #(\d+)")


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def slack_incident(m: dict[str, Any]) -> int:
    why = m["attachments"][0]["blocks"][-1]["elements"][0]["text"]
    return int(INCIDENT.search(why).group(1))  # type: ignore[union-attr]


def mail_incident(m: email.message.EmailMessage) -> int:
    return int(INCIDENT.search(str(m["Subject"])).group(1))  # type: ignore[union-attr]


def run_seed(seed: int, days: int, show: str | None) -> list[dict[str, Any]]:
    from aiosmtpd.controller import Controller

    mentions, labels = generate(seed, days)
    inbox = Inbox()
    port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        with FakeSlack() as slack, tempfile.TemporaryDirectory() as tmp:
            dump = os.path.join(tmp, f"seed{seed}.jsonl")
            write(mentions, labels, dump)
            cfg = os.path.join(tmp, "notify.yaml")
            with open(os.path.join(ROOT, "samples", "acme.yaml")) as f:
                base = f.read().replace("../rules", os.path.join(ROOT, "rules"))
            with open(cfg, "w") as f:
                f.write(base + f"""notify:
  channels:
    care: {{type: slack, webhook_url: "{slack.url}"}}
    pr:
      type: email
      host: 127.0.0.1
      port: {port}
      security: none
      sender: stormwatch@acme.example
      to: [pr@acme.example]
""")
            db = f"sqlite:///{tmp}/n.db"
            proc = subprocess.run(
                [sys.executable, "-m", "monitor", "replay", dump, "--config", cfg,
                 "--notify", "--db", db, "--quiet"],
                capture_output=True, cwd=ROOT, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"seed {seed}: replay failed:\n{proc.stderr.decode()[-2000:]}")
            store = Store.open(db)
            try:
                events = store.list_events()
                alerts = {a["id"]: a for a in store.list_alerts(limit=10_000)}
            finally:
                store.close()
            slack_msgs = list(slack.messages)
    finally:
        smtp.stop()
    by_incident: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        inc = alerts[e["alert_id"]]["incident_id"]
        if inc is not None:
            by_incident[inc].append(e)
    slack_n = Counter(slack_incident(m) for m in slack_msgs)
    mail_n = Counter(mail_incident(m) for m in inbox.messages)
    out = []
    for inc, evs in sorted(by_incident.items()):
        paging = [e for e in evs if e["event"] in ("fired", "escalated")
                  and e["severity"] in PAGE]
        out.append({"seed": seed, "incident": inc, "events": len(evs),
                    "escalations": max(0, len(paging) - 1),
                    "resolved": all(alerts[e["alert_id"]]["state"] == "resolved"
                                    for e in evs),
                    "slack": slack_n.get(inc, 0), "email": mail_n.get(inc, 0),
                    "events_list": [f"{e['event']} {e['rule']} {e['severity']}"
                                    for e in evs]})
    if show:
        os.makedirs(show, exist_ok=True)
        with open(os.path.join(show, f"seed{seed}-slack.json"), "w") as f:
            json.dump(slack_msgs, f, indent=1, ensure_ascii=False)
        for i, m in enumerate(inbox.messages):
            with open(os.path.join(show, f"seed{seed}-mail{i + 1}.eml"), "wb") as f:
                f.write(m.as_bytes(policy=policy.SMTP))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1-30")
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--show", help="save the Slack messages and emails of the seeds here")
    a = ap.parse_args()
    rows = [r for seed in seeds_from(a.seeds) for r in run_seed(seed, a.days, a.show)]
    paged = [r for r in rows if r["slack"] or r["email"]]
    twice = [r for r in paged if r["escalations"] >= 2 and r["resolved"]]
    worst = max((max(r["slack"], r["email"]) for r in twice), default=0)
    events = sum(r["events"] for r in paged)
    print(f"seeds                                  {a.seeds}")
    print(f"incidents that paged                   {len(paged)}")
    print(f"alert events behind them               {events}")
    print(f"Slack messages                         {sum(r['slack'] for r in paged)}")
    print(f"emails                                 {sum(r['email'] for r in paged)}")
    dist = Counter(r["slack"] for r in paged)
    print("messages per incident (Slack)          "
          + ", ".join(f"{n}: {dist[n]}" for n in sorted(dist)))
    print(f"incidents escalating twice, resolved   {len(twice)}")
    print(f"most messages for one of those         {worst}  (bar: <= 3 per channel)")
    for r in twice[:3]:
        print(f"  e.g. seed {r['seed']} incident #{r['incident']}: "
              f"{'; '.join(r['events_list'])} -> {r['slack']} Slack, {r['email']} email")
    if twice and worst <= 3:
        print("PASS")
    else:
        print("FAIL" if twice else "NO INCIDENT ESCALATED TWICE: nothing judged")
        sys.exit(1)


if __name__ == "__main__":
    main()
