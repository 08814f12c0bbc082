"""Prometheus metrics (one registry per application, so tests and hot reloads never share counters)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "oligocds_http_requests", "HTTP requests by route and status", ["method", "route", "status"], registry=r
        )
        self.evaluation = Histogram(
            "oligocds_evaluation_seconds",
            "Time to evaluate one request (parse, validate, facts, rules, render)",
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.cds_latency = Histogram(
            "oligocds_cds_service_seconds",
            "Time to answer one CDS service call, JWT check included, by service id",
            ["service"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.rules_fired = Counter("oligocds_rules_fired", "Recommendations emitted, by rule id", ["rule"], registry=r)
        self.cards = Counter("oligocds_cards", "Cards produced, by indicator", ["indicator"], registry=r)
        self.reloads = Counter("oligocds_rules_reload", "Rule reload attempts by result", ["result"], registry=r)
        self.writeback = Counter(
            "oligocds_fhir_writeback", "CarePlan write-backs by result (ok, rejected, failed)", ["result"], registry=r
        )
        self.fhir_fallback_degraded = Counter(
            "oligocds_fhir_fallback_degraded",
            "CDS Hooks prefetch keys the FHIR fallback could not fill, by key and reason",
            ["key", "reason"],
            registry=r,
        )

    def record_results(self, results: list[dict[str, Any]], seconds: float) -> None:
        self.evaluation.observe(seconds)
        for result in results:
            for rec in result["recommendations"]:
                self.rules_fired.labels(rule=rec["rule"]).inc()
            for card in result["cards"]:
                self.cards.labels(indicator=card["indicator"]).inc()

    def watch_feedback(self, read: Callable[[], Iterable[tuple[str, str, str, str, int]]]) -> None:
        """Export CDS Hooks feedback counts, read from the feedback store at scrape time (so they always agree
        with it, however often an identical item is re-sent): (service, rule, code, outcome, count) rows."""
        self.registry.register(_FeedbackCollector(read))

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class _FeedbackCollector(Collector):
    def __init__(self, read: Callable[[], Iterable[tuple[str, str, str, str, int]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "oligocds_cds_feedback",
            "CDS Hooks card feedback by service, rule, recommendation code and outcome",
            labels=["service", "rule", "code", "outcome"],
        )
        for service, rule, code, outcome, count in self._read():
            family.add_metric([service, rule, code, outcome], count)
        yield family
