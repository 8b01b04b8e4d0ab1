"""Every failure leaves the gateway in OpenAI's error shape: {"error": {message, type, param, code}}."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout",
}


class GatewayError(Exception):
    """An error answered to the client as is; `headers` carries e.g. Retry-After."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})


def error_body(status: int, message: str, code: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": _TYPES.get(status, "api_error"), "param": param, "code": code}}


def error_response(error: GatewayError) -> Response:
    body = orjson.dumps(error_body(error.status, error.message, error.code, error.param))
    return Response(body, status_code=error.status, media_type="application/json", headers=error.headers)


def upstream_error_body(status: int, content: bytes) -> dict:
    """An upstream's own error body, reshaped when it is not OpenAI-shaped already."""
    try:
        body = orjson.loads(content)
    except ValueError:
        body = None
    if not (isinstance(body, dict) and isinstance(body.get("error"), dict)):
        message = body.get("error") if isinstance(body, dict) else content.decode("utf-8", "replace")
        body = error_body(status, str(message or f"upstream answered {status}"), "upstream_error")
    return body


def upstream_error_response(status: int, content: bytes, headers: Mapping[str, str] | None = None) -> Response:
    """An upstream's own error, passed on."""
    return Response(
        orjson.dumps(upstream_error_body(status, content)),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


async def on_gateway_error(_request: Request, error: GatewayError) -> Response:
    return error_response(error)


async def on_http_exception(_request: Request, error: HTTPException) -> Response:
    # Starlette's own 404/405 for unknown paths and methods.
    code = "not_found" if error.status_code == 404 else "method_not_allowed"
    # A 405 names the methods the path takes (Allow), as HTTP asks.
    return error_response(GatewayError(error.status_code, str(error.detail), code, headers=error.headers))


async def on_unexpected_error(_request: Request, _error: Exception) -> Response:
    # The traceback goes to the log (uvicorn logs it); the client gets no internals.
    return error_response(GatewayError(500, "The gateway failed to handle the request.", "internal_error"))
