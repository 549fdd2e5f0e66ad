"""Engine invariants: event time, idempotence, restart equivalence, bounded state."""

import random
from collections.abc import Callable

import orjson
import pytest

from monitor.config import default_rules_path
from monitor.engine import Engine
from monitor.models import Mention
from monitor.pipeline import Pipeline, RunContext
from monitor.rules import RuleSet, load_rules
from monitor.sentiment import SentimentScorer
from monitor.topics import TopicMatcher
from tests.conftest import T0

NEG = ["acme lost my order, terrible support", "acme is down again, awful",
       "worst experience ever with acme", "acme charged me twice, disgusting"]
CALM = ["bought acme shoes today", "acme store opens at 9", "love my acme kettle",
        "acme delivery was slow, annoying"]


def stream(seed: int = 1, days: float = 2.5) -> list[Mention]:
    """Background chatter with one viral negative thread and one outage burst."""
    rnd = random.Random(seed)
    out: list[Mention] = []
    n = 0
    for minute in range(int(days * 1440)):
        for _ in range(rnd.choice((0, 1, 1, 2))):
            n += 1
            out.append(Mention(id=f"dump:b{n}", text=rnd.choice(CALM),
                               author=f"u{rnd.randrange(3000)}",
                               created_at=T0 + minute * 60 + rnd.random() * 60))
    viral = T0 + 1.6 * 86400
    for i in range(300):
        out.append(Mention(id=f"dump:v{i}", text=rnd.choice(NEG), author=f"v{i}",
                           thread_id="dump:v0", created_at=viral + i * 30))
    outage = T0 + 2.2 * 86400
    for i in range(600):
        out.append(Mention(id=f"dump:o{i}", text=rnd.choice(NEG), author=f"o{i}",
                           created_at=outage + i * 3))
    out.sort(key=lambda m: m.created_at)
    return out


def rules() -> RuleSet:
    return load_rules([default_rules_path()])


def run(ms: list[Mention], batch: int = 500, engine: Engine | None = None
        ) -> tuple[Engine, list[tuple[str, str, str, float]]]:
    matcher = TopicMatcher([])
    engine = engine or Engine(rules(), matcher.names)
    p = Pipeline(matcher, engine, SentimentScorer(), None)
    ctx = RunContext()
    for i in range(0, len(ms), batch):
        p.run(ctx, [Mention(**{f: getattr(m, f) for f in m.__slots__}) for m in ms[i:i + batch]])
    return engine, [(e.event, e.rule, e.key, e.at) for e in ctx.events]


@pytest.fixture(scope="module")
def baseline_events() -> list[tuple[str, str, str, float]]:
    return run(stream())[1]


def test_the_incidents_page(baseline_events: list[tuple[str, str, str, float]]) -> None:
    fired = {(r, k) for e, r, k, _ in baseline_events if e == "fired"}
    assert ("negative-thread-taking-off", "dump:v0") in fired
    assert ("topic-negative-spike", "all") in fired


def test_batch_size_does_not_matter(baseline_events: list[tuple[str, str, str, float]]) -> None:
    assert run(stream(), batch=1)[1] == baseline_events
    assert run(stream(), batch=7919)[1] == baseline_events


def test_duplicates_change_nothing(baseline_events: list[tuple[str, str, str, float]]) -> None:
    ms = stream()
    doubled = sorted(ms + ms[::3], key=lambda m: m.created_at)
    engine, events = run(doubled)
    assert events == baseline_events
    assert engine.stats.mentions == len(ms)


def test_restart_from_saved_state_is_seamless(
        baseline_events: list[tuple[str, str, str, float]]) -> None:
    ms = stream()
    # cuts all over the stream: mid-minute, with threads waiting for their boundary
    for cut in [len(ms) * k // 13 for k in range(1, 13)] + [len(ms) - 500]:
        first, ev1 = run(ms[:cut])
        saved = orjson.loads(orjson.dumps(first.state()))  # what the store keeps
        second = Engine(rules(), ("all",))
        second.restore(saved)
        _, ev2 = run(ms[cut:], engine=second)
        assert ev1 + ev2 == baseline_events, f"cut at {cut}"


def test_a_thread_seen_once_before_a_restart_grows_after_it(
        baseline_events: list[tuple[str, str, str, float]]) -> None:
    """The viral thread's first post is saved as a one-mention thread; the rest of the
    thread after a restart fires exactly as without the restart."""
    ms = stream()
    cut = next(i for i, m in enumerate(ms) if m.id == "dump:v0") + 1
    first, ev1 = run(ms[:cut])
    assert "dump:v0" in first.seeds and "dump:v0" not in first.threads
    second = Engine(rules(), ("all",))
    second.restore(orjson.loads(orjson.dumps(first.state())))
    _, ev2 = run(ms[cut:], engine=second)
    assert ev1 + ev2 == baseline_events
    assert any(key == "dump:v0" for _, _, key, _ in ev2)


def test_state_stays_bounded_over_a_long_stream() -> None:
    ms = stream(seed=3, days=4)
    engine, _ = run(ms)
    assert engine.stats.threads_evicted > 0.9 * len(ms)
    assert len(engine.threads) + len(engine.seeds) < 400
    assert len(engine._recent_ids) < 3 * 4 * 60 * 2   # a few hours of ids, not four days


def test_late_mentions_count_where_they_belong(write: Callable[[str, str], str]) -> None:
    rs = load_rules([write("r.yaml", """
        rules:
          - name: busy-thread
            scope: thread
            window: 30m
            when: {mentions: ">= 5"}
        """)])
    engine = Engine(rs, ("all",))
    events = []
    for i in range(4):
        m = Mention(id=f"dump:{i}", text="x", created_at=T0 + i * 60, thread_id="dump:0",
                    topics=("all",), compound=0.0)
        events += engine.ingest(m)
    late = Mention(id="dump:late", text="x", created_at=T0 + 30, thread_id="dump:0",
                   topics=("all",), compound=0.0)
    engine.ingest(Mention(id="dump:9", text="x", created_at=T0 + 600, thread_id="dump:x",
                          topics=("all",), compound=0.0))
    events += engine.ingest(late)
    events += engine.advance(T0 + 660)
    assert engine.stats.late == 1
    assert [(e.event, e.signals["mentions"]) for e in events] == [("fired", 5)]


def test_refreshed_engagement_counts_at_the_current_minute_without_a_mention() -> None:
    """A single post whose likes take off is seen as engagement on its (seeded) thread and
    its topic, at the minute of the refresh; the mention count does not change."""
    ms = [Mention(id="bluesky:at://a/p/1", text="acme lost my parcel", created_at=T0 + 10,
                  author="ann", metrics={"likes": 3}),
          Mention(id="dump:x", text="acme is fine", created_at=T0 + 600, author="bob")]
    engine, _ = run(ms)
    assert "bluesky:at://a/p/1" in engine.seeds and "bluesky:at://a/p/1" not in engine.threads
    topic = engine.topics["all"]
    window = next(w for (_, fkey), w in topic.windows.items() if not fkey)
    before = (window.n, window.eng)
    engine.add_engagement("bluesky:at://a/p/1", ["all"], 500)
    engine.add_engagement("bluesky:at://a/p/1", ["all"], -20)  # unlikes are not "growth"
    assert (window.n, window.eng) == (before[0], before[1] + 500)
    thread = engine.threads["bluesky:at://a/p/1"]  # promoted from its seed
    tw = next(w for (_, fkey), w in thread.windows.items() if not fkey)
    assert tw.n == 1 and tw.eng == 3 + 500
    restored = Engine(rules(), ("all",))
    restored.restore(orjson.loads(orjson.dumps(engine.state())))
    rw = next(w for (_, fkey), w in restored.threads["bluesky:at://a/p/1"].windows.items()
              if not fkey)
    assert rw.eng == 503  # saved and restored with the rest


def test_the_mention_that_makes_a_rule_hold_fires_it_at_once() -> None:
    """Not at the next minute boundary: the 25th angry reply from the 25th person fires
    the thread rule at that reply's own time, within the same ingest call."""
    engine = Engine(rules(), TopicMatcher([]).names)
    p = Pipeline(TopicMatcher([]), engine, SentimentScorer(), None)
    start = T0 + 3600 + 5.0
    fired_by = None
    for i in range(40):
        ctx = RunContext()
        p.run(ctx, [Mention(id=f"dump:r{i}", text=NEG[i % 4], author=f"p{i}",
                            thread_id="dump:r0", created_at=start + 20 * i)])
        if any(e.event == "fired" for e in ctx.events):
            fired_by = i
            ev = ctx.events[0]
            break
    assert fired_by == 24  # the 25th mention: the rule asks for >= 25
    assert ev.at == start + 20 * 24 and ev.at % 60 != 0
    assert ev.signals["mentions"] == 25


def test_a_prompt_look_never_resolves_nor_goes_pending(write: Callable[[str, str], str]) -> None:
    """Between boundaries only fire and escalate happen: a rule with ``for`` goes pending
    at the boundary, and the alert resolves at a boundary too."""
    path = write("r.yaml", """
rules:
  - name: burst
    scope: thread
    window: 10m
    for: 2m
    when: {mentions: ">= 5"}
    severity: warning
    resolve_after: 5m
""")
    engine = Engine(load_rules([path]), ("all",))
    events = []
    for i in range(20):  # 20 mentions, one every 15 s, from 00:00:10
        m = Mention(id=f"dump:b{i}", text="hello", thread_id="dump:b0", author=f"a{i}",
                    created_at=T0 + 10 + 15 * i, topics=("all",), compound=0.0)
        events += engine.ingest(m)
    events += engine.advance(T0 + 3 * 3600)
    kinds = [(e.event, e.at) for e in events]
    assert [k for k, _ in kinds] == ["fired", "resolved"]
    # pending from the boundary after the 5th mention (00:01:10 -> 00:02:00, not from
    # 00:01:10, which would fire it at the look of 00:03:10), so it fires at 00:04:00
    assert kinds[0][1] == T0 + 240
    assert kinds[1][1] % 60 == 0


def test_a_restart_between_a_mention_and_its_minute_boundary_changes_nothing(
        tmp_path: object) -> None:
    """A thread that got mentions since the last boundary is evaluated at the next one
    (a rule with ``for`` goes pending there); cut in between, the restored engine must
    still evaluate it there, and fire when the uncut one does."""
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "for.yaml"
    path.write_text("rules:\n  - name: busy\n    scope: thread\n    window: 10m\n"
                    "    for: 2m\n    when: {mentions: '>= 5'}\n")
    rs = load_rules([str(path)])
    ms = [Mention(id=f"dump:t{i}", text="acme", author=f"a{i}", thread_id="dump:t0",
                  created_at=T0 + 10 * i, topics=("all",), compound=0.0) for i in range(6)]
    ms += [Mention(id=f"dump:x{i}", text="acme", author=f"x{i}", created_at=T0 + 60 * i,
                   topics=("all",), compound=0.0) for i in range(2, 8)]
    ms.sort(key=lambda m: m.created_at)

    def events(engine: Engine, part: list[Mention]) -> list[tuple[str, float]]:
        out = []
        for m in part:
            out += [(e.event, e.at) for e in engine.ingest(m)]
        return out

    whole = events(Engine(rs, ("all",)), ms)
    assert whole and whole[0][0] == "fired"
    cut = 6  # the thread's six mentions, all before the first boundary
    first = Engine(rs, ("all",))
    before = events(first, ms[:cut])
    second = Engine(rs, ("all",))
    second.restore(orjson.loads(orjson.dumps(first.state())))
    assert before + events(second, ms[cut:]) == whole
