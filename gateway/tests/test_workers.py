"""Several worker processes on one socket (serve.py): they answer as one gateway -- metrics,
reloads and the count of forwarded requests a switch drains are the whole gateway's -- and a
restart on a socket that outlives the process (systemd's llm-gateway.socket) refuses and
resets no connection."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import KEYS, PUBLIC_MODEL, ROOT, Gateway, LlamaServer, stop, wait_until_up

HEADERS = {"Authorization": f"Bearer {KEYS[0]}"}
CHAT = {"model": PUBLIC_MODEL, "messages": [{"role": "user", "content": "Capital of France?"}], "max_tokens": 4}


def fresh_connection_get(url: str, **kwargs: object) -> httpx.Response:
    """A request on a connection of its own, so that any worker may take it."""
    with httpx.Client(timeout=30) as client:
        return client.get(url, **kwargs)  # type: ignore[arg-type]


def worker_pids(gateway: Gateway) -> list[int]:
    children = Path(f"/proc/{gateway.process.pid}/task/{gateway.process.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def unread_stream(url: str, body: bytes) -> socket.socket:
    """A streamed chat request whose client reads the first bytes and then nothing: with a
    small receive buffer the gateway soon cannot send more, so the stream stays in flight."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"authorization: {HEADERS['Authorization']}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    return sock


def wait_for_log(gateway: Gateway, text: str, count: int) -> None:
    deadline = time.monotonic() + 15
    while gateway.log.read_text().count(text) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway.log.read_text().count(text) == count, gateway.log.read_text()


@pytest.fixture
def two_workers(start_gateway: Callable[..., Gateway], llama_server: LlamaServer) -> Gateway:
    gateway = start_gateway(llama_server.url, workers="2")
    deadline = time.monotonic() + 15
    while len(worker_pids(gateway)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(worker_pids(gateway)) == 2
    return gateway


def test_metrics_count_the_requests_of_every_worker(two_workers: Gateway):
    for _ in range(20):
        assert fresh_connection_get(two_workers.url + "/v1/models", headers=HEADERS).status_code == 200
    pattern = re.compile(
        r'^switchyard_gateway_requests_total\{key="key-1",route="/v1/models",status="200"\} (\S+)$', re.M
    )
    # Whichever worker answers /metrics, it counts all twenty.
    counts = {
        float(pattern.search(fresh_connection_get(two_workers.url + "/metrics", headers=HEADERS).text).group(1))
        for _ in range(10)
    }
    assert counts == {20.0}


OLD_KEY, NEW_KEY = "sk-workers-old-key-0001", "sk-workers-new-key-0002"


@pytest.fixture
def rotated(start_gateway: Callable[..., Gateway], llama_server: LlamaServer, tmp_path: Path) -> Gateway:
    """Two workers started with OLD_KEY, then the key file rotated to NEW_KEY and SIGHUP sent:
    both workers have reloaded."""
    keys = tmp_path / "api-keys"
    keys.write_text(OLD_KEY + "\n")
    gateway = start_gateway(llama_server.url, workers="2", api_keys_file=str(keys))
    # A worker still starting would take the new key at its start (reload.catch_up), without
    # the log line this fixture counts: rotate once both have their SIGHUP handler.
    wait_for_log(gateway, "Application startup complete", 2)
    keys.write_text(NEW_KEY + "\n")
    gateway.process.send_signal(signal.SIGHUP)
    wait_for_log(gateway, "settings reloaded", 2)
    return gateway


def key_statuses(gateway: Gateway) -> dict[str, set[int]]:
    """What 20 requests on fresh connections get with each key."""
    url = gateway.url + "/v1/models"
    return {
        key: {fresh_connection_get(url, headers={"x-api-key": key}).status_code for _ in range(20)}
        for key in (OLD_KEY, NEW_KEY)
    }


def test_sighup_reloads_every_worker(rotated: Gateway):
    assert key_statuses(rotated) == {OLD_KEY: {401}, NEW_KEY: {200}}
    assert rotated.process.poll() is None


def forwarding(gateway: Gateway) -> int:
    """The requests being forwarded, as /switch counts them, asked on a fresh connection."""
    return fresh_connection_get(gateway.url + "/switch", headers=HEADERS).json()["forwarding"]


def test_switch_counts_the_forwarded_requests_of_every_worker(
    start_gateway: Callable[..., Gateway], llama_server: LlamaServer, tmp_path: Path
):
    """The llm role drains the whole gateway before it stops the backend: /switch, from any
    worker, counts the streams all of them are relaying."""
    mark = tmp_path / "switching"
    gateway = start_gateway(llama_server.url, workers="2", switch_mark=str(mark), switch_hold_s="60")
    body = json.dumps(CHAT | {"stream": True, "max_tokens": 2000, "ignore_eos": True}).encode()
    streams = [unread_stream(gateway.url, body) for _ in range(4)]
    try:
        mark.write_text(json.dumps({"to": "ollama", "hold_s": 600}))
        seen = {forwarding(gateway) for _ in range(10)}
        assert seen == {4}
    finally:
        for stream in streams:
            stream.close()
    deadline = time.monotonic() + 10
    while forwarding(gateway) != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert forwarding(gateway) == 0


def test_a_worker_that_dies_is_replaced_with_the_reloaded_settings(rotated: Gateway):
    first, second = worker_pids(rotated)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while first in worker_pids(rotated) or len(worker_pids(rotated)) < 2:
        assert time.monotonic() < deadline, "no new worker"
        time.sleep(0.05)
    assert second in worker_pids(rotated)
    wait_until_up(rotated.url + "/health", rotated.process)
    assert key_statuses(rotated) == {OLD_KEY: {401}, NEW_KEY: {200}}


def wait_for_more(outcomes: list[str], count: int) -> None:
    deadline = time.monotonic() + 30
    wanted = len(outcomes) + count
    while len(outcomes) < wanted:
        assert time.monotonic() < deadline, f"no answers: {outcomes[-5:]}"
        time.sleep(0.05)


def _socket_activated(sock: socket.socket, env: dict[str, str], log: Path) -> subprocess.Popen:
    """The gateway as systemd starts it from llm-gateway.socket: the socket as fd 3,
    LISTEN_FDS=1 and LISTEN_PID=its own pid."""
    command = 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -m switchyard_gateway'
    with log.open("ab") as output:
        return subprocess.Popen(
            ["sh", "-c", command, sys.executable],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            pass_fds=(3,),
            preexec_fn=lambda: os.dup2(sock.fileno(), 3),
        )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_restarts_on_a_held_socket_refuse_and_reset_nothing(
    llama_server: LlamaServer, keys_file: Path, tmp_path: Path, workers: str
):
    """Clients that connect while the gateway restarts wait in the socket's backlog and are
    answered by the next process; the one stopping answers what it has already accepted."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT / "gateway/src"),
        "SWITCHYARD_GATEWAY_BACKEND": "llamacpp",
        "SWITCHYARD_GATEWAY_BACKEND_URL": llama_server.url,
        "SWITCHYARD_GATEWAY_MODEL": PUBLIC_MODEL,
        "SWITCHYARD_GATEWAY_API_KEYS_FILE": str(keys_file),
        "SWITCHYARD_GATEWAY_WORKERS": workers,
        "SWITCHYARD_GATEWAY_EMBEDDING_URL": "",
        "SWITCHYARD_GATEWAY_RERANKER_URL": "",
        "SWITCHYARD_GATEWAY_LOG_LEVEL": "warning",
    }
    log = tmp_path / "gateway.log"
    process = _socket_activated(sock, env, log)
    wait_until_up(url + "/health", process)
    stopping = threading.Event()
    outcomes: list[str] = []

    def client() -> None:
        while not stopping.is_set():
            try:
                outcomes.append(str(fresh_connection_get(url + "/v1/models", headers=HEADERS).status_code))
            except httpx.HTTPError as error:
                outcomes.append(repr(error))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    restarts = 8
    answered_per_process = 3
    try:
        for _ in range(restarts):
            # Each process answers some before it stops: counted, not timed, as CI's load varies.
            wait_for_more(outcomes, answered_per_process)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
            process = _socket_activated(sock, env, log)
        wait_for_more(outcomes, answered_per_process)
    finally:
        stopping.set()
        for thread in clients:
            thread.join()
        stop(process)
        sock.close()
    assert len(outcomes) >= (restarts + 1) * answered_per_process
    assert [outcome for outcome in outcomes if outcome != "200"] == []
