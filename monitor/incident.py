"""The incident record for a post-crisis review (``stormwatch report ALERT_ID``).

From the database alone: the incident's timeline (first mention, each detection, each
message sent and to whom, acknowledgement, escalations, resolution), time to
acknowledge and to resolve, the numbers at each step, the top posts, the rules and
playbooks that fired, and the chart of the topic around it. Markdown (for a wiki or a
ticket) and a self-contained HTML page; text from social media is escaped in both.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from monitor.errors import NotFound
from monitor.models import iso

NO_MESSAGES = ("No message was sent about it (no channel was configured, it was silenced, "
               "or it was replayed without --notify).")
NUMBERS = ("mentions", "expected", "ratio", "negative_share", "unique_authors", "reach")


@dataclass
class Step:
    at: float
    what: str
    detail: str = ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _numbers(signals: dict[str, Any]) -> str:
    parts = []
    for k in NUMBERS:
        v = signals.get(k)
        if v is None or (k == "reach" and not v):
            continue
        if k == "negative_share":
            parts.append(f"{round(100 * float(v))}% negative")
        elif k == "expected":
            parts.append(f"{float(v):.0f} expected")
        elif k == "ratio":
            parts.append(f"{float(v):.1f}x")
        else:
            parts.append(f"{k.replace('_', ' ')} {v}")
    return ", ".join(parts)


@dataclass
class Record:
    incident: dict[str, Any]
    alerts: list[dict[str, Any]]       # each with its events
    messages: list[dict[str, Any]]     # with their attempts
    steps: list[Step]
    first_mention: float | None
    time_to_ack: float | None
    time_to_resolve: float | None
    posts: list[dict[str, Any]]
    playbooks: dict[str, str]


def build(s: Any, store: Any, alert_id: int) -> Record:
    rec = store.alert_record(alert_id)
    if rec is None:
        raise NotFound(f"no alert {alert_id}", hint="see: stormwatch alerts list")
    incident = rec["incident"]
    if incident is None:  # recorded without notifications: the alert alone
        incident = {"id": None, "group_key": rec["topic"], "state": rec["state"],
                    "severity": rec["severity"], "opened_at": rec["opened_at"],
                    "resolved_at": rec["resolved_at"], "acked_at": None, "acked_by": None,
                    "ack_note": None}
        members = [rec]
    else:
        members = [store.alert_record(a["id"]) for a in rec["incident_alerts"]]
    steps: list[Step] = []
    posts: dict[str, dict[str, Any]] = {}
    playbooks: dict[str, str] = {}
    first = None
    for a in members:
        where = f"{a['scope']} {a['key']}"
        for e in a["events"]:
            label = {"fired": "detected", "escalated": "escalated",
                     "resolved": "resolved"}[e["event"]]
            steps.append(Step(e["at"], f"{label}: {a['rule']} ({e['severity']}) on {where}",
                              e["summary"] + (f" ({_numbers(e['signals'])})"
                                              if e["event"] != "resolved" else "")))
            for p in e["top_posts"]:
                posts.setdefault(p.get("id") or p.get("url") or p.get("text", ""), p)
            if e["playbook"]:
                playbooks[a["rule"]] = e["playbook"]
        began = store.first_mention(thread=a["key"] if a["scope"] == "thread" else None,
                                    topic=a["topic"], before=a["opened_at"],
                                    window=_window(a["events"]))
        if began is not None and (first is None or began < first):
            first = began
    if first is not None:
        steps.append(Step(first, "first mention", "the earliest mention of the scope that "
                          "rose to the first alert"))
    messages = rec["messages"]
    first_sent = None
    for m in messages:
        if m["sent_at"] is not None:
            steps.append(Step(m["sent_at"], f"{m['kind']} sent to {m['channel']}",
                              f"{len(m['tries'])} attempt(s)"))
            if first_sent is None or m["sent_at"] < first_sent:
                first_sent = m["sent_at"]
        elif m["status"] == "failed":
            steps.append(Step(m["tries"][-1]["at"] if m["tries"] else m["created_at"],
                              f"{m['kind']} to {m['channel']} FAILED", m["last_error"] or ""))
    if incident.get("acked_at"):
        steps.append(Step(incident["acked_at"], f"acknowledged by {incident['acked_by']}",
                          incident.get("ack_note") or ""))
    steps.sort(key=lambda st: st.at)
    ack = (incident["acked_at"] - first_sent) if incident.get("acked_at") and first_sent \
        else None
    resolved = incident.get("resolved_at")
    return Record(incident, members, messages, steps, first, ack,
                  (resolved - incident["opened_at"]) if resolved else None,
                  list(posts.values())[:8], playbooks)


def _window(events: list[dict[str, Any]]) -> float:
    from monitor.rules import parse_duration

    for e in events:
        w = e["signals"].get("window")
        if w:
            try:
                return float(parse_duration(w))
            except ValueError:
                pass
    return 3600.0


def markdown(r: Record, chart: str | None) -> str:
    inc = r.incident
    title = f"Incident #{inc['id']} on {inc['group_key']}" if inc["id"] else \
        f"Alert on {inc['group_key']}"
    lines = [f"# {title}", "",
             f"- state: {inc['state']}, highest severity {inc['severity']}",
             f"- opened {iso(inc['opened_at'])}"
             + (f", resolved {iso(inc['resolved_at'])}" if inc.get("resolved_at") else ""),
             f"- time to acknowledge (from the first message): {_duration(r.time_to_ack)}",
             f"- time to resolve (from the first alert): {_duration(r.time_to_resolve)}", ""]
    if chart:
        lines += [f"![{title}]({chart})", ""]
    lines += ["## Timeline", ""]
    if not r.messages:
        lines += [NO_MESSAGES, ""]
    lines += ["| at (UTC) | what | detail |", "|---|---|---|"]
    for st in r.steps:
        lines.append(f"| {iso(st.at)} | {_md(st.what)} | {_md(st.detail)} |")
    lines += ["", "## Top posts", ""]
    for p in r.posts:
        url = p.get("url")
        link = f" ([post]({_md_url(url)}))" if url and str(url).startswith("http") else ""
        lines.append(f"- {_md(str(p.get('text', ''))[:280])} — {_md(str(p.get('author')))}"
                     f"{link}")
    lines += ["", "## Rules and playbooks", ""]
    for rule, playbook in r.playbooks.items():
        lines += [f"### {_md(rule)}", "", playbook.strip(), ""]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """Inert in Markdown: no HTML, no links, no table breaks, one line."""
    out = " ".join(str(text).split())
    for ch in "\\`*_[]<>|#!":
        out = out.replace(ch, "\\" + ch)
    return out


def _md_url(url: str) -> str:
    from monitor.notify.text import safe_url

    return (safe_url(url) or "").replace("(", "%28").replace(")", "%29")


def html_page(r: Record, png: bytes | None) -> str:
    import base64

    from monitor.notify.text import safe_url

    e = html.escape
    inc = r.incident
    title = f"Incident #{inc['id']} on {inc['group_key']}" if inc["id"] else \
        f"Alert on {inc['group_key']}"
    steps = "".join(f"<tr><td>{e(iso(st.at))}</td><td>{e(st.what)}</td><td>{e(st.detail)}"
                    "</td></tr>" for st in r.steps)
    posts = "".join(
        f"<li>{e(str(p.get('text', ''))[:280])} &mdash; {e(str(p.get('author')))}"
        + (f" <a href='{e(u)}'>post</a>" if (u := safe_url(p.get("url"))) else "") + "</li>"
        for p in r.posts)
    books = "".join(f"<h3>{e(rule)}</h3><p>{e(pb.strip())}</p>"
                    for rule, pb in r.playbooks.items())
    img = (f"<img alt='{e(title)}' src='data:image/png;base64,"
           f"{base64.b64encode(png).decode()}'>" if png else "")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{e(title)}</title><style>body{{font-family:system-ui,sans-serif;"
        "margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:.9em}"
        "td,th{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;"
        "vertical-align:top}img{max-width:100%}</style></head><body>"
        f"<h1>{e(title)}</h1><ul><li>state: {e(inc['state'])}, highest severity "
        f"{e(inc['severity'])}</li><li>opened {e(iso(inc['opened_at']))}"
        + (f", resolved {e(iso(inc['resolved_at']))}" if inc.get("resolved_at") else "")
        + f"</li><li>time to acknowledge: {e(_duration(r.time_to_ack))}</li>"
        f"<li>time to resolve: {e(_duration(r.time_to_resolve))}</li></ul>{img}"
        "<h2>Timeline</h2>" + ("" if r.messages else f"<p>{e(NO_MESSAGES)}</p>")
        + "<table><tr><th>at (UTC)</th><th>what</th><th>detail</th></tr>"
        f"{steps}</table><h2>Top posts</h2><ul>{posts}</ul>"
        f"<h2>Rules and playbooks</h2>{books}</body></html>")


def write_record(s: Any, store: Any, alert_id: int, base: str) -> list[str]:
    """``base``.md, ``base``.html and the chart ``base``.png."""
    import os

    from monitor import report as rep

    r = build(s, store, alert_id)
    inc = r.incident
    start = min([st.at for st in r.steps] + [inc["opened_at"]]) - 6 * 3600
    end = (inc.get("resolved_at") or max(st.at for st in r.steps)) + 2 * 3600
    t = rep.from_store(s, store, topic=inc["group_key"], since=start, until=end)
    t.title = (f"incident #{inc['id']} on {inc['group_key']}" if inc["id"]
               else f"topic {inc['group_key']}")
    png = rep.render_png(t)
    with open(base + ".png", "wb") as f:
        f.write(png)
    with open(base + ".md", "w", encoding="utf-8") as f:
        f.write(markdown(r, os.path.basename(base) + ".png"))
    with open(base + ".html", "w", encoding="utf-8") as f:
        f.write(html_page(r, png))
    return [base + ".md", base + ".html", base + ".png"]

