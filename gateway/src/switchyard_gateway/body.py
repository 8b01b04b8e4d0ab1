"""What every route reads of a request: its JSON body, within the size limit, and the
headers an upstream gets."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from .errors import GatewayError


async def read_body_bytes(request: Request) -> bytes:
    """The request body, refused early when it is over the size limit."""
    limit = request.app.state.settings.max_body_bytes
    too_large = GatewayError(413, f"Request body is larger than {limit} bytes.", "request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, refused early when it is over the size limit."""
    body = await read_body_bytes(request)
    try:
        parsed = orjson.loads(body)
    except ValueError as error:
        raise GatewayError(400, f"Request body is not valid JSON: {error}.", "invalid_json") from None
    if not isinstance(parsed, dict):
        raise GatewayError(400, "Request body must be a JSON object.", "invalid_json")
    return parsed


# W3C trace context: a trace that passes the gateway goes on to the backend (vLLM reads it).
_TRACE_HEADERS = ("traceparent", "tracestate")


def upstream_headers(request: Request) -> dict[str, str]:
    # The client's API key stays here: upstreams get the request id and the trace context only.
    headers = {"content-type": "application/json", "x-request-id": request.scope["state"]["request_id"]}
    for name in _TRACE_HEADERS:
        value = request.headers.get(name)
        if value is not None:
            headers[name] = value
    return headers
