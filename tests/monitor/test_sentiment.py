"""The sentiment scorer: VADER's compound score, cached, bounded in time and memory."""

from __future__ import annotations

import tracemalloc

from monitor.sentiment import MAX_CHARS, SentimentScorer


def test_scores_tone_and_empty_text() -> None:
    s = SentimentScorer()
    assert s.score("I love it, wonderful service") > 0.5
    assert s.score("this is terrible, I am furious") < -0.5
    assert s.score("") == 0.0


def test_a_cached_score_equals_a_fresh_one_and_eviction_forgets() -> None:
    texts = [f"the support was awful {i} times" for i in range(5)]
    fresh = [SentimentScorer().score(t) for t in texts]
    s = SentimentScorer(cache_size=3)
    assert [s.score(t) for t in texts] == fresh
    assert [s.score(t) for t in reversed(texts)] == list(reversed(fresh))


def test_only_the_opening_is_scored() -> None:
    s = SentimentScorer()
    head = "I love this brand, great support! " * (MAX_CHARS // 34 + 1)
    assert s.score(head + "terrible awful hate " * 1000) == s.score(head)


def test_cache_memory_does_not_grow_with_the_posts_size() -> None:
    """Hostile posts of 100 KB each: the cache keeps a digest, not the text."""
    s = SentimentScorer(cache_size=1000)
    s.score("warm up the lexicon")
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(200):  # each post is gone once scored, unless the cache holds it
            s.score(f"{i} " + "x" * 100_000)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(st.size_diff for st in after.compare_to(before, "filename"))
    assert grown < 200_000, f"the cache kept {grown:,} bytes for 200 posts"
