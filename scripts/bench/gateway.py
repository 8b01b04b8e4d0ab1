#!/usr/bin/env python3
"""What the gateway costs: latency, throughput and per-chunk delay through it, against a direct
connection to the same upstream and against LiteLLM's proxy in front of it, in one run.

The upstream is scripts/bench/fast_upstream.py (answers in microseconds), so the numbers are
the proxies' own. Run as `make bench-gateway`; LiteLLM is installed into its own venv
(.cache/bench/litellm-venv) the first time.

    python -m scripts.bench.gateway [--requests N] [--stream-requests N] [--skip-litellm]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvloop

from .stats import percentile

ROOT = Path(__file__).resolve().parents[2]
LITELLM_VENV = ROOT / ".cache/bench/litellm-venv"
LITELLM_VERSION = "1.106.12"  # 1.110's [proxy] extra needs litellm-proxy, which PyPI here lacks
KEY = "sk-bench-key-0000000000000000"
MODEL = "bench-model"
CHUNKS, CHUNK_INTERVAL_MS = 32, 1.0
CONCURRENCY = (1, 16, 64)
STAMP = re.compile(rb"t=(\d+)")


@dataclass
class Target:
    name: str
    port: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    latencies_ms: list[float]
    seconds: float
    first_chunk_ms: list[float] = field(default_factory=list)
    chunk_delays_ms: list[float] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], port: int, health: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{command[0]} exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{health}", timeout=2).status_code < 500:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{' '.join(command)} did not come up")


def request_bytes(target: Target, stream: bool) -> bytes:
    body = b'{"model":"%s","messages":[{"role":"user","content":"Say ok"}],"max_tokens":16,"stream":%s}' % (
        MODEL.encode(),
        b"true" if stream else b"false",
    )
    headers = "".join(f"{name}: {value}\r\n" for name, value in target.headers.items())
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"{headers}content-length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_response(reader: asyncio.StreamReader, on_data) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {head!r}")
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                return
            on_data(data)
    length = int(re.search(rb"content-length: (\d+)", lower).group(1))
    on_data(await reader.readexactly(length))


async def worker(target: Target, stream: bool, count: int, result: Result) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    payload = request_bytes(target, stream)
    for _ in range(count):
        started = time.monotonic_ns()
        first: list[int] = []

        def on_data(data: bytes, first: list[int] = first) -> None:
            now = time.monotonic_ns()
            if not first:
                first.append(now)
            for stamp in STAMP.findall(data):
                result.chunk_delays_ms.append((now - int(stamp)) / 1e6)

        writer.write(payload)
        await read_response(reader, on_data)
        result.latencies_ms.append((time.monotonic_ns() - started) / 1e6)
        if stream:
            result.first_chunk_ms.append((first[0] - started) / 1e6)
    writer.close()


async def load(target: Target, stream: bool, concurrency: int, total: int) -> Result:
    result = Result([], 0.0)
    started = time.perf_counter()
    per_worker = max(1, total // concurrency)
    await asyncio.gather(*(worker(target, stream, per_worker, result) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


def litellm_proxy(upstream_port: int, port: int) -> subprocess.Popen:
    python = LITELLM_VENV / "bin/python"
    if not python.exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
    config = LITELLM_VENV / "bench-config.yaml"
    config.write_text(
        f"model_list:\n  - model_name: {MODEL}\n    litellm_params:\n      model: openai/{MODEL}\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n      api_key: none\n"
        f"general_settings:\n  master_key: {KEY}\n"
    )
    env = os.environ | {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    command = [str(LITELLM_VENV / "bin/litellm"), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    return start(command, port, "/health/liveliness", env)


def gateway(upstream_port: int, port: int, keys: Path) -> subprocess.Popen:
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT / "gateway/src"),
        "SWITCHYARD_GATEWAY_BACKEND": "vllm",
        "SWITCHYARD_GATEWAY_BACKEND_URL": f"http://127.0.0.1:{upstream_port}",
        "SWITCHYARD_GATEWAY_MODEL": MODEL,
        "SWITCHYARD_GATEWAY_API_KEYS_FILE": str(keys),
        "SWITCHYARD_GATEWAY_PORT": str(port),
        "SWITCHYARD_GATEWAY_EMBEDDING_URL": "",
        "SWITCHYARD_GATEWAY_RERANKER_URL": "",
        "SWITCHYARD_GATEWAY_LOG_LEVEL": "warning",
    }
    return start([sys.executable, "-m", "switchyard_gateway"], port, "/health", env)


async def measure(targets: list[Target], requests: int, stream_requests: int) -> None:
    rows: dict[tuple[str, bool, int], Result] = {}
    for target in targets:
        await load(target, False, 16, 300)  # warm-up: connections, caches
        for concurrency in CONCURRENCY:
            rows[target.name, False, concurrency] = await load(target, False, concurrency, requests)
            rows[target.name, True, concurrency] = await load(target, True, concurrency, stream_requests)

    print("\nNon-streaming chat completions (ms; 'added' = this target's percentile minus direct's)")
    print("| target | conc | req/s | p50 | p99 | added p50 | added p99 | req/s vs LiteLLM |")
    print("|---|---|---|---|---|---|---|---|")
    for concurrency in CONCURRENCY:
        direct = rows["direct", False, concurrency]
        litellm = rows.get(("litellm", False, concurrency))
        for target in targets:
            row = rows[target.name, False, concurrency]
            rate = len(row.latencies_ms) / row.seconds
            versus = f"{rate / (len(litellm.latencies_ms) / litellm.seconds):.2f}x" if litellm else "-"
            p50, p99 = percentile(row.latencies_ms, 50), percentile(row.latencies_ms, 99)
            added50, added99 = p50 - percentile(direct.latencies_ms, 50), p99 - percentile(direct.latencies_ms, 99)
            print(
                f"| {target.name} | {concurrency} | {rate:.0f} | {p50:.2f} | {p99:.2f} | "
                f"{added50:+.2f} | {added99:+.2f} | {versus} |"
            )

    print(f"\nStreaming ({CHUNKS} chunks, one every {CHUNK_INTERVAL_MS} ms; delay = written upstream -> read here)")
    print("| target | conc | first chunk p50 | p99 | chunk delay p50 | p99 | max | added per chunk p50 | p99 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for concurrency in CONCURRENCY:
        direct = rows["direct", True, concurrency]
        for target in targets:
            row = rows[target.name, True, concurrency]
            delays = row.chunk_delays_ms
            print(
                f"| {target.name} | {concurrency} | "
                f"{percentile(row.first_chunk_ms, 50):.2f} | {percentile(row.first_chunk_ms, 99):.2f} | "
                f"{percentile(delays, 50):.3f} | {percentile(delays, 99):.3f} | {max(delays):.2f} | "
                f"{percentile(delays, 50) - percentile(direct.chunk_delays_ms, 50):+.3f} | "
                f"{percentile(delays, 99) - percentile(direct.chunk_delays_ms, 99):+.3f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="non-streaming requests per concurrency level")
    parser.add_argument("--stream-requests", type=int, default=320, help="streamed requests per concurrency level")
    parser.add_argument("--skip-litellm", action="store_true", help="measure direct and the gateway only")
    args = parser.parse_args()

    processes: list[subprocess.Popen] = []
    try:
        upstream_port = free_port()
        upstream = [sys.executable, str(ROOT / "scripts/bench/fast_upstream.py"), str(upstream_port),
                    str(CHUNKS), str(CHUNK_INTERVAL_MS)]  # fmt: skip
        processes.append(start(upstream, upstream_port, "/health"))
        keys = LITELLM_VENV.parent / "gateway-keys"
        keys.parent.mkdir(parents=True, exist_ok=True)
        keys.write_text(KEY + "\n")
        keys.chmod(0o600)
        gateway_port = free_port()
        processes.append(gateway(upstream_port, gateway_port, keys))
        auth = {"authorization": f"Bearer {KEY}"}
        targets = [Target("direct", upstream_port), Target("gateway", gateway_port, auth)]
        if not args.skip_litellm:
            litellm_port = free_port()
            processes.append(litellm_proxy(upstream_port, litellm_port))
            targets.append(Target("litellm", litellm_port, auth))
        print(f"{os.cpu_count()} CPUs; upstream, proxies and this client share them", file=sys.stderr)
        uvloop.run(measure(targets, args.requests, args.stream_requests))
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


if __name__ == "__main__":
    main()
