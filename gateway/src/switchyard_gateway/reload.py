"""SIGHUP: the settings a backend switch changes, and the API keys, read again in place.

The unit's ExecReload sends it; roles/gateway reloads instead of restarting when only these
changed, so a switch or a key rotation refuses no connection and cuts no stream. What the
running server was built with (address, port, upstream timeouts and pool, log level, CORS,
the header timeout) stays until the next restart.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from starlette.applications import Starlette

from .models import ModelCatalog
from .settings import PREFIX, Settings, SettingsError, load, read_env_file

logger = logging.getLogger("switchyard_gateway.reload")

FIXED_AT_START = (
    "host", "port", "connect_timeout", "read_timeout", "max_connections", "workers", "log_level", "cors_origins",
    "header_timeout_s",
)  # fmt: skip


# What the backend's unit says of itself when it starts serving (settings.backend_file):
# these settings only, over the reload file's, which the run may have written for a backend
# that is not the one serving (a run that died before its restart, a rollback).
ANNOUNCED = tuple(
    PREFIX + name
    for name in ("BACKEND", "BACKEND_MODEL", "BACKEND_VERSION_PATH", "BACKEND_VERSION_FIELD", "THINKING_SWITCH")
)


def announced(path: str) -> dict[str, str]:
    """The backend settings its unit announced last; none before its first start."""
    if not path or not Path(path).is_file():
        return {}
    return {name: value for name, value in read_env_file(Path(path)).items() if name in ANNOUNCED}


def read_settings(current: Settings) -> Settings:
    """The settings as the environment, the reload file and the backend's announcement say
    now, with the ones fixed at start kept; raises SettingsError."""
    env = (
        dict(os.environ)
        | (read_env_file(Path(current.reload_file)) if current.reload_file else {})
        | announced(current.backend_file)
    )
    new = load(env)
    pending = [name for name in FIXED_AT_START if getattr(new, name) != getattr(current, name)]
    if pending:
        logger.warning("%s changed: they take effect at the next restart", ", ".join(pending))
    return replace(new, **{name: getattr(current, name) for name in FIXED_AT_START})


def catch_up(app: Starlette) -> None:
    """At a worker's start, once its SIGHUP handler is in place: the settings read again, so
    that a reload asked for while it started, or before it replaced a worker that died, is
    not lost."""
    try:
        _apply(app, read_settings(app.state.settings))
    except SettingsError as error:
        logger.error("the settings files are not valid, this worker starts with the first ones: %s", error)


def reload_settings(app: Starlette) -> None:
    """New settings from the environment and the reload file; on any error the settings in
    use stay, and the log says why."""
    try:
        new = read_settings(app.state.settings)
    except SettingsError as error:
        logger.error("settings not reloaded, the ones in use stay: %s", error)
        return
    _apply(app, new)
    logger.info("settings reloaded: the %s backend, %d API keys", new.backend, len(new.api_keys))


def _apply(app: Starlette, settings: Settings) -> None:
    app.state.settings = settings
    app.state.catalog = ModelCatalog(settings)
