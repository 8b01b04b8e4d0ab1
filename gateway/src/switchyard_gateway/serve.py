"""One listening socket, one or more worker processes on it.

The socket is systemd's when it passes one (llm-gateway.socket, sd_listen_fds: fd 3; it stays
open across restarts), else bound here (tests, by hand). Each worker is a uvicorn server with
its own app on that socket, and the kernel hands each new connection to one of them. With
several workers the first process only supervises: SIGHUP (reload) and SIGTERM go on to every
worker, and a worker that dies is started again while the others serve.

Not uvicorn's own `--workers` supervisor nor gunicorn's: both restart every worker on SIGHUP,
and the gateway's SIGHUP is a reload in place (reload.py: the settings a switch changes and
the keys, read again by each worker without dropping a connection).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from functools import partial
from types import FrameType

import uvicorn
from prometheus_client import multiprocess

from .app import create_app
from .limits import InFlight
from .metrics import multiprocess_dir
from .protocol import with_header_timeout
from .settings import Settings

logger = logging.getLogger("switchyard_gateway.serve")

# How long a stopping worker still reads the requests of connections it has just accepted.
ACCEPTED_GRACE_S = 0.2
FORWARDED_SIGNALS = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}
# A worker's exit code when its app did not start (the others are stopped: systemd decides).
STARTUP_FAILED = 3
# A worker that dies sooner than this after its start is started again only after this long.
RESPAWN_BACKOFF_S = 1.0


class Server(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn closes at once every connection with no request in progress, and one accepted
        # a moment before the stop has its request still on the way: the client would see a
        # reset. Stop accepting, let those requests arrive, then shut down (they are answered).
        for server in self.servers:
            server.close()
        await asyncio.sleep(ACCEPTED_GRACE_S)
        await super().shutdown(sockets)


def listening_socket(settings: Settings) -> socket.socket:
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1":
        return socket.socket(fileno=3)
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)
    return sock


def serve(settings: Settings) -> int:
    sock = listening_socket(settings)
    sock.set_inheritable(True)
    in_flight = InFlight(settings.workers)
    config = uvicorn.Config(
        partial(create_app, settings, in_flight),
        factory=True,
        loop="uvloop",
        http=with_header_timeout(settings.header_timeout_s),
        access_log=False,  # AccessLog writes one line per request, without the query string
        log_level=settings.log_level,
        server_header=False,
    )
    if settings.workers == 1:
        server = Server(config)
        server.run(sockets=[sock])
        return 0 if server.started else STARTUP_FAILED
    return Supervisor(config, sock, in_flight).run()


class Supervisor:
    def __init__(self, config: uvicorn.Config, sock: socket.socket, in_flight: InFlight) -> None:
        self.config = config
        self.sock = sock
        self.in_flight = in_flight
        # pid: when it started, and its row of the requests in flight per key.
        self.children: dict[int, tuple[float, int]] = {}
        self.stopping = False
        self.failed = False

    def run(self) -> int:
        signal.signal(signal.SIGHUP, self._forward)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for row in range(self.in_flight.rows):
            self._spawn(row)
        logger.info("serving with %d workers", self.in_flight.rows)
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            child = self.children.pop(pid, None)
            if child is None:
                continue
            started, row = child
            if multiprocess_dir() is not None:
                multiprocess.mark_process_dead(pid)
            if self.stopping:
                continue
            if os.waitstatus_to_exitcode(status) == STARTUP_FAILED:
                logger.error("worker %d could not start: stopping the others", pid)
                self._stop(signal.SIGTERM, None)
                self.failed = True
                continue
            logger.error("worker %d ended (wait status %d): starting another", pid, status)
            if time.monotonic() - started < RESPAWN_BACKOFF_S:
                time.sleep(RESPAWN_BACKOFF_S)
            # Its requests died with it: they no longer count against their keys' limits.
            self.in_flight.clear_row(row)
            self._spawn(row)
        return 1 if self.failed else 0

    def _spawn(self, row: int) -> None:
        # Signals wait until the new worker is known: a stop that came in between would miss it.
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        pid = os.fork()
        if pid:
            self.children[pid] = (time.monotonic(), row)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
            return
        # The worker: SIGHUP waits for the app's own handler (reload.py, which catches up on a
        # reload missed meanwhile), uvicorn takes the rest.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
        self.in_flight.use_row(row)
        code = 1
        try:
            server = Server(self.config)
            server.run(sockets=[self.sock])
            code = 0 if server.started else STARTUP_FAILED
        except BaseException:
            logger.exception("worker %d failed", os.getpid())
        finally:
            os._exit(code)

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        for pid in self.children:
            os.kill(pid, signum)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        self._forward(signal.SIGTERM, frame)
