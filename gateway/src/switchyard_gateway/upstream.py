"""Talking to the upstream services: one pooled aiohttp client, transport failures mapped to
the client-facing errors, and responses passed on without buffering when they can be.

aiohttp, not httpx, on this path: under concurrency httpx's pool (httpcore, anyio, h11) was
about 60% of the gateway's CPU per request (docs/gateway.md, "Gateway performance"); aiohttp's C
parser and simpler pool serve the same request for a fraction of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from time import perf_counter
from typing import Any

import aiohttp
import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from .errors import GatewayError, error_body
from .metrics import Metrics
from .settings import Settings

# Hop-by-hop and length headers are the gateway's own business (aiohttp decodes a compressed
# body, so its encoding header goes too), and so are the ones it writes itself: the client
# gets one date and one request id, and no word of what serves behind it.
_DROPPED_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "transfer-encoding",
     "content-length", "content-encoding", "date", "server", "x-request-id"}
)  # fmt: skip


# Tries of a request while each one failed on a pooled connection the upstream had closed.
SEND_ATTEMPTS = 3

# What a silent stream sends every settings.keepalive_s: an SSE comment, which clients skip.
KEEPALIVE = b": keep-alive\n\n"

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


# Set by open_stream for the request it sends: whether that request went out on a pooled
# connection (_PoolTellingConnector marks it).
_POOLED: ContextVar[list[bool] | None] = ContextVar("pooled", default=None)


class _PoolTellingConnector(aiohttp.TCPConnector):
    """Marks, for open_stream, a request that takes a pooled connection. aiohttp's trace
    signal (on_connection_reuseconn) says the same, but tracing any signal sends every signal
    of every request and every chunk through it: a fifth of the gateway's non-streamed
    throughput (make bench-gateway). `_get` is aiohttp's private lookup of the pool, pinned in
    requirements.txt; test_gateway.py's test_connections_the_backend_drops_cost_no_request
    fails if it no longer tells."""

    async def _get(self, key: Any, traces: list[Any]) -> Any:
        connection = await super()._get(key, traces)
        pooled = _POOLED.get()
        if connection is not None and pooled is not None:
            pooled[0] = True
        return connection


def create_client(settings: Settings) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        # An idle pooled connection is dropped after 4 s, before the upstream drops it: vLLM's
        # uvicorn and llama-server's cpp-httplib close idle connections after 5 s, and a request
        # sent as they close one is lost (ServerDisconnectedError).
        connector=_PoolTellingConnector(
            limit=settings.max_connections, limit_per_host=0, use_dns_cache=True, keepalive_timeout=4.0
        ),
        # `connect` covers the wait for a free pooled connection too (then 503, as for a refused one).
        timeout=aiohttp.ClientTimeout(total=None, connect=settings.connect_timeout, sock_read=settings.read_timeout),
        # Proxy variables of the host must not divert loopback traffic.
        trust_env=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        raise_for_status=False,
    )


class Unreachable(GatewayError):
    """The upstream refused the connection or none came in time: the request never reached it."""


@contextmanager
def mapped_errors(service: str, metrics: Metrics, retry_after: int) -> Iterator[None]:
    """Transport failures as the errors a client should see: 503 down, 504 timeout, 502 broken."""
    try:
        yield
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
        metrics.upstream_errors.labels(service, "unavailable").inc()
        raise Unreachable(
            503,
            f"The {service} service is not reachable ({type(error).__name__}); retry shortly.",
            f"{service}_unavailable",
            headers={"Retry-After": str(retry_after)},
        ) from None
    except TimeoutError:
        metrics.upstream_errors.labels(service, "timeout").inc()
        raise GatewayError(504, f"The {service} service did not answer in time.", f"{service}_timeout") from None
    except aiohttp.ClientError as error:
        metrics.upstream_errors.labels(service, "protocol").inc()
        raise GatewayError(
            502, f"The {service} service broke the connection ({type(error).__name__}).", f"{service}_error"
        ) from None


async def open_stream(
    client: aiohttp.ClientSession,
    service: str,
    url: str,
    payload: bytes,
    headers: dict[str, str],
    settings: Settings,
    metrics: Metrics,
) -> aiohttp.ClientResponse:
    """POST `payload` and return once the status line and headers are in; the body is unread.

    A generation is never sent twice on a connection of its own: once the upstream may have
    read the request there, a broken connection is the client's error (502), whether the
    upstream died before answering or in the middle of a non-streamed answer. What is sent
    again, up to SEND_ATTEMPTS in all, is a request that failed on a pooled connection: the
    upstream closes those without notice (llama-server after its keep-alive time, a stopped
    backend all of them at once), and the request broke against the closed socket. Measured
    on a loaded CI machine, such a failure can come a good fraction of a second after the
    connection was taken, so no time limit tells it apart.
    """
    with mapped_errors(service, metrics, settings.retry_after), waiting_upstream():
        for _attempt in range(SEND_ATTEMPTS - 1):
            pooled = [False]
            token = _POOLED.set(pooled)
            try:
                return await client.post(url, data=payload, headers=headers, allow_redirects=False)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
                if isinstance(error, aiohttp.ClientConnectorError) or not pooled[0]:
                    raise
            finally:
                _POOLED.reset(token)
            # One turn of the event loop: the pool learns of the other connections closed meanwhile.
            await asyncio.sleep(0)
        return await client.post(url, data=payload, headers=headers, allow_redirects=False)


async def read_body(response: aiohttp.ClientResponse, service: str, settings: Settings, metrics: Metrics) -> bytes:
    try:
        with mapped_errors(service, metrics, settings.retry_after), waiting_upstream():
            return await response.read()
    finally:
        response.release()


def passed_headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.lower() not in _DROPPED_HEADERS}


def let_go(upstream: aiohttp.ClientResponse) -> None:
    """Back to the pool when read to its end; otherwise the connection is closed, which is how
    an upstream learns that nobody reads the rest (and stops generating it).

    A connection that carried a stream is closed too: llama-server closes it after the last
    event without a `Connection: close`, and a request sent on it as it goes would be lost.
    """
    if upstream.content.at_eof() and upstream.content_type != "text/event-stream":
        upstream.release()
    else:
        upstream.close()


class UpstreamStreamingResponse(StreamingResponse):
    """A streaming response that always lets go of its upstream response, however it ends.

    On a client disconnect Starlette cancels the body iterator; closing the upstream response
    here drops the upstream connection, which makes vLLM, llama-server and Ollama abort the
    generation. A response read to its end goes back to the pool instead (release).
    """

    def __init__(
        self,
        upstream: aiohttp.ClientResponse,
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
            let_go(self.upstream)
            if self.on_close is not None:
                self.on_close()


def raw_response(upstream: aiohttp.ClientResponse) -> UpstreamStreamingResponse:
    """The upstream's response as it comes, chunk by chunk."""
    return UpstreamStreamingResponse(
        upstream,
        upstream.content.iter_any(),
        status_code=upstream.status,
        headers=passed_headers(upstream),
    )


def error_event(status: int, message: str, code: str) -> bytes:
    """An error as the last event of an OpenAI stream whose status line has gone already."""
    return b"data: " + orjson.dumps(error_body(status, message, code)) + b"\n\n"


# error_event's signature: how a protocol's stream says that it failed.
ErrorEvent = Callable[[int, str, str], bytes]


async def reads_with_keepalive(upstream: aiohttp.ClientResponse, silence_s: float) -> AsyncIterator[bytes | None]:
    """The upstream's body as it comes, read by read, and None whenever it has been silent
    for `silence_s` (a long prompt's prefill, a queue for a slot): time for a keep-alive."""
    while True:
        timer = asyncio.timeout(silence_s)
        try:
            async with timer:
                chunk = await upstream.content.readany()
        except TimeoutError:
            if not timer.expired():
                raise  # the upstream's own read timeout
            yield None
            continue
        if not chunk:
            return
        yield chunk


@contextmanager
def stream_failures(service: str, metrics: Metrics, failed: list[bytes], event: ErrorEvent) -> Iterator[None]:
    """A stream that breaks or stalls: its protocol's error event appended to `failed`."""
    try:
        yield
    except aiohttp.ClientError as error:
        metrics.upstream_errors.labels(service, "stream").inc()
        failed.append(
            event(502, f"The {service} service broke the stream ({type(error).__name__}).", f"{service}_error")
        )
    except TimeoutError:
        metrics.upstream_errors.labels(service, "stream").inc()
        failed.append(event(504, f"The {service} service stopped sending in time.", f"{service}_timeout"))


async def relay_events(
    upstream: aiohttp.ClientResponse,
    service: str,
    rewrite: Callable[[bytes], bytes | None],
    metrics: Metrics,
    keepalive_s: float,
    finished: Callable[[], None],
) -> AsyncIterator[bytes]:
    """OpenAI's server-sent events from the upstream, each event's data rewritten (or dropped:
    None), sent on together with the others of the same read as soon as that read is in
    (nothing waits for a later one). Comments (keep-alives) pass as they are.

    A stream that breaks (or ends without `[DONE]`) ends with an error event, so clients see
    a failure instead of a silently short answer. `finished` is called when it ends, however.
    """
    try:
        pending = b""
        failed: list[bytes] = []
        with stream_failures(service, metrics, failed, error_event):
            async for chunk in reads_with_keepalive(upstream, keepalive_s):
                if chunk is None:
                    yield KEEPALIVE  # between whole events: the gateway sends nothing else
                    continue
                metrics.backend_sent()
                *lines, pending = (pending + chunk).split(b"\n")
                out = bytearray()
                for line in lines:
                    if line.startswith(b"data:"):
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            yield bytes(out) + b"data: [DONE]\n\n"
                            return
                        rewritten = rewrite(data)
                        if rewritten is not None:
                            out += b"data: " + rewritten + b"\n\n"
                    elif line.startswith(b":"):
                        out += line + b"\n\n"
                    # Blank separators are the gateway's own, written after each event.
                if out:
                    yield bytes(out)
            metrics.upstream_errors.labels(service, "stream").inc()
            failed.append(
                error_event(502, f"The {service} service ended the stream before it was complete.", f"{service}_error")
            )
        yield failed[0]
    finally:
        finished()


async def relay_lines(
    upstream: aiohttp.ClientResponse,
    service: str,
    rewrite: Callable[[bytes], bytes],
    failure: ErrorEvent,
    metrics: Metrics,
    keepalive_s: float,
    finished: Callable[[], None],
) -> AsyncIterator[bytes]:
    """Server-sent events of any protocol (`event:` and `data:` lines, comments, separators)
    passed line by line, each line rewritten, until the upstream ends the stream; one that
    breaks ends with the protocol's own error event (`failure`). `finished` is called when it
    ends, however."""
    try:
        pending = b""
        failed: list[bytes] = []
        # A keep-alive only where an event ends: a blank line after an `event:` line would drop
        # the event's name.
        at_boundary = True
        with stream_failures(service, metrics, failed, failure):
            async for chunk in reads_with_keepalive(upstream, keepalive_s):
                if chunk is None:
                    if at_boundary:
                        yield KEEPALIVE
                    continue
                metrics.backend_sent()
                *lines, pending = (pending + chunk).split(b"\n")
                if lines:
                    at_boundary = lines[-1].strip() == b""
                    yield b"\n".join(rewrite(line) for line in lines) + b"\n"
            if pending:
                yield rewrite(pending)
            return
        yield failed[0]
    finally:
        finished()
