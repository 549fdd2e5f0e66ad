"""Email: a notice as a multipart message (plain text and HTML), sent over SMTP with
STARTTLS or implicit TLS and authentication.

The subject and every header are one line (:func:`~monitor.notify.text.one_line`: no
CR/LF can start a header of its own); the HTML part escapes everything it shows, and
links only to http(s) addresses. The Message-ID is derived from the delivery's
idempotency key, so a retried message is the same message; escalations and resolutions
(every later message about the incident) carry ``In-Reply-To`` and ``References`` to
the first message, so mail clients thread
them.

SMTP answers: 4xx (421, 451...) and lost connections are retried; 5xx is permanent (550:
a recipient refused; 535: the credentials).
"""

from __future__ import annotations

import hashlib
import html
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from monitor.models import iso
from monitor.notify.notice import Notice
from monitor.notify.result import Result
from monitor.notify.text import excerpt, one_line, safe_url

POST_CHARS = 500


def message_id(key: str) -> str:
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@stormwatch>"


SUBJECT = {"page": "", "escalation": "Escalated: ", "update": "Another thread: ",
           "resolved": "Resolved: ", "reminder": "Still open: ",
           "unacknowledged": "Not acknowledged: "}


def compose(notice: Notice, *, sender: str, to: list[str], key: str, now: float,
            thread: str | None) -> EmailMessage:
    """The message: a plain text part and an HTML alternative."""
    ev = notice.event
    where = notice.where
    msg = EmailMessage()
    if notice.kind == "resolved":
        subject = f"[RESOLVED] incident #{notice.incident} on {ev.topic} is back to normal"
    else:
        subject = (f"[{ev.severity.upper()}] {SUBJECT[notice.kind]}{ev.summary or ev.rule} "
                   f"(incident #{notice.incident})")
    msg["Subject"] = one_line(subject, 200)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(now)
    msg["Message-ID"] = message_id(key)
    if thread:
        msg["In-Reply-To"] = thread
        msg["References"] = thread
    s = ev.signals
    numbers = [f"Mentions ({s.get('window', '')}): {s.get('mentions', '?')}"
               + (f" vs {float(s['expected']):.0f} expected ({float(s.get('ratio') or 0):.1f}x)"
                  if s.get("expected") is not None else ""),
               f"Negative: {round(100 * float(s.get('negative_share') or 0))}%",
               f"People: {s.get('unique_authors', '?')}"]
    chart = notice.chart()
    if chart:
        numbers.append(f"Mentions, {chart}")
    posts = [] if notice.kind == "resolved" else list(ev.top_posts[:3])
    others = [f"{a['rule']} on {a['scope']} {one_line(a['key'], 200)}: {a['state']}, "
              f"{a['severity']}" for a in notice.others[:10]]
    lines = [_headline(notice),
             f"{ev.event} on {where}, {iso(ev.at)}, incident #{notice.incident}", "",
             *numbers, ""]
    for p in posts:
        lines.append(f"- \"{excerpt(p.get('text'), POST_CHARS)}\" "
                     f"({one_line(p.get('author') or 'someone', 60)})")
        url = safe_url(p.get("url"))
        if url:
            lines.append(f"  {url}")
    if ev.playbook and notice.kind != "resolved":
        lines += ["", "Playbook:", ev.playbook.strip()]
    if others:
        lines += ["", "Also in this incident:", *(f"- {o}" for o in others)]
    lines += ["", f"Rule {ev.rule}, {ev.scope} {one_line(ev.key, 200)}"]
    msg.set_content("\n".join(lines))
    msg.add_alternative(_html(notice, numbers, posts, others), subtype="html")
    return msg


def _headline(notice: Notice) -> str:
    ev = notice.event
    if notice.kind == "resolved":
        return f"Incident #{notice.incident} on {one_line(ev.topic, 100)} is back to normal"
    return one_line(ev.summary or ev.rule, 300)


def _html(notice: Notice, numbers: list[str], posts: list[dict[str, Any]],
          others: list[str]) -> str:
    ev = notice.event
    e = html.escape
    items = []
    for p in posts:
        url = safe_url(p.get("url"))
        link = f' <a href="{e(url)}">open the post</a>' if url else ""
        items.append(f"<li>&ldquo;{e(excerpt(p.get('text'), POST_CHARS))}&rdquo; &mdash; "
                     f"{e(one_line(p.get('author') or 'someone', 60))}{link}</li>")
    playbook = (f"<h3>Playbook</h3><p>{e(ev.playbook.strip())}</p>"
                if ev.playbook and notice.kind != "resolved" else "")
    also = ("<h3>Also in this incident</h3><ul>" + "".join(f"<li>{e(o)}</li>" for o in others)
            + "</ul>" if others else "")
    return (f"<html><body><h2>{e(_headline(notice))}</h2>"
            f"<p>{e(ev.event)} on {e(notice.where)}, {e(iso(ev.at))}, "
            f"incident #{notice.incident}</p>"
            f"<p>{'<br>'.join(e(n) for n in numbers)}</p>"
            f"{'<ul>' + ''.join(items) + '</ul>' if items else ''}{playbook}{also}"
            f"<p><small>Rule {e(ev.rule)}, {e(ev.scope)} {e(one_line(ev.key, 200))}"
            f"</small></p></body></html>")


class EmailChannel:
    def __init__(self, *, host: str, port: int, sender: str, to: list[str],
                 security: str = "starttls", username: str | None = None,
                 password: str | None = None, timeout: float = 15.0,
                 context: ssl.SSLContext | None = None, setting: str = "notify.email") -> None:
        self.host, self.port, self.sender, self.to = host, port, sender, list(to)
        self.security, self.username, self._password = security, username, password
        self.timeout, self.setting = timeout, setting
        self.context = context or ssl.create_default_context()

    def deliver(self, notice: Notice, thread: str | None, now: float, key: str) -> Result:
        msg = compose(notice, sender=self.sender, to=self.to, key=key, now=now, thread=thread)
        try:
            smtp: smtplib.SMTP
            if self.security == "tls":
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                        context=self.context)
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.security == "starttls":
                    smtp.starttls(context=self.context)
                if self.username:
                    self._login(smtp)
                refused = smtp.send_message(msg)
        except smtplib.SMTPAuthenticationError as e:
            return Result.permanent(f"the mail server refused the login ({e.smtp_code})",
                                    f"{self.setting}.username / password")
        except smtplib.SMTPRecipientsRefused as e:
            codes = sorted({code for code, _ in e.recipients.values()})
            if all(code >= 500 for code in codes):
                return Result.permanent(f"the mail server refused every recipient {codes}",
                                        f"{self.setting}.to")
            return Result.retry(f"the mail server deferred the recipients {codes}")
        except smtplib.SMTPResponseException as e:
            said = f"the mail server answered {e.smtp_code}"
            if 400 <= e.smtp_code < 500:
                return Result.retry(said)
            return Result.permanent(said, self.setting)
        except (smtplib.SMTPException, OSError) as e:
            return Result.retry(f"cannot send mail: {type(e).__name__}")
        if refused:
            return Result.sent(f"sent; refused for {sorted(refused)}", ref=msg["Message-ID"])
        return Result.sent("sent", ref=msg["Message-ID"])

    def _login(self, smtp: smtplib.SMTP) -> None:
        """PLAIN when offered (over TLS), else whatever smtplib prefers: one refusal is
        enough to know the credentials are wrong."""
        smtp.ehlo_or_helo_if_needed()
        if "plain" in smtp.esmtp_features.get("auth", "").lower().split():
            smtp.user, smtp.password = self.username or "", self._password or ""
            smtp.auth("PLAIN", smtp.auth_plain)
        else:
            smtp.login(self.username or "", self._password or "")
