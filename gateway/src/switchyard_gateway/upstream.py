"""Talking to the upstream services: one pooled client, transport failures mapped to the
client-facing errors, and responses passed on without buffering when they can be."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from time import perf_counter

import anyio
import httpx
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from .errors import GatewayError, error_body
from .metrics import Metrics
from .settings import Settings

# Hop-by-hop and length headers are the gateway's own business.
_DROPPED_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"})


# Seconds the current request has spent waiting for upstreams: access.py gives each request
# its own counter and reports it beside the gateway's own time (Server-Timing).
UPSTREAM_WAIT: ContextVar[list[float]] = ContextVar("upstream_wait")


@contextmanager
def waiting_upstream() -> Iterator[None]:
    started = perf_counter()
    try:
        yield
    finally:
        wait = UPSTREAM_WAIT.get(None)
        if wait is not None:
            wait[0] += perf_counter() - started


def create_client(settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
        limits=httpx.Limits(
            max_connections=settings.max_connections, max_keepalive_connections=settings.max_connections
        ),
        # Proxy variables of the host must not divert loopback traffic.
        trust_env=False,
    )


@contextmanager
def mapped_errors(service: str, metrics: Metrics, retry_after: int) -> Iterator[None]:
    """Transport failures as the errors a client should see: 503 down, 504 timeout, 502 broken."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
        metrics.upstream_errors.labels(service, "unavailable").inc()
        raise GatewayError(
            503,
            f"The {service} service is not reachable ({type(error).__name__}); retry shortly.",
            f"{service}_unavailable",
            headers={"Retry-After": str(retry_after)},
        ) from None
    except httpx.TimeoutException:
        metrics.upstream_errors.labels(service, "timeout").inc()
        raise GatewayError(504, f"The {service} service did not answer in time.", f"{service}_timeout") from None
    except httpx.HTTPError as error:
        metrics.upstream_errors.labels(service, "protocol").inc()
        raise GatewayError(
            502, f"The {service} service broke the connection ({type(error).__name__}).", f"{service}_error"
        ) from None


async def open_stream(
    client: httpx.AsyncClient,
    service: str,
    url: str,
    payload: bytes,
    headers: dict[str, str],
    settings: Settings,
    metrics: Metrics,
) -> httpx.Response:
    """POST `payload` and return once the status line and headers are in; the body is unread.

    Never retried: a chat completion is neither idempotent nor cheap.
    """
    request = client.build_request("POST", url, content=payload, headers=headers)
    with mapped_errors(service, metrics, settings.retry_after), waiting_upstream():
        return await client.send(request, stream=True)


async def read_body(response: httpx.Response, service: str, settings: Settings, metrics: Metrics) -> bytes:
    try:
        with mapped_errors(service, metrics, settings.retry_after), waiting_upstream():
            return await response.aread()
    finally:
        await response.aclose()


def passed_headers(response: httpx.Response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.lower() not in _DROPPED_HEADERS}


class UpstreamStreamingResponse(StreamingResponse):
    """A streaming response that always closes its upstream response, however it ends.

    On a client disconnect Starlette cancels the body iterator; closing the upstream response
    here (shielded from that cancellation) drops the upstream connection, which makes vLLM,
    llama-server and Ollama abort the generation.
    """

    def __init__(
        self,
        upstream: httpx.Response,
        content: AsyncIterator[bytes],
        on_close: Callable[[], None] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(content, **kwargs)  # type: ignore[arg-type]
        self.upstream = upstream
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.upstream.aclose()
            if self.on_close is not None:
                self.on_close()


def raw_response(upstream: httpx.Response) -> UpstreamStreamingResponse:
    """The upstream's response as it comes, byte for byte."""
    return UpstreamStreamingResponse(
        upstream,
        upstream.aiter_raw(),
        status_code=upstream.status_code,
        headers=passed_headers(upstream),
    )


def error_event(status: int, message: str, code: str) -> bytes:
    """An error as the last event of a stream whose status line has gone already."""
    return b"data: " + json.dumps(error_body(status, message, code)).encode() + b"\n\n"


async def relay_events(
    upstream: httpx.Response, service: str, rewrite: Callable[[str], str], metrics: Metrics
) -> AsyncIterator[bytes]:
    """Server-sent events from the upstream, each rewritten and sent on as soon as it is in.

    A stream that breaks (or ends without `[DONE]`) ends with an error event, so clients see
    a failure instead of a silently short answer.
    """
    try:
        async for line in upstream.aiter_lines():
            if not line.startswith("data:"):
                continue  # blank separators and comments: the gateway writes its own
            data = line[5:].strip()
            if data == "[DONE]":
                yield b"data: [DONE]\n\n"
                return
            yield b"data: " + rewrite(data).encode() + b"\n\n"
    except httpx.HTTPError as error:
        metrics.upstream_errors.labels(service, "stream").inc()
        yield error_event(502, f"The {service} service broke the stream ({type(error).__name__}).", f"{service}_error")
        return
    metrics.upstream_errors.labels(service, "stream").inc()
    yield error_event(502, f"The {service} service ended the stream before it was complete.", f"{service}_error")
