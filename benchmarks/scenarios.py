"""A seeded week of public conversation about a brand, with labelled incidents and decoys.

The brand is "Acme" (see ``samples/acme.yaml``). The background is what a mid-sized
consumer brand sees: a day/night rhythm (audience in UTC-5, quieter weekends), many small
threads on Reddit, Bluesky and news feeds, about a quarter of posts complaining, some
of them in words VADER misreads (sarcasm, complaints without negative words).
On top, after a day of warm-up, five labelled episodes at random daytime hours:

- ``viral`` (must page within 60 min): a complaint thread drawing hundreds of replies
  over a few hours, mostly negative, from many accounts;
- ``outage`` (must page within 30 min): several times the usual rate across many new
  threads ("is acme down?");
- ``giveaway`` (decoy): a positive thread with hundreds of replies;
- ``angry`` (decoy): one account posting dozens of times in an hour;
- ``news`` (decoy): a neutral news bump, two to three times the usual rate.

Texts are assembled from fragments with details (order numbers, places, products) so
they are nearly all distinct, like real posts. Replies that do not name the brand carry
``"topic": "acme"``, as a connector that follows a matched thread tags them.

    python benchmarks/scenarios.py --seed 7 --out /tmp/acme.jsonl.gz   # labels beside it
    python benchmarks/scenarios.py --seed 7 --days 7 --rate 10 --out big.jsonl
"""

from __future__ import annotations

import argparse
import gzip
import math
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

START = datetime(2024, 5, 6, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC
LOCAL_OFFSET_H = -5
# Relative activity by local hour: night trough, busy day and evening.
HOURLY = [0.16, 0.11, 0.08, 0.07, 0.08, 0.12, 0.25, 0.45, 0.70, 0.85, 0.95, 1.00,
          1.00, 0.95, 0.90, 0.90, 0.95, 1.00, 1.00, 0.95, 0.85, 0.65, 0.45, 0.26]
WEEKEND = 0.8
PEAK_THREADS_PER_HOUR = 36.0  # at rate 1: about 9,500 mentions a week in total
BRAND = "acme"
TOPIC = "acme"

PRODUCTS = ["app", "order", "delivery", "blender", "vacuum", "headphones", "smart plug",
            "air fryer", "kettle", "subscription", "gift card", "router", "toaster",
            "coffee maker", "phone case", "charger", "standing desk", "lamp", "backpack"]
PLACES = ["Ohio", "Denver", "the UK", "Toronto", "Austin", "Chicago", "NYC", "Seattle",
          "Florida", "Atlanta", "Portland", "Boston", "Phoenix", "Dallas", "LA", "Miami"]
BRAND_FORMS = ["Acme", "acme", "@acme", "#acme", "ACME", "Acme's"]
PEOPLE = ["my mom", "my partner", "a coworker", "my brother", "my roommate", "my neighbour"]
TIMES = ["two weeks", "10 days", "a month", "three weeks", "5 days", "six weeks"]

POSITIVE = [
    "just got my new {p} from {b} and I love it",
    "shoutout to {b} support, fixed my {p} issue in 5 minutes",
    "{b} {p} is honestly the best thing I bought this year",
    "{people} loves the {p} from {b}, great gift idea",
    "really impressed with {b}, fast delivery to {place}",
    "{b} customer service was super helpful today, thanks!",
    "ok the new {b} {p} is amazing",
    "finally upgraded my {p}, {b} did a great job with this one",
]
NEUTRAL = [
    "does {b} ship to {place}?",
    "anyone tried the {b} {p}? thinking about getting one",
    "{b} {p} vs the other brand, which one should I get",
    "how long does {b} usually take to deliver to {place}",
    "is the {b} {p} worth it at this price",
    "{b} sale starts tomorrow according to the email",
    "where can I find the manual for the {b} {p}",
    "switching my {p} to {b}, any tips",
]
NEGATIVE = [  # complaints VADER reads as negative
    "{b} lost my {p} and support is useless",
    "worst experience ever with {b}, {p} arrived broken",
    "so angry at {b} right now, {p} refund denied",
    "{b} customer service is terrible, waited {time} for my {p}",
    "never ordering from {b} again, the {p} is junk",
    "{b} charged me twice for my {p} and nobody helps. awful",
    "my {b} {p} stopped working after a week, so disappointed",
    "hate how {b} handles returns, horrible process",
]
IMPLICIT = [  # complaints without negative words: VADER reads them neutral
    "still waiting on my {b} {p}, ordered {time} ago, order #{n}",
    "{b} says my {p} was delivered. it was not delivered",
    "third time calling {b} about the same {p} issue",
    "day {d} of trying to reach {b} about my {p}",
]
SARCASTIC = [  # complaints VADER reads as positive
    "great job {b}, my {p} broke after 2 days. love that for me",
    "thanks {b} for the wonderful 3 hours on hold about my {p}",
    "wow {b} really outdid themselves, {p} shipped to the wrong state lol",
]
CRISIS = ["is this a scam?", "feels like fraud honestly", "thinking about a lawsuit"]

# What people add around the point: details, context, asides. Mostly neutral, like the
# padding of real posts (and it gives posts their real length: a median near 100
# characters, a long tail to several hundred).
CONTEXT = [
    "Ordered it on {day} for {people}.", "Order #{n} if anyone from {b} is reading.",
    "I live in {place} if that matters.", "Tried the chat and the phone line.",
    "Has this happened to anyone else?", "Posting here because email got no reply.",
    "Edit: added the order number.", "Not sure what to do next.",
    "This was my {k}th order with them.", "The tracking page has said the same thing for {time}.",
    "I paid with a card, not PayPal.", "It was the {p} in the grey colour.",
    "My receipt says {day}, the box says something else.", "Sharing in case it helps someone.",
    "They said someone would call back within {k} days.", "Long post, sorry.",
    "For context I have bought from them for years.", "Screenshots in the comments.",
    "The store in {place} told me to contact online support.", "Update tomorrow maybe.",
    "I asked for a replacement {p}, not a voucher.", "Asked {people}, same question.",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

VIRAL_ROOT = ("{b} refused to refund my dead {p} after {time}, support hung up on me and "
              "then closed my account. this is disgusting. order #{n}")
VIRAL_REPLIES = [
    "same thing happened to {people} with their {p}, terrible",
    "this is awful, {b} did the exact same to me",
    "unacceptable. {b} needs to fix this now",
    "wow that's horrible, sorry this happened",
    "I had the worst time with their support too",
    "this is why I stopped buying from {b}. disgusting",
    "{b} ignored my complaint for {time} as well",
    "absolutely ridiculous, hope this blows up",
    "they did this to me too, never again",
    "shameful behaviour from {b}",
]
VIRAL_OTHER = [
    "following", "is this real?", "what did they say when you called?",
    "has anyone from {b} replied yet", "which store was this",
    "support sorted mine out in the end, keep trying", "hope you get your money back",
]
OUTAGE = [
    "is {b} down? app won't load",
    "{b} app not working again, can't log in. so frustrating",
    "ugh {b} is down AGAIN in the middle of my order",
    "can't check out on {b}, error 503 every time. useless",
    "{b} website broken for anyone else in {place}?",
    "{b} outage is killing me, lost my cart twice. terrible",
    "is it just me or is {b} completely dead right now",
    "{b} login fails with an error, been trying for 20 minutes, annoyed",
]
GIVEAWAY_ROOT = "GIVEAWAY! win a brand new {b} {p}. reply to enter, winner picked friday"
GIVEAWAY_REPLIES = [
    "pick me! love {b}", "entering! good luck everyone", "this would be amazing, thank you",
    "I would love to win this for {people}", "done! fingers crossed", "yes please!! 🙏",
    "awesome giveaway, thanks {b}", "count me in, the {p} looks great",
    "never win these but here goes", "i never win anything :(",
]
ANGRY = [
    "{b} you are the worst company on earth",
    "I will keep posting until {b} answers me. disgraceful",
    "{b} stole my money. scam",
    "shame on {b}, total fraud, my {p} never came",
    "still no answer {b}? pathetic",
    "{b} your support is a joke, I'm furious",
]
NEWS_ROOT = "{b} to open 40 new stores and expand same-day delivery to {place}"
NEWS = [
    "{b} is opening new stores, including in {place}", "interesting news from {b} today",
    "{b} expanding same-day delivery, read the article here",
    "so {b} is opening a store near {place}", "{b} announcement: 40 new stores",
    "{b} quarterly update is out", "wonder if the new {b} stores will have the {p}",
]


@dataclass
class Episode:
    kind: str
    start: float
    end: float
    must_page: bool
    deadline_minutes: int | None = None
    thread: str | None = None

    def label(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "must_page": self.must_page,
                               "start": _iso(self.start), "end": _iso(self.end)}
        if self.deadline_minutes is not None:
            out["deadline_minutes"] = self.deadline_minutes
        if self.thread is not None:
            out["thread"] = self.thread
        return out


@dataclass
class World:
    rng: random.Random
    rate: float
    mentions: list[dict[str, Any]] = field(default_factory=list)
    serial: int = 0

    def uid(self) -> int:
        self.serial += 1
        return self.serial

    def author(self) -> str:
        # A long tail: most accounts post once or twice, a few are regulars.
        if self.rng.random() < 0.1:
            return f"regular_{self.rng.randrange(300)}"
        return f"user_{self.rng.randrange(2_000_000)}"

    def fill(self, template: str) -> str:
        r = self.rng
        text = self._format(template)
        tail = r.random()
        if tail < 0.25:
            text += f" ({r.choice(PLACES)})"
        elif tail < 0.45:
            text += f" #{r.randrange(1000)}" if r.random() < 0.3 else "!"
        extra = r.choices((0, 1, 2, 3, 5), (0.35, 0.3, 0.18, 0.12, 0.05))[0]
        if extra:
            context = " ".join(self._format(c) for c in r.sample(CONTEXT, extra))
            text += ("" if text[-1] in ".!?" else ".") + " " + context
        return text

    def _format(self, template: str) -> str:
        r = self.rng
        return template.format(b=r.choice(BRAND_FORMS), p=r.choice(PRODUCTS),
                               place=r.choice(PLACES), people=r.choice(PEOPLE),
                               time=r.choice(TIMES), n=r.randrange(100000, 999999),
                               d=r.randrange(2, 15), day=r.choice(DAYS), k=r.randrange(2, 20))

    def complaint(self) -> str:
        x = self.rng.random()
        if x < 0.62:
            return self.fill(self.rng.choice(NEGATIVE))
        if x < 0.87:
            return self.fill(self.rng.choice(IMPLICIT))
        return self.fill(self.rng.choice(SARCASTIC))

    def background_text(self, mood: str) -> str:
        if mood == "neg":
            text = self.complaint()
            if self.rng.random() < 0.01:
                text += " " + self.rng.choice(CRISIS)
            return text
        return self.fill(self.rng.choice(POSITIVE if mood == "pos" else NEUTRAL))

    def post(self, t: float, text: str, *, source: str, author: str,
             thread: dict[str, Any] | None = None, likes: int = 0,
             tag: bool = False) -> dict[str, Any]:
        n = self.uid()
        if source == "reddit":
            raw = f"t1_{n:x}" if thread else f"t3_{n:x}"
            url = f"{thread['url']}{n:x}/" if thread else \
                f"https://www.reddit.com/r/acme/comments/{n:x}/"
            metrics = {"score": likes}
        elif source == "bluesky":
            raw = f"at://did:plc:{author}/app.bsky.feed.post/3k{n:x}"
            url = f"https://bsky.app/profile/did:plc:{author}/post/3k{n:x}"
            metrics = {"likes": likes}
        else:
            raw = f"https://news.example.com/a/{n:x}"
            url, metrics = raw, {}
        m: dict[str, Any] = {"id": f"{source}:{raw}", "source": source, "text": text,
                             "created_at": _iso(t), "author": author, "url": url}
        if thread is not None:
            m["thread_id"] = thread["id"]
            m["parent_id"] = thread["id"]
        if metrics:
            m["metrics"] = metrics
        if tag or (thread is not None and BRAND not in text.lower()):
            m["topic"] = TOPIC
        self.mentions.append(m)
        return m


def seeds_from(spec: str) -> list[int]:
    """``"1-30"``, ``"1,5,9"`` or ``"1-3,7"`` -> the seeds."""
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def activity(t: float) -> float:
    local = datetime.fromtimestamp(t + LOCAL_OFFSET_H * 3600, UTC)
    w = HOURLY[local.hour] + (HOURLY[(local.hour + 1) % 24] - HOURLY[local.hour]) * (
        local.minute / 60)
    return w * (WEEKEND if local.weekday() >= 5 else 1.0)


def poisson(rng: random.Random, lam: float) -> int:
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def background(w: World, start: float, end: float) -> None:
    rng = w.rng
    per_minute = PEAK_THREADS_PER_HOUR * w.rate / 60
    t = start
    while t < end:
        for _ in range(poisson(rng, per_minute * activity(t))):
            t0 = t + rng.random() * 60
            source = rng.choices(["reddit", "bluesky", "news"], [0.5, 0.45, 0.05])[0]
            mood = rng.choices(["neg", "neu", "pos"], [0.24, 0.38, 0.38])[0]
            if source == "news":
                mood = rng.choices(["neg", "neu", "pos"], [0.1, 0.7, 0.2])[0]
            if rng.random() < 0.01:  # the other Acme: excluded by the sample config
                w.post(t0, f"Acme Hardware on {rng.choice(PLACES)} street has a sale on "
                           f"{rng.choice(PRODUCTS)}s", source=source, author=w.author())
                continue
            root = w.post(t0, w.background_text(mood), source=source, author=w.author(),
                          likes=int(rng.expovariate(1 / 5)))
            if source == "news":
                continue
            big = rng.random() < 0.03
            # "Many small threads": a thread of hundreds of replies is an incident, not calm.
            replies = min(30, int(rng.expovariate(1 / (12 if big else 1.2))))
            for _ in range(replies):
                rt = t0 + rng.expovariate(1 / (2400 if not big else 5400))
                if rt >= end:
                    continue
                same = rng.random() < (0.45 if mood == "neg" else 0.7)
                reply_mood = mood if same else rng.choice(["neg", "neu", "pos"])
                w.post(rt, w.background_text(reply_mood), source=source, author=w.author(),
                       thread=root)
        t += 60


def burst_times(rng: random.Random, t0: float, n: int, median_min: float,
                sigma: float) -> Iterator[float]:
    for _ in range(n):
        yield t0 + 60 * math.exp(rng.gauss(math.log(median_min), sigma))


def viral(w: World, t0: float) -> Episode:
    rng = w.rng
    root = w.post(t0, w.fill(VIRAL_ROOT), source=rng.choice(["reddit", "bluesky"]),
                  author=w.author(), likes=rng.randrange(2000, 20000))
    n = rng.randrange(250, 600)
    last = t0
    for rt in burst_times(rng, t0, n, rng.uniform(60, 110), 0.7):
        x = rng.random()
        text = w.fill(rng.choice(VIRAL_REPLIES)) if x < 0.55 else \
            w.complaint() if x < 0.7 else w.fill(rng.choice(VIRAL_OTHER))
        w.post(rt, text, source=root["source"], author=w.author(), thread=root,
               likes=int(rng.expovariate(1 / 20)))
        last = max(last, rt)
    return Episode("viral", t0, min(last, t0 + 6 * 3600), True, 60, root["id"])


def outage(w: World, t0: float) -> Episode:
    rng = w.rng
    hours = rng.uniform(1.5, 3.0)
    factor = rng.uniform(4.0, 8.0)
    usual = PEAK_THREADS_PER_HOUR * w.rate * 2.5 / 60  # mentions a minute at the peak
    threads: list[dict[str, Any]] = []
    t = t0
    while t < t0 + hours * 3600:
        ramp = min(1.0, 0.3 + (t - t0) / 900)  # full strength after ~10 minutes
        lam = max(2.0 * w.rate, factor * usual * activity(t)) * ramp
        for _ in range(poisson(rng, lam)):
            tt = t + rng.random() * 60
            source = rng.choice(["reddit", "bluesky"])
            if threads and rng.random() < 0.2:
                w.post(tt, w.fill(rng.choice(OUTAGE)), source=source, author=w.author(),
                       thread=rng.choice(threads[-20:]))
            else:
                text = w.fill(rng.choice(OUTAGE)) if rng.random() < 0.85 else \
                    w.fill(rng.choice(NEUTRAL))
                threads.append(w.post(tt, text, source=source, author=w.author()))
        t += 60
    return Episode("outage", t0, t, True, 30)


def giveaway(w: World, t0: float) -> Episode:
    rng = w.rng
    root = w.post(t0, w.fill(GIVEAWAY_ROOT), source="bluesky", author="acme_official",
                  likes=rng.randrange(500, 5000))
    last = t0
    for rt in burst_times(rng, t0, rng.randrange(250, 700), rng.uniform(40, 100), 0.8):
        w.post(rt, w.fill(rng.choice(GIVEAWAY_REPLIES)), source="bluesky",
               author=w.author(), thread=root)
        last = max(last, rt)
    return Episode("giveaway", t0, min(last, t0 + 6 * 3600), False, thread=root["id"])


def angry(w: World, t0: float) -> Episode:
    rng = w.rng
    who = f"angry_{rng.randrange(10**6)}"
    root = w.post(t0, w.fill(rng.choice(ANGRY)), source="bluesky", author=who)
    t = t0
    for _ in range(rng.randrange(30, 70)):
        t = t0 + rng.random() * 3600
        if rng.random() < 0.5:
            w.post(t, w.fill(rng.choice(ANGRY)), source="bluesky", author=who, thread=root)
        else:
            w.post(t, w.fill(rng.choice(ANGRY)), source="bluesky", author=who)
    return Episode("angry", t0, t0 + 3600, False, thread=root["id"])


def news(w: World, t0: float) -> Episode:
    rng = w.rng
    w.post(t0, w.fill(NEWS_ROOT), source="news", author="newsdesk")
    usual = PEAK_THREADS_PER_HOUR * w.rate * 2.5 / 60
    factor = rng.uniform(1.5, 2.5)
    hours = rng.uniform(2, 4)
    t = t0
    while t < t0 + hours * 3600:
        fade = math.exp(-(t - t0) / (hours * 1800))
        for _ in range(poisson(rng, factor * usual * activity(t) * fade)):
            source = rng.choice(["reddit", "bluesky"])
            text = w.fill(rng.choice(NEWS)) if rng.random() < 0.85 else \
                w.background_text(rng.choice(["neg", "pos"]))
            w.post(t + rng.random() * 60, text, source=source, author=w.author())
        t += 60
    return Episode("news", t0, t, False)


EPISODES = {"viral": viral, "outage": outage, "giveaway": giveaway, "angry": angry,
            "news": news}


def generate(seed: int, days: int = 7, rate: float = 1.0, episodes: bool = True
             ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Mentions (sorted by time) and labels for one seed (``episodes=False``: calm only)."""
    rng = random.Random(seed)
    w = World(rng=rng, rate=rate)
    end = START + days * 86400
    background(w, START, end)
    placed: list[Episode] = []
    if episodes and days >= 3:
        kinds = list(EPISODES)
        rng.shuffle(kinds)
        slots = _slots(rng, len(kinds), START + 36 * 3600, end - 8 * 3600)
        for kind, t0 in zip(kinds, slots, strict=True):
            placed.append(EPISODES[kind](w, t0))
    w.mentions = [m for m in w.mentions if m["created_at"] < _iso(end)]
    w.mentions.sort(key=lambda m: m["created_at"])
    labels = {"seed": seed, "start": _iso(START), "end": _iso(end), "topic": TOPIC,
              "incidents": [e.label() for e in sorted(placed, key=lambda e: e.start)]}
    return w.mentions, labels


def _slots(rng: random.Random, n: int, lo: float, hi: float) -> list[float]:
    """``n`` daytime start times (local 08:00-19:00), at least 10 hours apart."""
    for _ in range(10000):
        picks = sorted(lo + rng.random() * (hi - lo) for _ in range(n))
        picks = [p - p % 60 for p in picks]
        daytime = all(8 <= datetime.fromtimestamp(p + LOCAL_OFFSET_H * 3600, UTC).hour < 19
                      for p in picks)
        apart = all(b - a >= 10 * 3600 for a, b in zip(picks, picks[1:], strict=False))
        if daytime and apart:
            return picks
    raise RuntimeError("no room for the episodes: use more days")


def write(mentions: list[dict[str, Any]], labels: dict[str, Any], out: str) -> str:
    opener = gzip.open if out.endswith(".gz") else open
    with opener(out, "wb") as f:  # type: ignore[operator]
        for m in mentions:
            f.write(orjson.dumps(m) + b"\n")
    labels_path = labels_path_for(out)
    with open(labels_path, "wb") as f:
        f.write(orjson.dumps(labels, option=orjson.OPT_INDENT_2) + b"\n")
    return labels_path


def labels_path_for(out: str) -> str:
    base = out[:-3] if out.endswith(".gz") else out
    base = base[:-6] if base.endswith(".jsonl") else base
    return base + ".labels.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--rate", type=float, default=1.0, help="volume multiplier")
    ap.add_argument("--out", required=True, help="mention JSONL (.gz to compress)")
    ap.add_argument("--calm", action="store_true", help="background only, no episodes")
    a = ap.parse_args()
    mentions, labels = generate(a.seed, a.days, a.rate, episodes=not a.calm)
    labels_path = write(mentions, labels, a.out)
    sys.stderr.write(f"{len(mentions):,} mentions -> {a.out}; labels -> {labels_path}\n")


if __name__ == "__main__":
    main()
