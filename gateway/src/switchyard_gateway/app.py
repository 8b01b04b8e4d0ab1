"""The application: settings, one upstream client for the app's life, routes, error shape."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.exceptions import HTTPException

from . import __version__, proxy, status
from .access import AccessLog
from .errors import GatewayError, on_gateway_error, on_http_exception, on_unexpected_error
from .hold import SwitchState
from .metrics import Metrics
from .models import ModelCatalog
from .reload import reload_settings
from .settings import Settings
from .upstream import create_client


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, reload_settings, app)
        try:
            async with create_client(settings) as client:
                app.state.client = client
                yield
        finally:
            loop.remove_signal_handler(signal.SIGHUP)

    app = FastAPI(
        title="Switchyard gateway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.catalog = ModelCatalog(settings)
    app.state.metrics = Metrics()
    app.state.switch = SwitchState()
    app.state.started = int(time.time())
    routers = (status.health_router, status.status_router, status.api_router, proxy.router)
    for router in routers:
        app.include_router(router)
    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(HTTPException, on_http_exception)
    app.add_exception_handler(Exception, on_unexpected_error)
    # Metrics are labelled by route; anything else (scanners, typos) shares one label.
    routes = frozenset(route.path for router in routers for route in router.routes)
    app.add_middleware(AccessLog, metrics=app.state.metrics, routes=routes)
    return app
