"""Sentiment: VADER's compound score in [-1, 1] per mention.

VADER is the inherent cost of the pipeline (about 100 us for a tweet-sized post), so the
scorer caches by text (cross-posts, retweets and bots repeat themselves) and scores at
most the first ``MAX_CHARS`` characters of a post: the opening of a 100 KB rant carries
its tone, and a hostile megabyte must not stall the engine.
"""

from __future__ import annotations

from collections import OrderedDict

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

MAX_CHARS = 5000
CACHE_SIZE = 50_000


class SentimentScorer:
    """``score(text) -> compound``; deterministic, cached.

    >>> SentimentScorer().score("I love it") > 0.05
    True
    """

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self._analyzer = SentimentIntensityAnalyzer()
        self._polarity = self._analyzer.polarity_scores
        self._cache: OrderedDict[str, float] = OrderedDict()
        self._cache_size = cache_size

    def score(self, text: str) -> float:
        cache = self._cache
        value = cache.get(text)
        if value is not None:
            cache.move_to_end(text)
            return value
        value = float(self._polarity(text[:MAX_CHARS])["compound"]) if text else 0.0
        cache[text] = value
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return value
