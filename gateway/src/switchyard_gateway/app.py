"""The application: settings, one upstream client for the app's life, routes, error shape.

Plain Starlette: FastAPI's dependency solving and response validation cost more per request
than the routes do here, and no route needs them.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from . import pooling, proxy, status
from .access import AccessLog
from .errors import GatewayError, on_gateway_error, on_http_exception, on_unexpected_error
from .limits import InFlight, PerKeyLimit
from .metrics import Metrics
from .models import ModelCatalog
from .reload import catch_up, reload_settings
from .settings import Settings
from .upstream import create_client


def _cors(settings: Settings) -> list[Middleware]:
    """Browsers' cross-origin calls from the configured origins (none: off). Preflights are
    answered here, before auth: they carry no key."""
    if not settings.cors_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "authorization",
                "x-api-key",
                "content-type",
                "anthropic-version",
                "traceparent",
                "tracestate",
            ],
            expose_headers=["x-request-id", "retry-after", "server-timing"],
            max_age=600,
        )
    ]


def create_app(settings: Settings, in_flight: InFlight | None = None) -> Starlette:
    """`in_flight`: the table of requests per key shared with the other workers (serve.py);
    a table of its own when the app runs alone."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, reload_settings, app)
        catch_up(app)
        try:
            async with create_client(settings) as client:
                app.state.client = client
                yield
        finally:
            loop.remove_signal_handler(signal.SIGHUP)

    routes = [*status.routes, *proxy.routes, *pooling.routes]
    metrics = Metrics()
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            GatewayError: on_gateway_error,
            HTTPException: on_http_exception,
            Exception: on_unexpected_error,
        },
        middleware=[
            # Metrics are labelled by route; anything else (scanners, typos) shares one label.
            Middleware(AccessLog, metrics=metrics, routes=frozenset(route.path for route in routes)),
            *_cors(settings),
            Middleware(
                PerKeyLimit,
                in_flight=in_flight or InFlight(workers=1),
                exempt=frozenset(route.path for route in status.status_routes),
            ),
        ],
    )
    app.state.settings = settings
    app.state.catalog = ModelCatalog(settings)
    app.state.metrics = metrics
    app.state.started = int(time.time())
    return app
