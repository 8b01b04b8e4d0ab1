"""Requests in flight per API key (keys.py, max_in_flight), counted across the worker
processes on one socket, and refused with 429 beyond the key's limit.

The counts live in a table shared by all workers (a memfd mapped before they are forked): a
row per worker, a column per limited key, a key's count the sum of its column. Each worker
writes only its own row, and checks a count and adds to it under a POSIX record lock on that
memfd, which the kernel drops when its holder dies: a worker killed at any moment blocks no
one. The supervisor clears a dead worker's row before the next worker takes it, so requests
that died with it are not counted for ever.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import identify
from .errors import GatewayError, error_response
from .keys import LIMITED_KEYS_MAX, ApiKey

_COUNT_BYTES = 8


class InFlight:
    """The shared table; `use_row` in each worker (after the fork), `clear_row` in the
    supervisor."""

    def __init__(self, workers: int) -> None:
        self.rows = workers
        self.row = 0
        self._fd = os.memfd_create("switchyard-gateway-in-flight")
        os.ftruncate(self._fd, workers * LIMITED_KEYS_MAX * _COUNT_BYTES)
        self._counts = memoryview(mmap.mmap(self._fd, workers * LIMITED_KEYS_MAX * _COUNT_BYTES)).cast("q")

    def use_row(self, row: int) -> None:
        self.row = row

    def clear_row(self, row: int) -> None:
        start = row * LIMITED_KEYS_MAX
        for cell in range(start, start + LIMITED_KEYS_MAX):
            self._counts[cell] = 0

    def count(self, slot: int) -> int:
        """Requests in flight for the key in `slot`, in all workers."""
        return sum(self._counts[row * LIMITED_KEYS_MAX + slot] for row in range(self.rows))

    def enter(self, key: ApiKey) -> bool:
        """Whether one more request of `key` may go; if so it is counted until leave()."""
        with self._locked():
            if self.count(key.slot) >= key.max_in_flight:
                return False
            self._counts[self.row * LIMITED_KEYS_MAX + key.slot] += 1
        return True

    def leave(self, key: ApiKey) -> None:
        with self._locked():
            self._counts[self.row * LIMITED_KEYS_MAX + key.slot] -= 1

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)


class PerKeyLimit:
    """Identifies each request's key (auth.py) and holds a limited key's request, from its
    arrival to the last byte of its answer, against the key's max_in_flight. The status routes
    (`exempt`) are not counted: a monitor's call is never refused for a batch's load."""

    def __init__(self, app: ASGIApp, in_flight: InFlight, exempt: frozenset[str]) -> None:
        self.app = app
        self.in_flight = in_flight
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = scope["app"].state.settings
        key = identify(scope, settings.api_keys) if settings.auth else None
        if key is None or not key.max_in_flight or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        if not self.in_flight.enter(key):
            refused = GatewayError(
                429,
                f"The API key '{key.name}' has {key.max_in_flight} requests in flight, its limit: "
                "retry when one has been answered.",
                "too_many_requests_in_flight",
                headers={"Retry-After": "1"},
            )
            await error_response(refused)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight.leave(key)
