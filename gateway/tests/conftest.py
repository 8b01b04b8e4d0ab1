"""Real servers for the gateway's tests: the upstream `llama-server` built by
scripts/sandbox/build.sh with its tiny generated model, and the gateway itself started as
its systemd unit starts it (`python -m switchyard_gateway`, settings from the environment)."""

from __future__ import annotations

import json
import os
import resource
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
LLAMA_SERVER = Path(os.environ.get("SWITCHYARD_LLAMA_SERVER", ROOT / ".cache/sandbox/llama-build/bin/llama-server"))
TINY_GGUF = Path(os.environ.get("SWITCHYARD_TINY_GGUF", ROOT / ".cache/sandbox/models/llamacpp/tiny-llama.gguf"))

PUBLIC_MODEL = "qwen3-8b"
UPSTREAM_MODEL = "tiny-llama"
KEYS = ("sk-test-first-key", "sk-test-second-key")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, ready: tuple[int, ...] = (200,), timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=1).status_code in ready:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class LlamaServer:
    url: str
    process: subprocess.Popen

    def metric(self, name: str) -> float:
        for line in httpx.get(self.url + "/metrics", timeout=5).text.splitlines():
            if line.startswith(f"llamacpp:{name} "):
                return float(line.split()[1])
        raise KeyError(name)


@pytest.fixture(scope="session")
def start_llama_server() -> Iterator[Callable[..., LlamaServer]]:
    if not (LLAMA_SERVER.is_file() and TINY_GGUF.is_file()):
        pytest.fail(f"{LLAMA_SERVER} or {TINY_GGUF} is missing: run scripts/sandbox/build.sh first")
    started: list[subprocess.Popen] = []

    def start(*extra_args: str, alias: str = UPSTREAM_MODEL, port: int | None = None) -> LlamaServer:
        port = port or free_port()
        process = subprocess.Popen(
            [str(LLAMA_SERVER), "--model", str(TINY_GGUF), "--alias", alias, "--host", "127.0.0.1",
             "--port", str(port), "--jinja", "--metrics", *extra_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url + "/health", process)
        return LlamaServer(url, process)

    yield start
    for process in started:
        stop(process)


@pytest.fixture(scope="session")
def llama_server(start_llama_server: Callable[..., LlamaServer]) -> LlamaServer:
    """The backend: a real llama-server with the tiny model, four slots."""
    return start_llama_server("--parallel", "4")


@pytest.fixture(scope="session")
def embedding_server(start_llama_server: Callable[..., LlamaServer]) -> LlamaServer:
    """A real llama-server in embedding mode: the upstream for /v1/embeddings."""
    return start_llama_server("--embeddings", "--pooling", "mean", alias="all-minilm")


@pytest.fixture(scope="session")
def reranker_server(start_llama_server: Callable[..., LlamaServer]) -> LlamaServer:
    """The stand-in reranker: llama-server in embedding mode, serving the reranker's name."""
    return start_llama_server("--embeddings", "--pooling", "mean", alias="bge-reranker")


class BackendDouble(socketserver.ThreadingTCPServer):
    """A test double of a backend, for what no real one does on cue: it reads each request
    whole and records it (when, headers, body), waits for `hold` when one is given (a request
    the backend is working on), then answers `reply` (nothing: a crash) and closes the
    connection, as a crashed or overloaded server does."""

    daemon_threads = True

    def __init__(self, reply: bytes, hold: threading.Event | None = None) -> None:
        self.reply = reply
        self.hold = hold
        self.received: list[float] = []
        self.headers: list[dict[str, str]] = []
        self.bodies: list[dict] = []
        super().__init__(("127.0.0.1", 0), _ReadThenReply)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ReadThenReply(socketserver.StreamRequestHandler):
    server: BackendDouble

    def handle(self) -> None:
        headers = {}
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        body = self.rfile.read(int(headers.get("content-length", 0)))
        self.server.received.append(time.monotonic())
        self.server.headers.append(headers)
        self.server.bodies.append(json.loads(body) if body else {})
        if self.server.hold is not None:
            self.server.hold.wait(timeout=60)
        if self.server.reply:
            self.wfile.write(self.server.reply)


@pytest.fixture
def backend_double() -> Iterator[Callable[..., BackendDouble]]:
    started: list[BackendDouble] = []

    def start(reply: bytes, hold: threading.Event | None = None) -> BackendDouble:
        server = BackendDouble(reply, hold)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        if server.hold is not None:
            server.hold.set()
        server.shutdown()
        server.server_close()


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen
    log: Path


@pytest.fixture(scope="session")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("credentials") / "api-keys"
    path.write_text("# one key per line\n" + "\n".join(KEYS) + "\n\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def start_gateway(tmp_path_factory: pytest.TempPathFactory, keys_file: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[subprocess.Popen] = []

    def start(backend_url: str, nofile: int | None = None, **settings: str) -> Gateway:
        """The gateway with SWITCHYARD_GATEWAY_<SETTING> from `settings`; `nofile`: its
        descriptor limit, as a unit's LimitNOFILE sets it."""
        port = free_port()
        env = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(ROOT / "gateway/src"),
            "SWITCHYARD_GATEWAY_BACKEND": "llamacpp",
            "SWITCHYARD_GATEWAY_BACKEND_VERSION_PATH": "/props",
            "SWITCHYARD_GATEWAY_BACKEND_VERSION_FIELD": "build_info",
            "SWITCHYARD_GATEWAY_BACKEND_URL": backend_url,
            "SWITCHYARD_GATEWAY_MODEL": PUBLIC_MODEL,
            "SWITCHYARD_GATEWAY_BACKEND_MODEL": UPSTREAM_MODEL,
            "SWITCHYARD_GATEWAY_MODEL_ALIASES": "qwen3:8b,qwen3-8b-q4_k_m.gguf",
            "SWITCHYARD_GATEWAY_API_KEYS_FILE": str(keys_file),
            "SWITCHYARD_GATEWAY_PORT": str(port),
            "SWITCHYARD_GATEWAY_EMBEDDING_URL": "",
            "SWITCHYARD_GATEWAY_RERANKER_URL": "",
        } | {f"SWITCHYARD_GATEWAY_{name.upper()}": value for name, value in settings.items()}
        log = tmp_path_factory.mktemp("gateway") / "gateway.log"
        with log.open("wb") as output:
            limit = None if nofile is None else (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
            process = subprocess.Popen(
                [sys.executable, "-m", "switchyard_gateway"],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=limit,
            )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url + "/health", process)
        return Gateway(url, process, log)

    yield start
    for process in started:
        stop(process)


@pytest.fixture(scope="session")
def gateway(
    start_gateway: Callable[..., Gateway],
    llama_server: LlamaServer,
    embedding_server: LlamaServer,
    reranker_server: LlamaServer,
) -> Gateway:
    """The gateway as deployed: auth on, the llama.cpp backend, embedding and reranker upstreams."""
    return start_gateway(
        llama_server.url,
        embedding_url=embedding_server.url,
        embedding_model="all-minilm",
        reranker_url=reranker_server.url,
        reranker_model="bge-reranker",
    )


@pytest.fixture
def headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[1]}"}
