"""What one delivery attempt came to: sent, worth retrying, or hopeless until a setting
changes. The outbox decides what happens next from this alone."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    outcome: str                     # "sent" | "retry" | "permanent"
    detail: str = ""                 # what the service said, in a few words
    retry_after: float | None = None  # seconds the service asked us to wait
    ref: str | None = None           # the service's handle on the message (Slack ts...)
    setting: str | None = None       # for a permanent failure: what to fix

    @classmethod
    def sent(cls, detail: str = "sent", ref: str | None = None) -> Result:
        return cls("sent", detail, ref=ref)

    @classmethod
    def retry(cls, detail: str, after: float | None = None) -> Result:
        return cls("retry", detail, retry_after=after)

    @classmethod
    def permanent(cls, detail: str, setting: str | None = None) -> Result:
        return cls("permanent", detail, setting=setting)
