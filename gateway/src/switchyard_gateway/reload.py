"""SIGHUP: the settings a backend switch changes, and the API keys, read again in place.

The unit's ExecReload sends it; roles/gateway reloads instead of restarting when only these
changed, so a switch or a key rotation refuses no connection and cuts no stream. What the
running server was built with (address, port, upstream timeouts and pool, log level) stays
until the next restart.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fastapi import FastAPI

from .models import ModelCatalog
from .settings import SettingsError, load, read_env_file

logger = logging.getLogger("switchyard_gateway.reload")

FIXED_AT_START = ("host", "port", "connect_timeout", "read_timeout", "max_connections", "log_level")


def reload_settings(app: FastAPI) -> None:
    """New settings from the environment and the reload file; on any error the settings in
    use stay, and the log says why."""
    current = app.state.settings
    try:
        env = dict(os.environ) | (read_env_file(Path(current.reload_file)) if current.reload_file else {})
        new = load(env)
    except SettingsError as error:
        logger.error("settings not reloaded, the ones in use stay: %s", error)
        return
    pending = [name for name in FIXED_AT_START if getattr(new, name) != getattr(current, name)]
    if pending:
        logger.warning("%s changed: they take effect at the next restart", ", ".join(pending))
    app.state.settings = new
    app.state.catalog = ModelCatalog(new)
    logger.info("settings reloaded: the %s backend, %d API keys", new.backend, len(new.api_keys))
