"""API-key checks: `Authorization: Bearer <key>` or `x-api-key: <key>`, in constant time.

The key is identified once per request, before the routes (limits.py, which also counts it
against its limit); the routes behind auth then only ask whether one was found."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Scope

from .errors import GatewayError
from .keys import ApiKey

# Where identify() leaves the request's key in the ASGI scope's state (None: none valid).
STATE = "api_key"


def presented_key(headers: Headers) -> str:
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get("x-api-key", "").strip()


def matching_key(presented: str, keys: tuple[ApiKey, ...]) -> ApiKey | None:
    # Every key is compared, so the time taken does not tell which one (or how much) matched.
    candidate = presented.encode()
    matched = None
    for key in keys:
        if hmac.compare_digest(candidate, key.secret.encode()):
            matched = key
    return matched


def identify(scope: Scope, keys: tuple[ApiKey, ...]) -> ApiKey | None:
    """The key the request presents, when it is one of `keys`; kept in the scope's state."""
    presented = presented_key(Headers(scope=scope))
    key = matching_key(presented, keys) if presented else None
    scope.setdefault("state", {})[STATE] = key
    return key


def key_name(key: ApiKey | None) -> str:
    """What metrics and the access log call the caller: its key's name, "-" for none."""
    return "-" if key is None else key.name


def caller(request: Request) -> ApiKey | None:
    """The request's valid key, as identify() found it (None: none, or auth is off)."""
    return request.scope["state"].get(STATE)


def require_key(request: Request) -> ApiKey | None:
    """Called first by every route behind auth: the caller's key (None with auth off)."""
    if not request.app.state.settings.auth:
        return None
    key = caller(request)
    if key is not None:
        return key
    if not presented_key(request.headers):
        raise GatewayError(
            401,
            "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
            "missing_api_key",
        )
    raise GatewayError(401, "Incorrect API key provided.", "invalid_api_key")


def require_key_for_status(request: Request) -> None:
    """For /health/deep, /metrics, /config and /switch: they show how the service is built
    and what it is doing."""
    if request.app.state.settings.status_requires_key:
        require_key(request)
