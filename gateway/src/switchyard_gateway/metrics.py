"""Prometheus metrics, in a registry owned by the app (no process-wide globals).

With several workers (serve.py) every worker writes its values to files under
PROMETHEUS_MULTIPROC_DIR and /metrics, answered by any one of them, adds up all of them:
prometheus_client's multiprocess mode. Requests forwarded and not yet answered are a gauge
summed over the live workers, since a switch drains all of them.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = CONTENT_TYPE_LATEST
FORWARDING = "switchyard_gateway_forwarding"
BACKEND_OUTPUT = "switchyard_gateway_backend_output_time_seconds"
BACKEND_WAITING = "switchyard_gateway_backend_waiting_since_seconds"
# A stream's chunks come many a second: when the backend last sent one is written at most
# this often.
OUTPUT_RESOLUTION_S = 0.1


def multiprocess_dir() -> str | None:
    """Where the workers' values are, when there are several workers."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "switchyard_gateway_requests",
            "Requests answered, by route, status code and API key name (- for none).",
            ["route", "status", "key"],
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
            "Tokens reported by the backend's usage, by kind (prompt, completion), public model name and API key name.",
            ["kind", "model", "key"],
            registry=self.registry,
        )
        self.forwarding = Gauge(
            FORWARDING,
            "Generation requests forwarded to the backend and not yet answered in full.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        # Whether the backend still generates (/health/ready, /health/deep): when it last sent anything for a
        # generation, and since when the request that has waited longest for its answer waits
        # (+Inf: none), over all workers.
        self.backend_output = Gauge(
            BACKEND_OUTPUT,
            "When the backend last sent output for a generation (an answer's headers, a streamed chunk), Unix time.",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.backend_waiting_since = Gauge(
            BACKEND_WAITING,
            "When the generation request waiting longest for the backend's answer was sent, Unix time (+Inf: none).",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.backend_waiting_since.set(math.inf)
        self._waiting: dict[object, float] = {}
        self._output_written = 0.0
        # labels() takes a lock and builds a key on every call: each label set is looked up once.
        self._requests: dict[tuple[str, int, str], Any] = {}
        self._latency: dict[str, Any] = {}
        self._tokens: dict[tuple[str, str, str], Any] = {}

    def observe(self, route: str, status: int, key: str, seconds: float) -> None:
        requests = self._requests.get((route, status, key))
        if requests is None:
            requests = self._requests[route, status, key] = self.requests.labels(route, str(status), key)
        latency = self._latency.get(route)
        if latency is None:
            latency = self._latency[route] = self.latency.labels(route)
        requests.inc()
        latency.observe(seconds)

    def count_tokens(self, kind: str, model: str, key: str, count: int) -> None:
        tokens = self._tokens.get((kind, model, key))
        if tokens is None:
            tokens = self._tokens[kind, model, key] = self.tokens.labels(kind, model, key)
        tokens.inc(count)

    @contextmanager
    def waiting_for_backend(self) -> Iterator[None]:
        """Around a generation request until the backend's answer (its headers) is in."""
        token = object()
        self._waiting[token] = time.time()
        if len(self._waiting) == 1:
            self.backend_waiting_since.set(self._waiting[token])
        try:
            yield
        finally:
            del self._waiting[token]
            # The dict keeps the order the requests were sent in: its first is the oldest.
            self.backend_waiting_since.set(next(iter(self._waiting.values()), math.inf))

    def backend_sent(self) -> None:
        """The backend sent output for a generation."""
        now = time.time()
        if now - self._output_written >= OUTPUT_RESOLUTION_S:
            self._output_written = now
            self.backend_output.set(now)

    def backend_stalled_for(self) -> float:
        """Seconds the backend has both kept a generation request waiting and sent nothing at all, in all workers."""
        values = {family.name: [sample.value for sample in family.samples] for family in self._exposed().collect()}
        waiting_since = min(values.get(BACKEND_WAITING) or [math.inf])
        last_output = max(values.get(BACKEND_OUTPUT) or [0.0])
        return max(0.0, time.time() - max(waiting_since, last_output))

    def _exposed(self) -> CollectorRegistry:
        directory = multiprocess_dir()
        if directory is None:
            return self.registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        return registry

    def forwarding_now(self) -> int:
        """Requests forwarded and not yet answered, in all workers."""
        for family in self._exposed().collect():
            if family.name == FORWARDING:
                return int(sum(sample.value for sample in family.samples))
        return 0

    def render(self) -> bytes:
        return generate_latest(self._exposed())


# The names usage has in OpenAI's chat and completions, and in the Responses and Anthropic APIs.
_USAGE_KINDS = {"prompt_tokens": "prompt", "completion_tokens": "completion",
                "input_tokens": "prompt", "output_tokens": "completion"}  # fmt: skip
# Where an answer or a stream's event holds it: at the top, or in the Responses API's
# `response` and Anthropic's `message` (message_start).
_USAGE_HOLDERS = ("response", "message")


class Usage:
    """One answer's token usage, added to the metrics once, when the answer ends (count): the
    last figure seen of each kind, since streams repeat running totals (vLLM's
    continuous_usage_stats, Anthropic's message_delta) and may give the kinds in different
    events (Anthropic's input tokens in message_start)."""

    def __init__(self, metrics: Metrics, model: str, key: str) -> None:
        self.metrics, self.model, self.key = metrics, model, key
        self.latest: dict[str, int] = {}

    def saw(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for name, kind in _USAGE_KINDS.items():
            count = usage.get(name)
            if isinstance(count, int) and count >= 0:
                self.latest[kind] = count

    def saw_in(self, body: Any) -> None:
        """The usage wherever an answer or an event of any of the APIs holds it."""
        if not isinstance(body, dict):
            return
        self.saw(body.get("usage"))
        for holder in _USAGE_HOLDERS:
            if isinstance(body.get(holder), dict):
                self.saw(body[holder].get("usage"))

    def count(self) -> None:
        for kind, count in self.latest.items():
            if count:
                self.metrics.count_tokens(kind, self.model, self.key, count)
        self.latest = {}
