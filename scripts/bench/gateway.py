#!/usr/bin/env python3
"""What the gateway costs, in one run, against a direct connection to the same upstream (the
baseline), nginx as a plain reverse proxy (the floor of one extra hop) and LiteLLM's proxy
(the peer).

The upstream is scripts/bench/fast_upstream.py (it answers in microseconds), so the numbers
are the proxies' own:

1. Per core: each proxy pinned to CPU 0, the upstream and wrk on CPU 1. Non-streamed
   requests/s and latency at 1 to 256 connections; relayed stream chunks/s at 16 to 256.
   "added" is the proxy's percentile minus direct's.
2. All workers: the gateway as deployed (gateway_workers 0: one per core), 256 clients each
   streaming 32 chunks written 20 ms apart (a full GPU's token rate, 12,800 chunks/s) and 1 ms
   apart (256,000/s: the ceiling); the delay each chunk gets on its way.
3. Nothing held: one chunk every 20 ms, read directly and through the gateway; how much
   later each chunk arrives through it.

Run as `make bench-gateway` (it installs wrk and nginx from Debian's packages when they are
missing; LiteLLM goes into its own venv, .cache/bench/litellm-venv, the first time).

    python -m scripts.bench.gateway [--seconds S] [--skip-litellm] [--baseline REV]

--baseline REV adds the gateway as it was at a git revision to the per-core tables, pinned to
the same CPU: a change's before and after, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
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
CHUNKS = 32
PLAIN_CONCURRENCY = (1, 16, 64, 256)
STREAM_CONCURRENCY = (16, 64, 256)
PROXY_CPU, LOAD_CPU = "0", "1"
STAMP = re.compile(rb"t=(\d+)")
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Target:
    name: str
    port: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Load:
    """One wrk run: requests/s and latency percentiles (ms)."""

    rate: float
    p50: float
    p99: float


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


def pinned(cpu: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command]


def upstream(port: int, interval_ms: float) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "scripts/bench/fast_upstream.py"), str(port), str(CHUNKS), str(interval_ms)]
    return start(pinned(LOAD_CPU, command), port, "/health")


def gateway(
    upstream_port: int, port: int, keys: Path, workers: str, cpu: str | None, source: Path = ROOT / "gateway/src"
) -> subprocess.Popen:
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(source),
        "SWITCHYARD_GATEWAY_BACKEND": "vllm",
        "SWITCHYARD_GATEWAY_BACKEND_URL": f"http://127.0.0.1:{upstream_port}",
        "SWITCHYARD_GATEWAY_MODEL": MODEL,
        "SWITCHYARD_GATEWAY_API_KEYS_FILE": str(keys),
        "SWITCHYARD_GATEWAY_PORT": str(port),
        "SWITCHYARD_GATEWAY_WORKERS": workers,
        "SWITCHYARD_GATEWAY_EMBEDDING_URL": "",
        "SWITCHYARD_GATEWAY_RERANKER_URL": "",
        # The access log as deployed (a line per request): part of the cost.
        "SWITCHYARD_GATEWAY_LOG_LEVEL": "info",
    }
    command = [sys.executable, "-m", "switchyard_gateway"]
    return start(pinned(cpu, command) if cpu else command, port, "/health", env)


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    upstream backend {{ server 127.0.0.1:{upstream}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def nginx(upstream_port: int, port: int, root: Path) -> subprocess.Popen:
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=root, upstream=upstream_port, port=port))
    command = pinned(PROXY_CPU, [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(root), "-c", str(conf)])
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.1)
    raise SystemExit("nginx did not come up")


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
    return start(pinned(PROXY_CPU, command), port, "/health/liveliness", env)


def request_body(stream: bool) -> bytes:
    return b'{"model":"%s","messages":[{"role":"user","content":"Say ok"}],"max_tokens":16,"stream":%s}' % (
        MODEL.encode(),
        b"true" if stream else b"false",
    )


def wrk_script(target: Target, stream: bool, directory: Path) -> Path:
    headers = "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in target.headers.items())
    body = request_body(stream).decode().replace("'", "\\'")
    script = directory / f"{target.name}-{'stream' if stream else 'plain'}.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = \'{body}\'\nwrk.headers["content-type"] = "application/json"\n{headers}'
    )
    return script


def _milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * UNITS[unit]


def wrk(target: Target, stream: bool, connections: int, seconds: int, directory: Path) -> Load:
    """wrk on the load CPU; fails on any error or non-2xx answer (a fast error is no result)."""
    command = pinned(LOAD_CPU, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
                                "-s", str(wrk_script(target, stream, directory)),
                                f"http://127.0.0.1:{target.port}/v1/chat/completions"])  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise SystemExit(f"{target.name}: errors under load\n{output}")
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.M))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    return Load(rate, _milliseconds(latency["50"]), _milliseconds(latency["99"]))


async def stream_delays(port: int, headers: dict[str, str], clients: int, streams_each: int) -> list[float]:
    """Per-chunk delay (ms) from the upstream's write (its stamp) to this client's read."""
    delays: list[float] = []
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    body = request_body(True)
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"{head}content-length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(streams_each):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode())
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                data = await reader.readexactly(size + 2)
                now = time.monotonic_ns()
                if size == 0:
                    break
                delays.extend((now - int(stamp)) / 1e6 for stamp in STAMP.findall(data))
        writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return delays


def per_core(targets: list[Target], seconds: int, directory: Path) -> None:
    plain = {(t.name, c): wrk(t, False, c, seconds, directory) for t in targets for c in PLAIN_CONCURRENCY}
    streamed = {(t.name, c): wrk(t, True, c, seconds, directory) for t in targets for c in STREAM_CONCURRENCY}
    print(f"\n1. Per core ({'/'.join(t.name for t in targets[1:])} pinned to CPU {PROXY_CPU}; upstream and wrk on "
          f"CPU {LOAD_CPU}; {seconds} s each)")  # fmt: skip
    print("\nNon-streamed chat completions (latency in ms; added = minus direct's)")
    print("| target | conc | req/s | p50 | p99 | added p50 | added p99 |")
    print("|---|---|---|---|---|---|---|")
    for concurrency in PLAIN_CONCURRENCY:
        direct = plain["direct", concurrency]
        for target in targets:
            row = plain[target.name, concurrency]
            print(f"| {target.name} | {concurrency} | {row.rate:,.0f} | {row.p50:.2f} | {row.p99:.2f} | "
                  f"{row.p50 - direct.p50:+.2f} | {row.p99 - direct.p99:+.2f} |")  # fmt: skip
    print(f"\nStreamed chat completions ({CHUNKS} chunks each, written back to back)")
    print("| target | conc | streams/s | chunks/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for concurrency in STREAM_CONCURRENCY:
        for target in targets:
            row = streamed[target.name, concurrency]
            print(f"| {target.name} | {concurrency} | {row.rate:,.0f} | {row.rate * CHUNKS:,.0f} | "
                  f"{row.p50:.2f} | {row.p99:.2f} |")  # fmt: skip


def checked_out(revision: str, directory: Path) -> Path:
    """The gateway's package as it was at `revision`, for a before/after in one run."""
    directory.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "gateway/src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return directory / "gateway/src"


def delay_row(name: str, delays: list[float], direct: list[float]) -> str:
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    added50, added99 = p50 - percentile(direct, 50), p99 - percentile(direct, 99)
    return f"| {name} | {len(delays):,} | {p50:.3f} | {p99:.3f} | {max(delays):.2f} | {added50:+.3f} | {added99:+.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--skip-litellm", action="store_true", help="leave LiteLLM out")
    parser.add_argument(
        "--baseline", metavar="REV", help="also the gateway as it was at git revision REV, in the per-core tables"
    )
    args = parser.parse_args()
    if os.cpu_count() < 2 or not shutil.which("wrk") or not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        raise SystemExit("needs 2 CPUs, wrk and nginx (make bench-gateway installs them)")

    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as scratch:
        directory = Path(scratch)
        keys = directory / "keys"
        keys.write_text(KEY + "\n")
        keys.chmod(0o600)
        auth = {"authorization": f"Bearer {KEY}"}
        try:
            fast, drip, slow = free_port(), free_port(), free_port()
            processes += [upstream(fast, 0), upstream(drip, 1), upstream(slow, 20)]
            ports = {name: free_port() for name in ("nginx", "gateway", "all", "overload", "litellm")}
            proxies = [nginx(fast, ports["nginx"], directory), gateway(fast, ports["gateway"], keys, "1", PROXY_CPU)]
            processes += proxies
            targets = [Target("direct", fast), Target("nginx", ports["nginx"]),
                       Target("gateway", ports["gateway"], auth)]  # fmt: skip
            if args.baseline:
                port = free_port()
                source = checked_out(args.baseline, directory / "baseline")
                proxies.append(gateway(fast, port, keys, "1", PROXY_CPU, source))
                processes.append(proxies[-1])
                targets.append(Target(f"gateway@{args.baseline}", port, auth))
            if not args.skip_litellm:
                proxies.append(litellm_proxy(fast, ports["litellm"]))
                processes.append(proxies[-1])
                targets.append(Target("litellm", ports["litellm"], auth))
            per_core(targets, args.seconds, directory)
            for process in proxies:  # the pinned proxies give their CPU back
                process.terminate()
                process.wait(timeout=30)
                processes.remove(process)

            processes.append(gateway(slow, ports["all"], keys, "0", None))
            processes.append(gateway(drip, ports["overload"], keys, "0", None))
            workers = httpx.get(f"http://127.0.0.1:{ports['all']}/config", headers=auth).json()["workers"]
            print(f"\n2. All workers ({workers}): 256 clients x 2 streams x {CHUNKS} chunks (delay in ms, upstream "
                  "write -> client read); 20 ms apart is 12,800 chunks/s, a full GPU's worth, 1 ms apart "
                  "256,000/s, an overload that shows the ceiling")  # fmt: skip
            print("| target | chunks | p50 | p99 | max | added p50 | added p99 |")
            print("|---|---|---|---|---|---|---|")
            for name, upstream_port, gateway_port in (("20 ms", slow, ports["all"]), ("1 ms", drip, ports["overload"])):
                started = time.perf_counter()
                direct = uvloop.run(stream_delays(upstream_port, {}, 256, 2))
                direct_rate = len(direct) / (time.perf_counter() - started)
                started = time.perf_counter()
                through = uvloop.run(stream_delays(gateway_port, auth, 256, 2))
                through_rate = len(through) / (time.perf_counter() - started)
                print(delay_row(f"direct, {name} ({direct_rate:,.0f} chunks/s)", direct, direct))
                print(delay_row(f"gateway, {name} ({through_rate:,.0f} chunks/s)", through, direct))

            print(f"\n3. Nothing held: one client, {CHUNKS} chunks 20 ms apart, 10 streams (delay in ms)")
            print("| target | chunks | p50 | p99 | max | added p50 | added p99 |")
            print("|---|---|---|---|---|---|---|")
            direct = uvloop.run(stream_delays(slow, {}, 1, 10))
            through = uvloop.run(stream_delays(ports["all"], auth, 1, 10))
            print(delay_row("direct", direct, direct))
            print(delay_row("gateway", through, direct))
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)


if __name__ == "__main__":
    main()
