"""Prometheus metrics, in a registry owned by the app (no process-wide globals)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "switchyard_gateway_requests",
            "Requests answered, by route and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "switchyard_gateway_request_duration_seconds",
            "Time from request to the last byte of the response, by route.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "switchyard_gateway_upstream_errors",
            "Failures talking to an upstream service, by service and kind.",
            ["upstream", "kind"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "switchyard_gateway_tokens",
            "Tokens reported by the backend's usage, by kind (prompt, completion).",
            ["kind"],
            registry=self.registry,
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def count_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for kind in ("prompt", "completion"):
            count = usage.get(f"{kind}_tokens")
            if isinstance(count, int) and count > 0:
                self.tokens.labels(kind).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
