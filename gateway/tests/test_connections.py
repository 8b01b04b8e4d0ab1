"""Connections that never send a request: a flood of them leaves /health answering."""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import httpx

from conftest import Gateway, LlamaServer


@contextmanager
def half_open(url: str, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections to the gateway that send nothing."""
    host, port = url.removeprefix("http://").split(":")
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex((host, int(port)))
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def health_ms(gateway: Gateway) -> float:
    started = time.monotonic()
    assert httpx.get(gateway.url + "/health", timeout=5).status_code == 200
    return (time.monotonic() - started) * 1000


def test_ten_thousand_half_open_connections_leave_health_answering(
    start_gateway: Callable[..., Gateway], llama_server: LlamaServer
):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        # The unit's LimitNOFILE (65536) where this machine allows it.
        gateway = start_gateway(llama_server.url, nofile=min(hard, 65536))
        with half_open(gateway.url, 10_000):
            time.sleep(2)  # the gateway accepts them all
            took = health_ms(gateway)
            print(f"/health beside 10,000 half-open connections: {took:.0f} ms")
            assert took < 1000
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_connections_that_send_no_request_are_closed_in_time(
    start_gateway: Callable[..., Gateway], llama_server: LlamaServer
):
    """A gateway with few descriptors (systemd's default limit is 1,024; here 256): 300 idle
    connections would leave none for /health, were they not closed after header_timeout_s."""
    gateway = start_gateway(llama_server.url, nofile=256, header_timeout_s="1")
    with half_open(gateway.url, 300) as sockets:
        time.sleep(3)
        assert health_ms(gateway) < 2000
        closed = 0
        for sock in sockets[:50]:
            with suppress(BlockingIOError):  # still open: nothing to read
                closed += sock.recv(1) == b""
        assert closed == 50, "the idle connections were closed by the gateway"
