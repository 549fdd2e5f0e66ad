"""Retention: mentions older than ``run.keep_mentions`` are deleted, so a database that
runs for years stays the size of its retention window.

Kept whatever their age: mentions a topic detector has not counted yet (the feed past
the slowest detector's place), mentions of threads with an open alert, and the
mentions of a topic with an open incident from six hours before it began (what
``report`` and the messages' charts draw). Alerts, their events (which carry their evidence: the top
posts) and the outbox are kept: they are small and they are the record.

One instance prunes at a time (the ``job:retention`` lease), in batches, so neither
the feed nor the detectors wait long on it.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from monitor.flatline import DAYS
from monitor.store import (
    Store,
    alerts,
    feed_extra,
    incidents,
    mentions,
    partitions,
    source_volume,
)

log = logging.getLogger("stormwatch")

BATCH = 5000
CHART_BEFORE = 6 * 3600   # kept before an open incident's start (its chart's span)


def prune(store: Store, now: float, keep: float) -> int:
    """Delete what retention allows; returns how many mentions went."""
    cutoff = now - keep
    with store.engine.connect() as conn:
        # the slowest detector's place (one whose topic left the config stops counting,
        # and stops holding retention back once it is older than the window itself)
        counted = conn.execute(sa.select(sa.func.min(partitions.c.seq))
                               .where(partitions.c.name.like("topic:%"),
                                      partitions.c.updated_at >= cutoff)).scalar()
        opened = conn.execute(sa.select(incidents.c.group_key,
                                        sa.func.min(incidents.c.opened_at))
                              .where(incidents.c.state == "open")
                              .group_by(incidents.c.group_key)).all()
    if counted is None:
        return 0  # no detector has a place yet: nothing is known to be counted
    open_threads = (sa.select(alerts.c.key).where(alerts.c.state == "firing",
                                                  alerts.c.scope == "thread"))
    charted = [  # an open incident's topic, from six hours before it opened
        sa.and_(mentions.c.created_at >= at - CHART_BEFORE,
                (sa.literal(",") + mentions.c.topics + sa.literal(","))
                .contains(f",{topic},", autoescape=True))
        for topic, at in opened]
    gone = 0
    while True:
        ids = (sa.select(mentions.c.id)
               .where(mentions.c.created_at < cutoff,
                      sa.or_(mentions.c.seq.is_(None), mentions.c.seq <= counted),
                      mentions.c.thread_id.not_in(open_threads),
                      *(sa.not_(c) for c in charted))
               .limit(BATCH))
        with store.transaction() as conn:
            n = conn.execute(mentions.delete().where(mentions.c.id.in_(ids))).rowcount
        gone += n
        if n < BATCH:
            break
    with store.transaction() as conn:
        conn.execute(feed_extra.delete().where(feed_extra.c.seq <= counted))
        conn.execute(source_volume.delete().where(  # flatline rules look back 7 days
            source_volume.c.bucket < now - (DAYS + 1) * 86400))
    if gone:
        log.info("retention: %d mention(s) older than the last %.0f day(s) deleted", gone,
                 keep / 86400)
    return gone
