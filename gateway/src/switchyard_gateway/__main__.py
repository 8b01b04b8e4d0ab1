"""`switchyard-gateway` (or `python -m switchyard_gateway`): settings, then uvicorn.

`--check` only loads the settings (and keys) and exits: 0 when they are good, 2 with the
reason when not. roles/gateway runs it before it restarts the service.
"""

from __future__ import annotations

import logging
import os
import sys

import uvicorn

from .app import create_app
from .settings import SettingsError, load


def main() -> int:
    try:
        settings = load()
    except SettingsError as error:
        print(f"switchyard-gateway: {error}", file=sys.stderr)
        return 2
    if "--check" in sys.argv[1:]:
        print(f"switchyard-gateway: settings are valid ({settings.backend} backend, {len(settings.api_keys)} keys)")
        return 0
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    # The access log has a line per request already; httpx's own would double it, per upstream call.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    # The socket llm-gateway.socket holds, when systemd passes one (sd_listen_fds: fd 3); it
    # stays open across restarts. Without one (tests, by hand) the gateway binds its own.
    passed = os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1"
    listen = {"fd": 3} if passed else {"host": settings.host, "port": settings.port}
    uvicorn.run(
        create_app(settings),
        **listen,
        loop="uvloop",
        http="httptools",
        access_log=False,  # AccessLog writes one line per request, without the query string
        log_level=settings.log_level,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
