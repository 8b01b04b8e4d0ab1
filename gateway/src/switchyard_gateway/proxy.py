"""The OpenAI generation routes, to the active backend (pooling.py has embeddings and rerank)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from . import hold, reasoning, rewrite
from .auth import require_key
from .body import read_json, upstream_headers
from .errors import GatewayError, upstream_error_body, upstream_error_response
from .models import ModelRoute
from .upstream import (
    UpstreamStreamingResponse,
    error_event,
    let_go,
    open_stream,
    read_body,
    relay_events,
)

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# How often a stream that waits for the backend says so (an SSE comment), well inside the
# idle timeouts of clients and proxies (often 30-60 s).
KEEPALIVE_S = 5.0


async def _open_once(
    request: Request, path: str, body: dict[str, Any], chat: bool
) -> tuple[aiohttp.ClientResponse, ModelRoute]:
    """The backend's response to `body` (status and headers), under the settings in force now;
    503 while a switch is in progress, or the backend refuses the connection or is not ready."""
    state = request.app.state
    settings = state.settings
    target = hold.switching_to(settings)
    if target is not None:
        raise GatewayError(
            503,
            f"The backend is switching to {target}; retry shortly.",
            "backend_switching",
            headers={"Retry-After": str(settings.retry_after)},
        )
    route = state.catalog.chat(body.get("model"))
    request.scope["state"]["model"] = route.public
    attempt = {**body, "model": route.upstream}
    if chat:
        reasoning.adapt_request(attempt, settings.thinking_switch)
    payload = orjson.dumps(attempt)
    # Counted from before the request leaves, with no wait since the mark was read: a switch
    # that has just left its mark drains this request too (a non-streamed answer sends its
    # headers only when it is complete).
    state.metrics.forwarding.inc()
    try:
        upstream = await open_stream(
            state.client,
            "backend",
            settings.backend_url + path,
            payload,
            upstream_headers(request),
            settings,
            state.metrics,
        )
        if upstream.status == 503:
            # Up but not serving yet (llama-server answers 503 while it loads the model).
            content = await read_body(upstream, "backend", settings, state.metrics)
            error = upstream_error_body(503, content)["error"]
            raise GatewayError(
                503, str(error["message"]), "backend_unavailable", headers={"Retry-After": str(settings.retry_after)}
            )
    except BaseException:
        state.metrics.forwarding.dec()
        raise
    return upstream, route


def _closed(request: Request) -> Callable[[], None]:
    def closed() -> None:
        request.app.state.metrics.forwarding.dec()

    return closed


async def _open_backend(
    request: Request, path: str, body: dict[str, Any], chat: bool, until: float
) -> tuple[aiohttp.ClientResponse, ModelRoute]:
    """As _open_once, waiting out a switch or a refused connection until `until`."""
    while True:
        try:
            return await _open_once(request, path, body, chat)
        except GatewayError as error:
            if error.status != 503 or time.monotonic() >= until:
                raise
        await asyncio.sleep(hold.POLL_S)


async def _held_stream(
    request: Request, path: str, body: dict[str, Any], chat: bool, until: float
) -> AsyncIterator[bytes]:
    """A stream that has to wait for the backend: the SSE response starts at once, with a
    comment every KEEPALIVE_S so that the client and any proxy keep the connection, and the
    events follow once the backend answers; past `until` it ends with the 503 as an event."""
    state = request.app.state
    keepalive_at = time.monotonic() + KEEPALIVE_S
    while True:
        try:
            upstream, route = await _open_once(request, path, body, chat)
            break
        except GatewayError as error:
            if error.status != 503 or time.monotonic() >= until:
                yield error_event(error.status, error.message, error.code)
                return
        if time.monotonic() >= keepalive_at:
            keepalive_at += KEEPALIVE_S
            yield b": waiting for the backend\n\n"
        await asyncio.sleep(hold.POLL_S)
    try:
        if upstream.status >= 400:
            content = await read_body(upstream, "backend", state.settings, state.metrics)
            error = upstream_error_body(upstream.status, content)["error"]
            yield error_event(upstream.status, error["message"], error["code"])
            return
        rewriter = rewrite.StreamRewriter(route, chat, state.metrics)
        async for events in relay_events(upstream, "backend", rewriter, state.metrics):
            yield events
    finally:
        let_go(upstream)
        state.metrics.forwarding.dec()


async def _generate(request: Request, path: str, chat: bool) -> Response:
    state = request.app.state
    body = await read_json(request)
    state.catalog.chat(body.get("model"))  # an unknown model is refused at once, not after a wait
    until = hold.deadline(state.settings)
    if body.get("stream") is not True:
        upstream, route = await _open_backend(request, path, body, chat, until)
        try:
            content = await read_body(upstream, "backend", state.settings, state.metrics)
        finally:
            state.metrics.forwarding.dec()
        if upstream.status >= 400:
            return upstream_error_response(upstream.status, content)
        return Response(rewrite.completion(content, route, chat, state.metrics), media_type="application/json")
    try:
        upstream, route = await _open_once(request, path, body, chat)
    except GatewayError as error:
        if error.status != 503:
            raise
        held = _held_stream(request, path, body, chat, until)
        return StreamingResponse(held, media_type="text/event-stream", headers=_SSE_HEADERS)
    if upstream.status >= 400:
        try:
            return upstream_error_response(
                upstream.status, await read_body(upstream, "backend", state.settings, state.metrics)
            )
        finally:
            state.metrics.forwarding.dec()
    rewriter = rewrite.StreamRewriter(route, chat, state.metrics)
    events = relay_events(upstream, "backend", rewriter, state.metrics)
    return UpstreamStreamingResponse(
        upstream, events, on_close=_closed(request), media_type="text/event-stream", headers=_SSE_HEADERS
    )


async def chat_completions(request: Request) -> Response:
    require_key(request)
    return await _generate(request, "/v1/chat/completions", chat=True)


async def completions(request: Request) -> Response:
    require_key(request)
    return await _generate(request, "/v1/completions", chat=False)


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
]
