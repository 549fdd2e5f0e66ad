import math

import pytest

from monitor.stats import RollingWindow, SeasonalBaseline, Spread, log_ratio

T0 = 1714521600  # a minute boundary


def test_window_counts_and_expires() -> None:
    w = RollingWindow(600)
    for i in range(10):
        w.add(T0 + i * 60 + 5, f"a{i % 3}", -0.5 if i % 2 else 0.5, 2, 10)
    w.advance(T0 + 600)
    assert (w.n, w.neg, len(w.authors), w.eng, w.reach) == (10, 5, 3, 20, 100)
    w.advance(T0 + 900)  # the first 5 minutes leave the window
    assert w.n == 5 and w.prev_n == 5
    assert sum(w.authors.values()) == 5
    w.advance(T0 + 2000)
    assert w.n == 0 and w.prev_n == 0 and not w.authors and w.csum == 0.0


def test_late_mentions_land_in_their_bucket_or_are_refused() -> None:
    w = RollingWindow(600)
    w.add(T0 + 500, "a", 0.0, 0, 0)
    w.advance(T0 + 540)
    assert w.add(T0 + 100, "b", 0.0, 0, 0)        # late but inside the window
    assert [b[0] for b in w.recent] == [T0 + 60, T0 + 480]
    w.advance(T0 + 1200)
    assert w.n == 0 and w.prev_n == 2
    assert w.add(T0 + 700, "c", 0.0, 0, 0)        # late, in the current span
    assert w.add(T0 + 400, "c", 0.0, 0, 0)        # late, in the span before
    assert w.prev_n == 3 and w.n == 1
    assert not w.add(T0 - 60, "d", 0.0, 0, 0)     # older than both spans: refused


def test_window_state_round_trips() -> None:
    w = RollingWindow(300)
    for i in range(7):
        w.add(T0 + i * 50, f"a{i}", 0.1 * i - 0.3, i, 0)
    w.advance(T0 + 300)
    copy = RollingWindow.from_state(w.state())
    for x in (w, copy):
        x.advance(T0 + 420)
    assert (copy.n, copy.neg, copy.prev_n, copy.authors) == (w.n, w.neg, w.prev_n, w.authors)
    assert math.isclose(copy.csum, w.csum)


def test_baseline_learns_a_daily_rhythm() -> None:
    b = SeasonalBaseline(bin=300, warmup=86400)
    assert b.expected(T0, T0 + 3600) is None  # warming up
    for day in range(6):
        for k in range(288):
            t = T0 + day * 86400 + k * 300
            busy = 12 <= (k * 300 // 3600) < 20
            b.update(t, 20 if busy else 4)
    assert not b.warming_up()
    day7 = T0 + 6 * 86400
    busy_hour = b.expected(day7 + 14 * 3600, day7 + 15 * 3600)
    quiet_hour = b.expected(day7 + 3 * 3600, day7 + 4 * 3600)
    assert busy_hour == pytest.approx(240, rel=0.25)
    assert quiet_hour == pytest.approx(48, rel=0.35)


def test_baseline_does_not_learn_a_protected_spike() -> None:
    b = SeasonalBaseline(bin=300, warmup=3600)
    for k in range(600):
        b.update(T0 + k * 300, 10)
    before = b.level
    for k in range(600, 636):  # three hours at 20x
        b.update(T0 + k * 300, 200, protect=True)
    assert b.level == pytest.approx(before, rel=0.02)


def test_spread_ignores_outliers_and_scores_spikes() -> None:
    s = Spread()
    for i in range(20000):
        s.update(0.1 if i % 2 else -0.1)
    calm = s.sigma()
    for _ in range(50):
        s.update(3.0)  # an outlier of 30 sigmas is not learned
    assert s.sigma() == pytest.approx(calm)
    assert s.z(log_ratio(60, 20)) > 2.5
    assert abs(s.z(log_ratio(20, 20))) < 0.01


def test_top_author_share_kept_as_mentions_come_and_go_equals_a_recount() -> None:
    """The top author's count is kept incrementally (a busy topic has thousands of
    authors): after any mix of mentions, late ones and windows moving on, it is what a
    recount of the window's authors says."""
    import random

    from monitor.stats import RollingWindow

    rnd = random.Random(3)
    w = RollingWindow(600)
    t = 1_714_560_000.0
    for step in range(3000):
        t += rnd.random() * 20
        w.add(t - rnd.choice((0, 0, 0, 400)), f"a{int(rnd.paretovariate(1.2)) % 40}", 0.0,
              0, 0)
        if step % 7 == 0:
            w.advance(t)
        expected = max(w.authors.values()) / w.n if w.n else 0.0
        assert w.top_author_share() == expected, step
    back = RollingWindow.from_state(w.state())
    assert back.top_author_share() == w.top_author_share()
