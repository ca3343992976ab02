"""Prometheus metrics every service exposes on ``/metrics``. Module-level because the client's
registry is process-wide; the ``service`` label tells services apart if several share a process
(as they do in tests)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONSUMED = Counter("arrears_records_consumed", "Records consumed", ["service", "topic"])
PRODUCED = Counter("arrears_records_produced", "Records published to Kafka", ["service", "topic"])
FAILED = Counter("arrears_records_failed", "Records dead-lettered", ["service", "topic", "kind"])
DUPLICATES = Counter(
    "arrears_records_duplicate", "Redelivered records dropped by the inbox", ["service", "topic"]
)
HANDLER_SECONDS = Histogram(
    "arrears_handler_seconds",
    "Time to apply one fetch of records (one transaction when the batch succeeds)",
    ["service", "consumer"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG = Gauge(
    "arrears_consumer_lag",
    "Records behind the partition's high watermark",
    ["service", "topic", "partition"],
)
HTTP_REJECTED = Counter(
    "arrears_http_rejected",
    "HTTP requests refused as invalid (422), by route",
    ["route"],
)
OUTBOX_BACKLOG = Gauge("arrears_outbox_backlog", "Rows waiting in the outbox", ["service"])
