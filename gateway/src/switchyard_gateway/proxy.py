"""Generation requests to the active backend, whichever API they speak: OpenAI's chat and
completions (apis.py says what each API changes), the Responses API and Anthropic's Messages
(pooling.py has embeddings and rerank).

One flow for all: the model name is resolved before anything is sent; a request waits through
an announced switch or a refused connection (hold.py), and nothing else; what the backend
answers, errors and "busy" included, is passed on; a client that leaves stops its generation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import hold
from .apis import CHAT, COMPLETIONS, MESSAGES, RESPONSES, TOKENIZER, Api
from .auth import caller, key_name, require_key
from .body import read_body_bytes, read_json, upstream_headers
from .errors import GatewayError
from .metrics import Usage
from .models import ModelRoute
from .upstream import (
    KEEPALIVE,
    Unreachable,
    UpstreamStreamingResponse,
    let_go,
    mapped_errors,
    open_stream,
    raw_response,
    read_body,
)

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Statuses with which a backend says it is busy, not down (Ollama sheds load with 503,
# llama-server answers 503 while it loads the model).
_BUSY = frozenset({429, 503})
# How soon a busy backend that names no Retry-After is asked again.
BUSY_RETRY_S = 1.0


class ClientGone(GatewayError):
    """The client closed its connection before the answer: nothing is sent to it."""

    def __init__(self) -> None:
        super().__init__(499, "The client closed the connection.", "client_closed_request")


class NotYet(GatewayError):
    """The backend cannot take the request now, and provably has not: a switch is announced,
    it refused the connection, or it answered that it is busy. Worth another try after
    `retry_in_s`, while the request may still wait; `answer` is the backend's own, when it
    gave one (busy), for the client once the wait is over."""

    def __init__(self, error: GatewayError, retry_in_s: float, answer: Response | None = None) -> None:
        super().__init__(error.status, error.message, error.code, headers=error.headers)
        self.retry_in_s = retry_in_s
        self.answer = answer


async def _open_once(
    request: Request, api: Api, path: str, body: dict[str, Any]
) -> tuple[aiohttp.ClientResponse, ModelRoute]:
    """The backend's response to `body` (status and headers), under the settings in force now;
    NotYet while a switch is in progress, the backend refuses the connection or is busy."""
    state = request.app.state
    settings = state.settings
    target = hold.switching_to(settings)
    if target is not None:
        switching = GatewayError(
            503,
            f"The backend is switching to {target}; retry shortly.",
            "backend_switching",
            headers={"Retry-After": str(settings.retry_after)},
        )
        raise NotYet(switching, hold.POLL_S)
    route = state.catalog.chat(body.get("model"))
    request.scope["state"]["model"] = route.public
    attempt = {**body, "model": route.upstream}
    api.adapt(attempt, caller(request), settings)
    # Counted from before the request leaves, with no wait since the mark was read: a switch
    # that has just left its mark drains this request too (a non-streamed answer sends its
    # headers only when it is complete).
    state.metrics.forwarding.inc()
    try:
        with state.metrics.waiting_for_backend():
            upstream = await open_stream(
                state.client,
                "backend",
                settings.backend_url + path,
                orjson.dumps(attempt),
                upstream_headers(request),
                settings,
                state.metrics,
            )
        state.metrics.backend_sent()
        if upstream.status in _BUSY:
            content = await read_body(upstream, "backend", settings, state.metrics)
            raise _busy(upstream, content, api, settings)
    except Unreachable as error:
        state.metrics.forwarding.dec()
        raise NotYet(error, hold.POLL_S) from None
    except BaseException:
        state.metrics.forwarding.dec()
        raise
    return upstream, route


def _busy(upstream: aiohttp.ClientResponse, content: bytes, api: Api, settings: Any) -> NotYet:
    said = upstream.headers.get("Retry-After", "")
    retry_in_s = float(said) if said.isdigit() else BUSY_RETRY_S
    message, code = api.error_text(upstream.status, content)
    headers = {"Retry-After": said or str(settings.retry_after)}
    answer = api.error_response(upstream.status, content, upstream.content_type, headers)
    return NotYet(GatewayError(upstream.status, message, code, headers=headers), retry_in_s, answer)


def _usage(request: Request, route: ModelRoute) -> Usage:
    """Where the answer's tokens are counted: under the public model name and the key's."""
    return Usage(request.app.state.metrics, route.public, key_name(caller(request)))


def _closed(request: Request) -> Callable[[], None]:
    def closed() -> None:
        request.app.state.metrics.forwarding.dec()

    return closed


async def _open_backend(
    request: Request, api: Api, path: str, body: dict[str, Any], until: float
) -> tuple[aiohttp.ClientResponse, ModelRoute]:
    """As _open_once, trying again while the backend is not yet able to take the request and
    the request may still wait (`until`); then NotYet."""
    while True:
        try:
            return await _open_once(request, api, path, body)
        except NotYet as error:
            if time.monotonic() + error.retry_in_s >= until:
                raise
            await asyncio.sleep(error.retry_in_s)


def _error_answer(upstream: aiohttp.ClientResponse, content: bytes, api: Api) -> Response:
    """The backend's own error, in the API's shape."""
    return api.error_response(upstream.status, content, upstream.content_type, {})


class _WaitingStream:
    """A stream whose backend has not answered yet: its request still in flight (a long
    prompt's prefill, a queue for a slot: backends send their headers with the first token),
    or a switch or a refused connection to wait out. The SSE response starts at once, with a
    comment whenever nothing was sent for keepalive_s so that the client and any proxy keep
    the connection; the events follow once the backend answers; past `until` the stream ends
    with the 503 as an event. A client that leaves meanwhile takes the request with it."""

    def __init__(
        self,
        request: Request,
        api: Api,
        path: str,
        body: dict[str, Any],
        until: float,
        opening: asyncio.Future | None,
        retry_at: float = 0.0,
    ) -> None:
        self.request, self.api, self.path, self.body, self.until = request, api, path, body, until
        # The request on its way, or None and when to send it again (monotonic time).
        self.opening, self.retry_at = opening, retry_at

    async def events(self) -> AsyncIterator[bytes]:
        state = self.request.app.state
        keepalive_s = state.settings.keepalive_s
        sent_at, retry_at = time.monotonic(), self.retry_at
        while True:
            if self.opening is None and time.monotonic() >= retry_at:
                self.opening = asyncio.ensure_future(_open_once(self.request, self.api, self.path, self.body))
            keepalive_at = sent_at + keepalive_s
            if self.opening is None:
                await asyncio.sleep(max(0.0, min(retry_at, keepalive_at) - time.monotonic()))
            else:
                await asyncio.wait({self.opening}, timeout=max(0.0, keepalive_at - time.monotonic()))
            if self.opening is not None and self.opening.done():
                opening, self.opening = self.opening, None
                try:
                    upstream, route = opening.result()
                    break
                except NotYet as error:
                    retry_at = time.monotonic() + error.retry_in_s
                    if retry_at >= self.until:
                        yield self.api.error_event(error.status, error.message, error.code)
                        return
                except GatewayError as error:
                    yield self.api.error_event(error.status, error.message, error.code)
                    return
            if time.monotonic() >= sent_at + keepalive_s:
                sent_at = time.monotonic()
                yield KEEPALIVE
        try:
            if upstream.status >= 400:
                content = await read_body(upstream, "backend", state.settings, state.metrics)
                yield self.api.error_event(upstream.status, *self.api.error_text(upstream.status, content))
                return
            async for events in self.api.relay(
                upstream, route, self.body, _usage(self.request, route), state.metrics, keepalive_s
            ):
                yield events
        finally:
            let_go(upstream)
            state.metrics.forwarding.dec()

    def abandon(self) -> None:
        """The request still on its way when the response ends (the client left): cancelled,
        or let go of if its answer came but was never read."""
        opening, self.opening = self.opening, None
        if opening is None:
            return
        if not opening.done():
            opening.cancel()  # _open_once counts it out of `forwarding`
        elif not opening.cancelled() and opening.exception() is None:
            upstream, _route = opening.result()
            let_go(upstream)
            self.request.app.state.metrics.forwarding.dec()


class _WaitingStreamResponse(StreamingResponse):
    def __init__(self, waiting: _WaitingStream) -> None:
        super().__init__(waiting.events(), media_type="text/event-stream", headers=_SSE_HEADERS)
        self.waiting = waiting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.waiting.abandon()


@contextmanager
def _cancelled_when_the_client_leaves(request: Request) -> Iterator[None]:
    """Cancels the request's work (ClientGone) when its client disconnects: the upstream
    connection closes with it, which makes vLLM, llama-server and Ollama stop generating, and a
    request still waiting for the backend is never sent."""
    handler = asyncio.current_task()
    left = False

    async def watch() -> None:
        nonlocal left
        while (await request.receive())["type"] != "http.disconnect":
            pass
        left = True
        handler.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        yield
    except asyncio.CancelledError:
        if not left:
            raise
        handler.uncancel()
        raise ClientGone() from None
    finally:
        watcher.cancel()


async def _answer(request: Request, api: Api, path: str, body: dict[str, Any], until: float) -> Response:
    """A non-streamed answer, whole."""
    state = request.app.state
    with _cancelled_when_the_client_leaves(request):
        try:
            upstream, route = await _open_backend(request, api, path, body, until)
        except NotYet as error:
            if error.answer is None:
                raise
            return error.answer
        try:
            content = await read_body(upstream, "backend", state.settings, state.metrics)
        finally:
            state.metrics.forwarding.dec()
    if upstream.status >= 400:
        return _error_answer(upstream, content, api)
    return Response(api.answer(content, route, _usage(request, route)), media_type="application/json")


async def generate(request: Request, api: Api, path: str) -> Response:
    state = request.app.state
    body = await read_json(request)
    state.catalog.chat(body.get("model"))  # an unknown model is refused at once, not after a wait
    until = hold.deadline(state.settings)
    if body.get("stream") is not True:
        return await _answer(request, api, path, body, until)
    # The backend's answer within keepalive_s keeps its status line (an error is an HTTP
    # error); past that the stream starts, with keep-alives until it comes.
    opening = asyncio.ensure_future(_open_once(request, api, path, body))
    await asyncio.wait({opening}, timeout=state.settings.keepalive_s)
    try:
        upstream, route = opening.result() if opening.done() else (None, None)
    except NotYet as error:
        if error.answer is not None and time.monotonic() + error.retry_in_s >= until:
            return error.answer
        retry_at = time.monotonic() + error.retry_in_s
        return _WaitingStreamResponse(_WaitingStream(request, api, path, body, until, None, retry_at))
    if upstream is None:
        return _WaitingStreamResponse(_WaitingStream(request, api, path, body, until, opening))
    if upstream.status >= 400:
        try:
            content = await read_body(upstream, "backend", state.settings, state.metrics)
        finally:
            state.metrics.forwarding.dec()
        return _error_answer(upstream, content, api)
    events = api.relay(upstream, route, body, _usage(request, route), state.metrics, state.settings.keepalive_s)
    return UpstreamStreamingResponse(
        upstream, events, on_close=_closed(request), media_type="text/event-stream", headers=_SSE_HEADERS
    )


def _generation(api: Api) -> Callable[[Request], Any]:
    async def handle(request: Request) -> Response:
        require_key(request)
        return await generate(request, api, request.url.path)

    return handle


async def stored_response(request: Request) -> Response:
    """/v1/responses/{id} and what hangs off it (retrieve, delete, cancel, input items): sent
    to the backend as they came, answered as the backend answers (404 where it stores none)."""
    require_key(request)
    state = request.app.state
    url = state.settings.backend_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    content = await read_body_bytes(request)
    with mapped_errors("backend", state.metrics, state.settings.retry_after):
        upstream = await state.client.request(
            request.method, url, data=content or None, headers=upstream_headers(request), allow_redirects=False
        )
    return raw_response(upstream)


routes = [
    Route("/v1/chat/completions", _generation(CHAT), methods=["POST"]),
    Route("/v1/completions", _generation(COMPLETIONS), methods=["POST"]),
    Route("/v1/responses", _generation(RESPONSES), methods=["POST"]),
    Route("/v1/responses/input_tokens", _generation(RESPONSES), methods=["POST"]),
    Route("/v1/responses/{rest:path}", stored_response, methods=["GET", "POST", "DELETE"]),
    Route("/v1/messages", _generation(MESSAGES), methods=["POST"]),
    Route("/v1/messages/count_tokens", _generation(MESSAGES), methods=["POST"]),
    Route("/tokenize", _generation(TOKENIZER), methods=["POST"]),
    Route("/detokenize", _generation(TOKENIZER), methods=["POST"]),
]
