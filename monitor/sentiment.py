"""Sentiment: VADER's compound score in [-1, 1] per mention.

VADER is the inherent cost of the pipeline (about 100 us for a tweet-sized post), so the
scorer caches by text (cross-posts, retweets and bots repeat themselves) and scores at
most the first ``MAX_CHARS`` characters of a post: the opening of a 100 KB rant carries
its tone, and a hostile megabyte must not stall the engine. The cache keeps a 16-byte
digest of what was scored, not the text: its memory is bounded by its entries, whatever
the posts' size.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

MAX_CHARS = 5000
CACHE_SIZE = 50_000


class SentimentScorer:
    """``score(text) -> compound``; deterministic, cached.

    >>> SentimentScorer().score("I love it") > 0.05
    True
    """

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self._polarity: Any = None  # VADER's lexicon loads on first use (a replay scores
        self._cache: OrderedDict[bytes, float] = OrderedDict()  # in a worker instead)
        self._cache_size = cache_size

    def score(self, text: str) -> float:
        text = text[:MAX_CHARS]
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        cache = self._cache
        value = cache.get(key)
        if value is not None:
            cache.move_to_end(key)
            return value
        if self._polarity is None:
            self._polarity = SentimentIntensityAnalyzer().polarity_scores
        value = float(self._polarity(text)["compound"]) if text else 0.0
        cache[key] = value
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return value


def sentiment_text(title: str | None, text: str) -> str:
    """What is scored: the title and the text together (a submission's title carries tone)."""
    return f"{title}. {text}" if title and title not in text else text


_worker_scorer: SentimentScorer | None = None


def _init_worker() -> None:
    global _worker_scorer
    _worker_scorer = SentimentScorer()


def _score_all(texts: Sequence[str]) -> list[float]:
    assert _worker_scorer is not None
    score = _worker_scorer.score
    return [score(t) for t in texts]


class SentimentPool:
    """Scores batches in a worker process, so a replay's parsing, detection and storage
    overlap with VADER instead of waiting for it. Same scores, same order; if the worker
    dies, the batch is scored here instead.

    ``SentimentPool.usable()`` is False on a single core, where a worker only adds cost.
    """

    def __init__(self, fallback: SentimentScorer) -> None:
        self._pool = ProcessPoolExecutor(max_workers=1, initializer=_init_worker)
        self._fallback = fallback  # the caller's own scorer, used if the worker dies

    @staticmethod
    def usable() -> bool:
        return (os.cpu_count() or 1) >= 2

    def submit(self, texts: list[str]) -> tuple[list[str], Future[list[float]] | None]:
        try:
            return texts, self._pool.submit(_score_all, texts)
        except (BrokenProcessPool, RuntimeError):
            return texts, None

    def result(self, job: tuple[list[str], Future[list[float]] | None]) -> list[float]:
        texts, future = job
        if future is not None:
            try:
                return future.result()
            except BrokenProcessPool:
                pass
        return [self._fallback.score(t) for t in texts]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
