"""The HTTP protocol the gateway's uvicorn speaks: httptools, with a time limit on a
request's headers.

uvicorn's httptools protocol times out idle keep-alive connections, but not a connection that
was opened and never sent its request, or sends it a byte at a time: each one holds a
descriptor for as long as the client likes, and a few hundred of them use up a service's
limit (then /health fails too). Here a connection whose request headers are not complete
within header_timeout_s of its opening (or of its last response) is closed.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def with_header_timeout(timeout_s: float) -> type[HttpToolsProtocol]:
    class HeaderTimeoutProtocol(HttpToolsProtocol):
        headers_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._wait_for_headers()

        def on_headers_complete(self) -> None:
            self._stop_waiting()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._wait_for_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def _wait_for_headers(self) -> None:
            self._stop_waiting()
            self.headers_timer = self.loop.call_later(timeout_s, self._headers_too_late)

        def _stop_waiting(self) -> None:
            if self.headers_timer is not None:
                self.headers_timer.cancel()
                self.headers_timer = None

        def _headers_too_late(self) -> None:
            self.headers_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol
