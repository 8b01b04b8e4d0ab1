"""`switchyard-gateway` (or `python -m switchyard_gateway`): settings, then the server (serve.py).

`--check` only loads the settings (and keys) and exits: 0 when they are good, 2 with the
reason when not. roles/gateway runs it before it restarts the service.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile

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
    metrics_dir = None
    if settings.workers > 1:
        # Each worker's metrics in files that /metrics adds up: prometheus_client reads this
        # variable when it is first imported, so it is set before anything imports it.
        metrics_dir = tempfile.mkdtemp(prefix="switchyard-gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from .serve import serve

    try:
        return serve(settings)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
