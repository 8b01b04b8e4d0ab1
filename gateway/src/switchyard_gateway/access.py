"""One access-log line and the request metrics per request, as plain ASGI middleware (cheaper
than Starlette's BaseHTTPMiddleware, and it sees the end of a streamed body)."""

from __future__ import annotations

import logging
import re
import uuid
from time import perf_counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import STATE as KEY_STATE
from .auth import key_name
from .metrics import Metrics
from .upstream import UPSTREAM_WAIT

logger = logging.getLogger("switchyard_gateway.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class AccessLog:
    """Logs method, path (escaped), status, duration, request id, the API key's name and the
    public model name: never a key, a body, a query string or a header value other than the
    request id."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        upstream_wait = [0.0]
        token = UPSTREAM_WAIT.set(upstream_wait)
        request_id = _client_request_id(scope) or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode()),
                    (b"server-timing", _server_timing(perf_counter() - started, upstream_wait[0])),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            UPSTREAM_WAIT.reset(token)
            seconds = perf_counter() - started
            path = scope["path"]
            key = key_name(state.get(KEY_STATE))
            self.metrics.observe(path if path in self.routes else "other", status, key, seconds)
            logger.info(
                "%s %s %d %.1fms id=%s key=%s model=%s",
                scope["method"],
                _printable(path),
                status,
                seconds * 1000,
                request_id,
                key,
                state.get("model", "-"),
            )


def _server_timing(elapsed_s: float, upstream_s: float) -> bytes:
    """The gateway's own time until the response started, apart from the time spent waiting
    for the upstream (its headers, and a whole body for what is not streamed): the overhead
    a user can check in production. A request held through a switch counts its wait here."""
    return f"gateway;dur={(elapsed_s - upstream_s) * 1000:.2f}, upstream;dur={upstream_s * 1000:.2f}".encode()


def _printable(text: str) -> str:
    """The path as the client sent it, decoded, with control characters escaped: an encoded
    %0A must not end the line and start a forged one."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            return candidate if _REQUEST_ID.match(candidate) else None
    return None
