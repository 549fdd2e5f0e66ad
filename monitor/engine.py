"""The event-time engine: mentions in, alert events out. Pure: no clock, no I/O.

``ingest(mention)`` takes a mention that already has its topics and sentiment; before
counting it, the engine evaluates every minute boundary that event time has passed.
``advance(t)`` moves event time forward without a mention (the live daemon's tick, or
the end of a replay). At each boundary it closes the topics' baseline bins, evaluates
topic rules for every topic, thread rules for threads that changed or have an open
alert, and evicts idle threads, so memory stays flat however long the stream.

Between boundaries a scope that has grown is looked at promptly, as the minute's end
would see it if nothing more came: the mention that makes a rule hold fires it (or
escalates it) at once, not up to a minute later. A look comes after every mention
while a scope is small, then after every ``n/20`` (at most ``LOOK_EVERY_MAX``) as it
grows, so a busy topic costs little. Only fire and escalate happen then (see
``monitor.alerts``); the looks depend on the mentions alone, so live and replay agree.

Duplicates (same source-qualified id within the horizon that windows can still see)
are refused: ``is_duplicate`` answers before the costly sentiment is computed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from monitor.alerts import AlertBook
from monitor.detect import TEXT_KEEP, Scope
from monitor.models import AlertEvent, Mention
from monitor.rules import Rule, RuleSet
from monitor.stats import BUCKET, SeasonalBaseline

MAX_GAP = 2 * 86400     # a longer silence in the stream is jumped, not walked minute by minute
EVICT_EVERY = 600       # seconds of event time between sweeps of idle threads
LOOK_EVERY_MAX = 8      # a growing scope is looked at again after at most this many mentions


@dataclass
class EngineStats:
    mentions: int = 0
    duplicates: int = 0
    late: int = 0
    threads_evicted: int = 0


class Engine:
    def __init__(self, rules: RuleSet, topics: tuple[str, ...], *, baseline_bin: int = 300,
                 baseline_warmup: int = 86400, owns: frozenset[str] | None = None,
                 dedup: bool = True) -> None:
        """``owns``: the topics this engine watches (one live partition); None: all. A
        mention counts in each owned topic it is in; its thread is watched by the engine
        that owns its first topic, so one engine per topic together see what one engine
        for all would (a reply naming only another brand than its thread's excepted).
        ``dedup=False``: the caller guarantees each mention comes once (the live feed:
        stored once, read once), so no ids are remembered (nor saved with the state)."""
        self.rules = rules
        self.owns = owns
        self.dedup = dedup
        self.topic_names = topics
        self.topic_rules = rules.for_scope("topic")
        self.thread_rules = rules.for_scope("thread")
        self.filters = rules.filters()
        self._topic_spans = sorted({(r.window, r.filter_key) for r in self.topic_rules})
        self._thread_spans = sorted({(r.window, r.filter_key) for r in self.thread_rules})
        self._thread_min = {r.name: _min_mentions(r) for r in self.thread_rules}
        self._thread_floor = min(self._thread_min.values(), default=0)
        self._topic_min = {r.name: _min_mentions(r) for r in self.topic_rules}
        self._seed_threads = not self.thread_rules or self._thread_floor >= 2
        # thread id -> its only mention so far: (ts, author, compound, engagement, reach,
        # matched filters, evidence post, topic, is the root)
        self.seeds: dict[str, tuple[Any, ...]] = {}
        longest_thread = max((r.window for r in self.thread_rules), default=3600)
        longest = max((r.window for r in rules.rules), default=3600)
        self.thread_idle = 2 * longest_thread + BUCKET
        self.dedup_horizon = 2 * longest + BUCKET
        self._baseline_args = (baseline_bin, baseline_warmup)
        self.now = 0.0
        self.topics: dict[str, Scope] = {}
        self.threads: dict[str, Scope] = {}
        self.book = AlertBook()
        self.dirty: set[str] = set()
        self._recent_ids: dict[str, float] = {}
        self._recent_order: deque[tuple[float, str]] = deque()
        self._last_evict = 0.0
        self.stats = EngineStats()

    # -- input -----------------------------------------------------------------------
    def is_duplicate(self, mention_id: str) -> bool:
        """True when this id was already counted (within the dedup horizon)."""
        if mention_id in self._recent_ids:
            self.stats.duplicates += 1
            return True
        return False

    def ingest(self, m: Mention) -> list[AlertEvent]:
        """Count one new mention (topics and compound set); returns events it caused."""
        ts = m.created_at
        events = self.advance(ts) if ts >= self.now + BUCKET or not self.now else []
        if ts < self.now:
            self.stats.late += 1
        if self.dedup:
            self._recent_ids[m.id] = ts
            self._recent_order.append((ts, m.id))
        self.stats.mentions += 1
        compound = m.compound or 0.0
        author = m.author or m.id
        eng = m.engagement
        reach = m.author_followers or 0
        text = m.text
        matched = ({k for k, rx in self.filters.items() if rx.search(text)}
                   if self.filters else ())
        post = (ts, m.id, m.author, text[:TEXT_KEEP], m.url, compound, eng)
        tid = m.thread_id
        topics = m.topics
        owns = self.owns
        if owns is not None:
            topics = tuple(t for t in topics if t in owns)
            if topics and m.topics[0] != topics[0]:
                tid = ""  # its thread is watched where its first topic is
        thread = self.threads.get(tid) if tid else None
        if thread is None and tid:
            seed = self.seeds.pop(tid, None)
            if seed is None and self._seed_threads:
                # Most threads never get a second mention: until one does, the thread is
                # this tuple, not a Scope (no rule can hold on a single mention).
                self.seeds[tid] = (ts, author, compound, eng, reach, tuple(matched), post,
                                   m.topics[0], m.id == tid)
            else:
                thread = self._new_thread(tid, m.topics[0], seed)
                if seed is None:
                    thread.first_seen = ts
        if thread is not None:
            if thread.root is None and m.id == tid:
                thread.root = post
            self._count(thread, ts, author, compound, eng, reach, matched, post)
            self.dirty.add(tid)
            if thread.total >= thread.next_look and self.thread_rules:
                events += self._look(thread, self.thread_rules, self._thread_min, ts)
        for name in topics:
            topic = self.topics.get(name) or self._new_topic(name, ts)
            self._count(topic, ts, author, compound, eng, reach, matched, post)
            if ts >= topic.bin_start:
                topic.bin_count += 1
            if topic.total >= topic.next_look and self.topic_rules:
                events += self._look(topic, self.topic_rules, self._topic_min, ts)
        return events

    def _look(self, scope: Scope, rules: Sequence[Rule], mins: dict[str, int], ts: float,
              ) -> list[AlertEvent]:
        """A prompt look between boundaries: the scope's windows as the coming boundary
        will see them if nothing more arrives; only fire and escalate may happen."""
        T = self.now + BUCKET
        at = max(ts, self.now)
        book = self.book
        events: list[AlertEvent] = []
        cache: dict[tuple[int, str], dict[str, Any]] = {}
        biggest = 0
        for (_, fkey), w in scope.windows.items():
            w.advance(T)
            if not fkey and w.n > biggest:
                biggest = w.n
        for rule in rules:
            sk = (rule.window, rule.filter_key)
            if (scope.windows[sk].n < mins[rule.name] or not rule.applies_to(scope.topic)
                    or not book.can_rise(rule, scope.key)):
                continue
            sig = cache.get(sk) or cache.setdefault(sk, scope.signals(*sk, T))
            ev = book.evaluate(rule, scope.key, scope.topic, at, sig, scope.top_posts,
                               prompt=True)
            if ev is not None:
                events.append(ev)
        scope.next_look = scope.total + min(max(1, biggest // 20), LOOK_EVERY_MAX)
        return events

    def _new_thread(self, tid: str, topic: str, seed: tuple[Any, ...] | None) -> Scope:
        """A thread's detector scope, with its seed mention counted if it had one."""
        thread = Scope("thread", tid, topic, self._thread_spans)
        self.threads[tid] = thread
        if seed is not None:
            s_ts, s_author, s_comp, s_eng, s_reach, s_matched, s_post, _, s_root = seed
            thread.first_seen = s_ts
            if s_root:
                thread.root = s_post
            self._count(thread, s_ts, s_author, s_comp, s_eng, s_reach, s_matched, s_post)
        return thread

    def add_engagement(self, thread_id: str, topics: Sequence[str], delta: int) -> None:
        """Engagement that grew on a thread's posts after they were counted (a refresh of
        likes, reposts, replies, quotes): added at the current minute to the thread's and
        its topics' windows, as the signal ``engagement``, without a mention."""
        if delta <= 0 or not self.now:
            return
        thread = self.threads.get(thread_id)
        if thread is None and thread_id in self.seeds:
            seed = self.seeds.pop(thread_id)
            thread = self._new_thread(thread_id, seed[7], seed)
        scopes = [self.topics[t] for t in topics if t in self.topics]
        if thread is not None:
            scopes.append(thread)
            self.dirty.add(thread_id)
        for scope in scopes:
            for (_, fkey), w in scope.windows.items():
                if not fkey:
                    w.add_engagement(self.now, delta)

    def _count(self, scope: Scope, ts: float, author: str, compound: float, eng: int,
               reach: int, matched: Any, post: tuple[Any, ...]) -> None:
        for (_, fkey), w in scope.windows.items():
            if not fkey or fkey in matched:
                w.add(ts, author, compound, eng, reach)
        scope.total += 1
        if ts > scope.last_seen:
            scope.last_seen = ts
        scope.posts.append(post)

    def _new_topic(self, name: str, ts: float) -> Scope:
        bin_, warmup = self._baseline_args
        scope = Scope("topic", name, name, self._topic_spans,
                      SeasonalBaseline(bin=bin_, warmup=warmup))
        scope.first_seen = ts
        scope.bin_start = int(ts) // bin_ * bin_
        self.topics[name] = scope
        return scope

    # -- time ------------------------------------------------------------------------
    def advance(self, t: float) -> list[AlertEvent]:
        """Evaluate every minute boundary in (now, t]."""
        target = int(t) // BUCKET * BUCKET
        if not self.now:
            self.now = float(target)
            self._last_evict = self.now
            return []
        events: list[AlertEvent] = []
        while self.now < target:
            step = self.now + BUCKET
            if target - step > MAX_GAP:
                step = float(target - MAX_GAP)
            self._evaluate(step, events)
            self.now = step
        return events

    def _evaluate(self, T: float, events: list[AlertEvent]) -> None:
        book = self.book
        for scope in self.topics.values():
            self._close_bins(scope, T)
            for w in scope.windows.values():
                w.advance(T)
            cache: dict[tuple[int, str], dict[str, Any]] = {}
            for rule in self.topic_rules:
                if not rule.applies_to(scope.key):
                    continue
                sk = (rule.window, rule.filter_key)
                if scope.windows[sk].n < self._topic_min[rule.name] and (
                        rule.name, scope.key) not in book.open:
                    continue  # cannot hold, and nothing pending or firing to update
                sig = cache.get(sk) or cache.setdefault(sk, scope.signals(*sk, T))
                ev = book.evaluate(rule, scope.key, scope.key, T, sig, scope.top_posts)
                if ev is not None:
                    events.append(ev)
            scope.learn(T)
        if self.thread_rules:
            keys = self.dirty | book.active_keys("thread") if book.open else self.dirty
            for key in keys:
                thread = self.threads.get(key)
                if thread is not None:
                    self._evaluate_thread(thread, T, events)
        self.dirty.clear()
        if T - self._last_evict >= EVICT_EVERY:
            self._evict(T)

    def _evaluate_thread(self, thread: Scope, T: float, events: list[AlertEvent]) -> None:
        book = self.book
        if thread.total < self._thread_floor and not (book.open and any(
                (name, thread.key) in book.open for name in self._thread_min)):
            return  # too few mentions ever for any thread rule, and nothing open to resolve
        for w in thread.windows.values():
            w.advance(T)
        cache: dict[tuple[int, str], dict[str, Any]] = {}
        for rule in self.thread_rules:
            if not rule.applies_to(thread.topic):
                continue
            sk = (rule.window, rule.filter_key)
            if thread.windows[sk].n < self._thread_min[rule.name] and (
                    rule.name, thread.key) not in book.open:
                continue  # cannot hold, and nothing open to resolve
            sig = cache.get(sk) or cache.setdefault(sk, thread.signals(*sk, T))
            ev = book.evaluate(rule, thread.key, thread.topic, T, sig, thread.top_posts)
            if ev is not None:
                events.append(ev)

    def _close_bins(self, scope: Scope, T: float) -> None:
        baseline = scope.baseline
        assert baseline is not None
        b = baseline.bin
        if scope.bin_start + b > T:
            return
        if T - scope.bin_start > MAX_GAP + b:  # after a long silence, learn only its end
            baseline.update(scope.bin_start, scope.bin_count, scope.anomalous)
            scope.bin_start = int(T - MAX_GAP) // b * b
            scope.bin_count = 0
        while scope.bin_start + b <= T:
            baseline.update(scope.bin_start, scope.bin_count, scope.anomalous)
            scope.bin_start += b
            scope.bin_count = 0

    def _evict(self, T: float) -> None:
        self._last_evict = T
        cutoff = T - self.thread_idle
        active = self.book.active_keys("thread")
        for key in [k for k, s in self.threads.items() if s.last_seen < cutoff]:
            if key not in active:
                del self.threads[key]
                self.stats.threads_evicted += 1
        seeds = self.seeds
        for key in [k for k, seed in seeds.items() if seed[0] < cutoff]:
            del seeds[key]
            self.stats.threads_evicted += 1
        order, ids, old = self._recent_order, self._recent_ids, T - self.dedup_horizon
        while order and order[0][0] < old:
            ts, mid = order.popleft()
            if ids.get(mid) == ts:
                del ids[mid]
        self.book.forget(T, {r.name: r.realert for r in self.rules.rules})

    # -- persistence -----------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"version": 1, "now": self.now, "last_evict": self._last_evict,
                "topics": [s.state() for s in self.topics.values()],
                "threads": [s.state() for s in self.threads.values()],
                "seeds": [[k, *seed[:5], list(seed[5]), list(seed[6]), *seed[7:]]
                          for k, seed in self.seeds.items()],
                "alerts": self.book.state(), "recent_ids": list(self._recent_order),
                "dirty": sorted(self.dirty)}

    def restore(self, s: dict[str, Any]) -> None:
        """Continue from a saved state (rules may have changed: what still applies is kept)."""
        self.now = float(s.get("now", 0.0))
        self._last_evict = float(s.get("last_evict", self.now))
        for ts in s.get("topics", []):
            self.topics[ts["key"]] = Scope.from_state(ts, self._topic_spans)
        for ts in s.get("threads", []):
            self.threads[ts["key"]] = Scope.from_state(ts, self._thread_spans)
        for key, t, author, comp, eng, reach, matched, post, topic, root in s.get("seeds", []):
            self.seeds[key] = (float(t), author, float(comp), int(eng), int(reach),
                               tuple(matched), tuple(post), topic, bool(root))
        self.book = AlertBook.from_state(s.get("alerts", {}), {r.name for r in self.rules.rules})
        self.dirty = set(s.get("dirty", []))  # threads to evaluate at the coming boundary
        for t, mid in s.get("recent_ids", []):
            self._recent_order.append((float(t), mid))
            self._recent_ids[mid] = float(t)


def _min_mentions(rule: Rule) -> int:
    """The fewest window mentions with which the rule could hold (a cheap pre-check)."""
    low = 0
    for c in rule.conditions:
        if c.signal == "mentions" and c.op in (">=", ">", "=="):
            low = max(low, int(c.value) + (1 if c.op == ">" else 0))
    return low
