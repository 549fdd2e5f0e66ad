"""Email through a real SMTP server in-process (aiosmtpd) with STARTTLS (a trustme CA)
and authentication: the MIME that arrives, threading headers, hostile text, and what
each SMTP answer means."""

from __future__ import annotations

import email
import socket
import ssl
from collections.abc import Iterator
from email import policy
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from monitor.models import AlertEvent
from monitor.notify.email import EmailChannel, message_id
from monitor.notify.notice import Notice

T = 1_714_560_000.0


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[Any] = []
        self.answer = "250 OK"
        self.rcpt_answer = "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          options: Any) -> str:
        if self.rcpt_answer.startswith("250"):
            envelope.rcpt_tos.append(address)
        return self.rcpt_answer

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.answer.startswith("250"):
            self.envelopes.append(envelope)
            self.messages.append(email.message_from_bytes(envelope.content,
                                                          policy=policy.default))
        return self.answer


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"alerts" and \
        auth_data.password == b"s3cret"
    return AuthResult(success=ok, handled=False)  # not handled: the server answers 535


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.fixture
def smtp(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> Iterator[tuple[Inbox, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=tls[0],
                            require_starttls=True, authenticator=authenticate,
                            auth_require_tls=True)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def channel(port: int, client: ssl.SSLContext, **kw: Any) -> EmailChannel:
    return EmailChannel(host="127.0.0.1", port=port, sender="stormwatch@acme.example",
                        to=["care@acme.example", "pr@acme.example"], username="alerts",
                        password=kw.pop("password", "s3cret"), context=client, **kw)


def ev(kind: str = "fired", **kw: Any) -> Notice:
    """A page (or, for a ``resolved`` event, a resolution) about a hostile event."""
    base: dict[str, Any] = dict(
        event=kind, rule="negative-thread-taking-off", severity="warning", scope="thread",
        key="reddit:t3_1abc", topic="acme", at=T,
        signals={"window": "30m", "mentions": 31, "unique_authors": 28,
                 "negative_share": 0.71},
        summary="Negative thread taking off:\r\nBcc: everyone@evil.example",
        playbook="Reply publicly within 15 minutes",
        top_posts=({"author": "mallory\r\nX-Evil: 1", "why": "thread start",
                    "text": "<script>alert(1)</script> <a href='https://evil'>x</a> "
                            "\u202eesrever " + "y" * 100_000,
                    "url": "https://www.reddit.com/r/acme/comments/1abc/\"><script>"},
                   {"author": "bob", "text": "same", "url": "javascript:alert(1)"}))
    base.update(kw)
    return Notice("resolved" if kind == "resolved" else "page", AlertEvent(**base), incident=1)


def test_a_multipart_message_arrives_over_starttls_with_auth(
        smtp: tuple[Inbox, int], tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    inbox, port = smtp
    got = channel(port, tls[1]).deliver(ev(), None, T, "1:fired:0:email")
    assert got.outcome == "sent" and got.ref == message_id("1:fired:0:email")
    [msg] = inbox.messages
    assert inbox.envelopes[0].rcpt_tos == ["care@acme.example", "pr@acme.example"]
    assert msg["Subject"].strip() == "[WARNING] Negative thread taking off: Bcc: " \
        "everyone@evil.example (incident #1)"
    assert msg["Bcc"] is None and msg["X-Evil"] is None  # no header injection
    assert msg["Message-ID"] == got.ref and msg["In-Reply-To"] is None
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    page = msg.get_body(("html",)).get_content()
    assert "Mentions (30m): 31" in text and "Negative: 71%" in text
    assert "(mallory X-Evil: 1)" in text and "[U+202E]esrever" in text
    assert len(text) < 3000  # a 100 KB post is an excerpt
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<a href='https://evil'>" not in page
    assert 'href="https://www.reddit.com/r/acme/comments/1abc/%22%3E%3Cscript%3E"' in page
    assert "javascript:" not in page and "javascript:" not in text


def test_updates_thread_under_the_first_message(
        smtp: tuple[Inbox, int], tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    inbox, port = smtp
    first = channel(port, tls[1]).deliver(ev(), None, T, "1:fired:0:email")
    channel(port, tls[1]).deliver(ev("resolved"), first.ref, T + 600, "1:resolved:0:email")
    reply = inbox.messages[1]
    assert reply["In-Reply-To"] == first.ref and reply["References"] == first.ref
    assert "same" not in reply.get_body(("plain",)).get_content()  # no posts on resolution


@pytest.mark.parametrize("where,answer,outcome,setting", [
    ("data", "451 4.3.0 Try again later", "retry", None),
    ("data", "421 4.3.2 Service shutting down", "retry", None),
    ("data", "554 5.6.0 Message rejected", "permanent", "notify.email"),
    ("rcpt", "550 5.1.1 No such user", "permanent", "notify.email.to"),
    ("rcpt", "450 4.2.1 Mailbox busy", "retry", None),
])
def test_smtp_answers(smtp: tuple[Inbox, int], tls: tuple[ssl.SSLContext, ssl.SSLContext],
                      where: str, answer: str, outcome: str, setting: str | None) -> None:
    inbox, port = smtp
    if where == "data":
        inbox.answer = answer
    else:
        inbox.rcpt_answer = answer
    got = channel(port, tls[1]).deliver(ev(), None, T, "k")
    assert (got.outcome, got.setting) == (outcome, setting)


def test_bad_credentials_are_permanent_and_never_shown(
        smtp: tuple[Inbox, int], tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    _, port = smtp
    bad = channel(port, tls[1], password="wrong").deliver(ev(), None, T, "k")
    assert bad.outcome == "permanent" and "535" in bad.detail
    assert bad.setting == "notify.email.username / password" and "wrong" not in bad.detail


def test_a_dead_server_is_retried(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    refused = channel(dead, tls[1]).deliver(ev(), None, T, "k")
    assert refused.outcome == "retry" and "ConnectionRefusedError" in refused.detail
