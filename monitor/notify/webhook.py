"""A generic webhook: the notice as JSON, for anything that is not Slack or email.

``POST`` with ``Content-Type: application/json``; the body is the alert event's
``replay --json`` contract object plus ``summary``, ``playbook``, ``top_posts``,
``kind`` (page, escalation, update, resolved, reminder, unacknowledged), ``incident``
(its number), ``others`` (the incident's other alerts), ``series`` (mentions per 15
minutes over the last six hours) and ``delivery`` (the
idempotency key, also sent as the ``Idempotency-Key`` header: a receiver that sees it
twice has seen the same delivery twice). With a ``secret``, ``X-Stormwatch-Signature:
sha256=<hex>`` is the HMAC-SHA256 of the exact body bytes, so the receiver can tell the
message came from here and was not altered.
"""

from __future__ import annotations

import hashlib
import hmac

import httpx
import orjson

from connectors.base import retry_after_seconds
from monitor.notify.notice import Notice
from monitor.notify.result import Result

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
SIGNATURE = "X-Stormwatch-Signature"


def body(notice: Notice, key: str) -> bytes:
    ev = notice.event
    others = [{k: a[k] for k in ("rule", "scope", "key", "topic", "state", "severity")}
              for a in notice.others]
    return orjson.dumps({**ev.contract_json(), "summary": ev.summary,
                         "playbook": ev.playbook, "top_posts": list(ev.top_posts),
                         "step": ev.step, "kind": notice.kind, "incident": notice.incident,
                         "others": others, "series": list(notice.series), "delivery": key})


def signature(secret: str, payload: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


class Webhook:
    def __init__(self, url: str, secret: str | None = None,
                 client: httpx.Client | None = None, *, setting: str = "notify.webhook"
                 ) -> None:
        self.url, self.setting = url, setting
        self._secret = secret
        self.client = client or httpx.Client(timeout=TIMEOUT)

    def deliver(self, notice: Notice, thread: str | None, now: float, key: str) -> Result:
        payload = body(notice, key)
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        if self._secret:
            headers[SIGNATURE] = signature(self._secret, payload)
        try:
            r = self.client.post(self.url, content=payload, headers=headers)
        except httpx.TimeoutException:
            return Result.retry("the webhook timed out")
        except httpx.HTTPError as e:
            return Result.retry(f"cannot reach the webhook: {type(e).__name__}")
        said = f"the webhook answered {r.status_code}"
        if 200 <= r.status_code < 300:
            return Result.sent(said)
        if r.status_code == 429:
            return Result.retry(said, retry_after_seconds(r.headers.get("retry-after"), now))
        if r.status_code == 408 or r.status_code >= 500:
            return Result.retry(said)
        return Result.permanent(said, f"{self.setting}.url")
