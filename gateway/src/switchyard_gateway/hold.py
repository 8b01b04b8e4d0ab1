"""Requests wait through a backend switch instead of failing.

The llm role leaves a mark file (settings.switch_mark) for the time of a backend restart,
`{"to": <target backend>, "hold_s": <seconds>}`: from then on new generation requests wait,
while the ones already forwarded finish (the role waits for `forwarding`, summed over the
workers by metrics.py, to reach 0 before it stops the backend), and go on with the settings
the switch brings (reload.py) once the mark is gone. A refused connection (a crash, a
restart the role did not announce) is waited out the same way. A request waits at most
settings.switch_hold_s, then gets 503 with Retry-After.

The mark lives in the run lock's runtime directory, which systemd removes with the lock: when
the run ends, fails or dies (its guard on the control node stops the lock within a second or
two), the mark goes with it. Its hold_s bounds it on the host's own clock (its mtime), should
the lock outlive the run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .settings import Settings

POLL_S = 0.1

logger = logging.getLogger("switchyard_gateway.hold")


def switching_to(settings: Settings) -> str | None:
    """The backend a switch in progress goes to, or None when there is none."""
    if not settings.switch_mark:
        return None
    path = Path(settings.switch_mark)
    try:
        mark = json.loads(path.read_text(encoding="utf-8"))
        if time.time() < path.stat().st_mtime + float(mark["hold_s"]):
            return str(mark["to"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError):
        logger.warning("%s is not a switch mark: ignored", settings.switch_mark)
    return None


def deadline(settings: Settings) -> float:
    """Until when a request that arrives now may wait for the backend."""
    return time.monotonic() + settings.switch_hold_s
