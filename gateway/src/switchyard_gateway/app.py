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

from . import pooling, proxy, status
from .access import AccessLog
from .errors import GatewayError, on_gateway_error, on_http_exception, on_unexpected_error
from .metrics import Metrics
from .models import ModelCatalog
from .reload import catch_up, reload_settings
from .settings import Settings
from .upstream import create_client


def create_app(settings: Settings) -> Starlette:
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
        # Metrics are labelled by route; anything else (scanners, typos) shares one label.
        middleware=[Middleware(AccessLog, metrics=metrics, routes=frozenset(route.path for route in routes))],
    )
    app.state.settings = settings
    app.state.catalog = ModelCatalog(settings)
    app.state.metrics = metrics
    app.state.started = int(time.time())
    return app
