"""What ``stormwatch run`` does, as Prometheus metrics (``/metrics``, ``monitor.health``).

One registry for the process; the daemon's parts count where the work happens. Labels
are names from the config (sources, channels, topics), never URLs or text from posts:
nothing secret, nothing a stranger wrote.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

MENTIONS = Counter("stormwatch_mentions_stored", "New mentions stored, by source.",
                   ["source"], registry=REGISTRY)
POLL_ERRORS = Counter("stormwatch_poll_errors", "Polls and connections that failed, by source.",
                      ["source"], registry=REGISTRY)
SOURCE_LAG = Gauge("stormwatch_source_lag_seconds",
                   "From the newest mention's time to its fetch, at the last success.",
                   ["source"], registry=REGISTRY)
SOURCE_SUCCESS = Gauge("stormwatch_source_last_success_timestamp_seconds",
                       "When the source last answered (Unix time).", ["source"],
                       registry=REGISTRY)
COUNTED = Counter("stormwatch_mentions_counted", "Mentions counted by this instance's "
                  "detectors, by topic.", ["topic"], registry=REGISTRY)
ALERT_EVENTS = Counter("stormwatch_alert_events", "Alert events committed (fired, escalated, "
                       "resolved), by severity.", ["event", "severity"], registry=REGISTRY)
DELIVERIES = Counter("stormwatch_deliveries", "Message attempts, by channel and outcome "
                     "(sent, retry, failed).", ["channel", "outcome"], registry=REGISTRY)
OUTBOX_DEPTH = Gauge("stormwatch_outbox_depth", "Messages not sent yet (all instances).",
                     registry=REGISTRY)
FEED_BEHIND = Gauge("stormwatch_feed_behind", "Stored feed entries this instance's detectors "
                    "have not counted yet.", registry=REGISTRY)
LEASES = Gauge("stormwatch_leases_held", "Sources and topics this instance works on.",
               registry=REGISTRY)
DETECT_SECONDS = Histogram(
    "stormwatch_detect_seconds", "Time to count one batch of the feed and commit its alerts.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY)
INGEST_SECONDS = Histogram(
    "stormwatch_ingest_seconds", "Time to store one fetched page (sentiment included).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY)
