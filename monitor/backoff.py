"""How long to wait before trying again: one rule for sources and deliveries alike."""

from __future__ import annotations

import random
from collections.abc import Callable

FIRST = 5.0      # seconds before the first retry
MAX = 900.0      # never more than 15 minutes between tries


def backoff(failures_in_a_row: int, interval: float, retry_after: float | None,
            rnd: Callable[[], float] = random.random, first: float = FIRST) -> float:
    """Seconds until the next try: doubling from ``first``, capped at ``interval`` (a
    source's polling interval; and 15 min), never sooner than the service asked
    (``retry_after``), with +-20% jitter so that retries do not arrive in step.

    >>> [round(backoff(n, 900, None, rnd=lambda: 0.5)) for n in (1, 2, 3)]
    [5, 10, 20]
    """
    step = min(first * 2 ** max(0, failures_in_a_row - 1), max(interval, first), MAX)
    return max(step * (0.8 + 0.4 * rnd()), retry_after or 0.0)
