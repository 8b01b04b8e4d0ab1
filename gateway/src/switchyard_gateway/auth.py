"""API-key checks: `Authorization: Bearer <key>` or `x-api-key: <key>`, in constant time."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from .errors import GatewayError


def presented_key(request: Request) -> str:
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-api-key", "").strip()


def key_is_valid(presented: str, keys: tuple[str, ...]) -> bool:
    # Every key is compared, so the time taken does not tell which one (or how much) matched.
    candidate = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key.encode())
    return matched


def require_key(request: Request) -> None:
    """Called first by every route behind auth."""
    settings = request.app.state.settings
    if not settings.auth:
        return
    presented = presented_key(request)
    if not presented:
        raise GatewayError(
            401,
            "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
            "missing_api_key",
        )
    if not key_is_valid(presented, settings.api_keys):
        raise GatewayError(401, "Incorrect API key provided.", "invalid_api_key")


def require_key_for_status(request: Request) -> None:
    """For /health/deep, /metrics and /config: they show how the service is built."""
    if request.app.state.settings.status_requires_key:
        require_key(request)
