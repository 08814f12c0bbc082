"""Kafka worker metrics, registered on the application's registry (contract.md §5, issue: observability)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.consumed = Counter("oligocds_kafka_consumed", "Input messages consumed", registry=r)
        self.published = Counter("oligocds_kafka_published", "Results published (committed)", registry=r)
        self.dead_lettered = Counter(
            "oligocds_kafka_dead_lettered", "Messages sent to the dead-letter topic", registry=r
        )
        self.invalid_resources = Counter(
            "oligocds_kafka_invalid_resources",
            "Resources skipped as invalid inside otherwise usable bundles",
            registry=r,
        )
        self.replayed = Counter(
            "oligocds_kafka_replayed", "Messages re-applied to the store after a crash (not re-published)", registry=r
        )
        self.restarts = Counter(
            "oligocds_kafka_session_restarts", "Worker sessions restarted, by error", ["reason"], registry=r
        )
        self.lag = Gauge(
            "oligocds_kafka_lag", "Messages not yet processed, by input partition", ["partition"], registry=r
        )
