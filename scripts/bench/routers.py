"""The fleet's router, chosen by running the candidates here, in one run: HAProxy (Debian's
package, configured as roles/router configures it) and vllm-router (the Rust router from PyPI,
in its own venv, .cache/bench/vllm-router-venv), each in front of the same two workers.

1. Real workers: two llama-servers (the sandbox's build and tiny model). Non-streamed and
   streamed chat completions from 1 and 8 clients: direct to one worker (the baseline),
   then through each router. "added" is the router's p50 minus direct's.
1b. The routers' own cost: wrk, non-streamed, against workers that answer in microseconds
   (scripts/bench/fast_upstream.py), at 1 and 16 connections.
2. SSE unbuffered: workers that write 32 stamped chunks 20 ms apart
   (scripts/bench/fast_upstream.py); each chunk's delay from the worker's write to the
   client's read, direct and through each router.
3. Drain: 8 streams of 2 s each in flight, worker 1 drained (HAProxy: `set server ... state
   drain` on its runtime API, as router-ctl does; vllm-router: `POST /remove_worker`); how
   many streams end in [DONE], and where the next 20 requests go.
4. A worker killed (SIGKILL) under 8 clients of short streams: failed requests in all, and
   after the router had 3 s to notice.

    python -m scripts.bench.routers
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from .gateway import ROOT, Load, Target, free_port, start, stream_delays, wrk
from .stats import percentile

LLAMA_SERVER = ROOT / ".cache/sandbox/llama-build/bin/llama-server"
MODEL = ROOT / ".cache/sandbox/models/llamacpp/tiny-llama.gguf"
VLLM_ROUTER = ROOT / ".cache/bench/vllm-router-venv/bin/vllm-router"
VLLM_ROUTER_VERSION = "0.1.17"
SECONDS = 8
HAPROXY = """global
    stats socket {directory}/admin.sock mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
    option http-no-delay
frontend llm
    bind 127.0.0.1:{port}
    default_backend llm_hosts
backend llm_hosts
    balance leastconn
    option httpchk
    http-check send meth GET uri /health
    http-check expect status 200
    default-server check inter 1000ms fall 2 rise 2
    server w1 127.0.0.1:{worker1}
    server w2 127.0.0.1:{worker2}
"""


class Router:
    """One candidate in front of two workers: started, drained, stopped."""

    def __init__(self, name: str, workers: tuple[int, int], directory: Path) -> None:
        self.name, self.workers, self.port = name, workers, free_port()
        if name == "HAProxy":
            config = directory / "haproxy.cfg"
            config.write_text(
                HAPROXY.format(directory=directory, port=self.port, worker1=workers[0], worker2=workers[1])
            )
            self.socket = directory / "admin.sock"
            command = ["haproxy", "-f", str(config)]
        else:
            urls = [f"http://127.0.0.1:{port}" for port in workers]
            command = [str(VLLM_ROUTER), "--host", "127.0.0.1", "--port", str(self.port), "--worker-urls", *urls,
                       "--policy", "round_robin", "--health-check-interval-secs", "1",
                       "--prometheus-port", str(free_port())]  # fmt: skip
        self.process = start(command, self.port, "/health")
        time.sleep(2.5)  # both workers' first health checks passed

    def drain_first(self) -> None:
        if self.name == "HAProxy":
            with socket.socket(socket.AF_UNIX) as admin:
                admin.connect(str(self.socket))
                admin.sendall(b"set server llm_hosts/w1 state drain\n")
                admin.recv(4096)
        else:
            url = f"http://127.0.0.1:{self.workers[0]}"
            httpx.post(f"http://127.0.0.1:{self.port}/remove_worker", params={"url": url}, timeout=10)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def worker_processes(kind: str, chunks: int = 32, interval_ms: float = 20) -> tuple[list[subprocess.Popen], tuple]:
    """Two workers and their ports. The fast ones differ by one chunk (worker 2 writes one
    more), so that a stream tells which worker it came from."""
    ports = (free_port(), free_port())
    if kind == "llama-server":
        # 8 slots: 8 clients fit, and its HTTP threads (slots + 2) take them all; with fewer it
        # closes connections it cannot serve, which a router counts as a failed host.
        command = [str(LLAMA_SERVER), "-m", str(MODEL), "-c", "2048", "-np", "8", "--port"]
        return [start([*command, str(port)], port, "/health") for port in ports], ports
    command = [sys.executable, str(ROOT / "scripts/bench/fast_upstream.py")]
    return [
        start([*command, str(port), str(chunks + extra), str(interval_ms)], port, "/health")
        for extra, port in enumerate(ports)
    ], ports


def stream_outcome(client: httpx.Client, url: str) -> int:
    """The number of chunks of a stream that ended in [DONE]; 0 when it failed."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16, "stream": True}
    try:
        with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
            text = response.read().decode()
    except httpx.HTTPError:
        return 0
    done = response.status_code == 200 and text.rstrip().endswith("data: [DONE]")
    return text.count("data: {") if done else 0


def load(
    urls: list[str],
    stream: bool,
    connections: int,
    model: str = "m",
    headers: dict[str, str] | None = None,
    verify: str | bool = True,
) -> Load:
    """`connections` clients in a loop for SECONDS, each taking `urls` in turn: requests/s and
    latency p50 / p99 (ms); `verify`: the CA file of https URLs' certificates. A
    Python client on a new connection each time, not wrk: llama-server closes kept-alive
    connections after an answer without notice, which wrk counts as an error; the client's
    own cost is the same on every path."""
    # No prompt cache: direct, every request would find its prompt cached in the one worker;
    # through a router, only every other one.
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16, "stream": stream,
            "cache_prompt": False}  # fmt: skip
    latencies: list[float] = []
    deadline = time.monotonic() + SECONDS

    def client() -> None:
        with httpx.Client(timeout=30, headers={"connection": "close"} | (headers or {}), verify=verify) as session:
            turn = 0
            while time.monotonic() < deadline:
                url, turn = urls[turn % len(urls)], turn + 1
                started = time.perf_counter()
                response = session.post(url + "/v1/chat/completions", json=body)
                if response.status_code != 200 or (stream and "[DONE]" not in response.text):
                    raise SystemExit(f"{url}: {response.status_code} {response.text[:200]}")
                latencies.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Load(len(latencies) / SECONDS, percentile(latencies, 50), percentile(latencies, 99))


def part_latency(directory: Path) -> dict[str, dict[str, Load]]:
    workers, ports = worker_processes("llama-server")
    found: dict[str, dict[str, Load]] = {}
    try:
        # The baseline takes the two workers in turn, as a router does: both share this
        # machine's two cores, so each is slower than one alone.
        paths = {"direct, both workers in turn": (list(ports), None)}
        for name in ("HAProxy", "vllm-router"):
            router = Router(name, ports, directory)
            paths[name] = ([router.port], router)
        for name, (path_ports, _router) in paths.items():
            urls = [f"http://127.0.0.1:{port}" for port in path_ports]
            runs = [(kind, c) for kind in ("plain", "stream") for c in (1, 8)]
            found[name] = {f"{kind} c={c}": load(urls, kind == "stream", c) for kind, c in runs}
        for _ports, router in paths.values():
            if router:
                router.stop()
    finally:
        for worker in workers:
            worker.terminate()
    return found


def part_overhead(directory: Path) -> dict[str, dict[int, Load]]:
    """The routers' own cost: wrk, non-streamed, against workers that answer in microseconds."""
    workers, ports = worker_processes("fast")
    found = {"direct": {c: wrk(Target("direct", ports[0]), False, c, SECONDS, directory) for c in (1, 16)}}
    try:
        for name in ("HAProxy", "vllm-router"):
            router = Router(name, ports, directory)
            found[name] = {c: wrk(Target(name.lower(), router.port), False, c, SECONDS, directory) for c in (1, 16)}
            router.stop()
    finally:
        for worker in workers:
            worker.terminate()
    return found


def part_sse(directory: Path) -> dict[str, list[float]]:
    workers, ports = worker_processes("fast")
    found = {"direct": asyncio.run(stream_delays(ports[0], {}, 4, 4))}
    try:
        for name in ("HAProxy", "vllm-router"):
            router = Router(name, ports, directory)
            found[name] = asyncio.run(stream_delays(router.port, {}, 4, 4))
            router.stop()
    finally:
        for worker in workers:
            worker.terminate()
    return found


def each_router(directory: Path, chunks: int, interval_ms: float) -> Iterator[tuple[str, Router, list]]:
    """Each candidate in turn in front of two fresh fast workers: (name, router, workers)."""
    for name in ("HAProxy", "vllm-router"):
        workers, ports = worker_processes("fast", chunks=chunks, interval_ms=interval_ms)
        router = Router(name, ports, directory)
        try:
            yield name, router, workers
        finally:
            router.stop()
            for worker in workers:
                worker.terminate()


def part_drain(directory: Path) -> dict[str, str]:
    found = {}
    for name, router, _workers in each_router(directory, chunks=100, interval_ms=20):
        url = f"http://127.0.0.1:{router.port}"
        in_flight = streams(url, 8, after=router.drain_first)
        following = streams(url, 20)
        done = sum(1 for chunks in in_flight if chunks)
        to_first = sum(1 for chunks in following if chunks == 100)
        found[name] = (
            f"{done} of 8 in-flight streams ended in [DONE]; of the next 20, {to_first} went to the drained worker"
        )
    return found


def streams(url: str, count: int, after: Callable[[], None] | None = None) -> list[int]:
    """`count` concurrent streams from `url`, and `after` called 0.5 s into them: their chunk counts."""
    results: list[int] = []
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=count)) as client:
        threads = [threading.Thread(target=lambda: results.append(stream_outcome(client, url))) for _ in range(count)]
        for thread in threads:
            thread.start()
        if after:
            time.sleep(0.5)
            after()
        for thread in threads:
            thread.join()
    return results


def part_kill(directory: Path) -> dict[str, str]:
    found = {}
    for name, router, workers in each_router(directory, chunks=8, interval_ms=5):
        stop = threading.Event()
        outcomes: list[tuple[float, bool]] = []
        url = f"http://127.0.0.1:{router.port}"
        clients = [threading.Thread(target=keep_streaming, args=(url, stop, outcomes)) for _ in range(8)]
        for thread in clients:
            thread.start()
        time.sleep(1)
        killed = time.monotonic()
        workers[0].send_signal(signal.SIGKILL)
        time.sleep(6)
        stop.set()
        for thread in clients:
            thread.join()
        failed = [at for at, ok in outcomes if not ok]
        late = sum(1 for at in failed if at - killed > 3)
        found[name] = f"{len(failed)} of {len(outcomes)} requests failed, {late} of them over 3 s after the kill"
    return found


def keep_streaming(url: str, stop: threading.Event, outcomes: list[tuple[float, bool]]) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            outcomes.append((time.monotonic(), stream_outcome(client, url) > 0))


def print_loads(found: dict[str, dict], baseline: str) -> None:
    """A Markdown table: a row per path, a column per load; added p50 against `baseline`'s."""
    columns = list(found[baseline])
    print("| path | " + " | ".join(f"c={c}" if isinstance(c, int) else c for c in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, loads in found.items():
        cells = [
            f"{run.rate:.0f}/s, {run.p50:.2f} / {run.p99:.2f} ({run.p50 - found[baseline][key].p50:+.2f})"
            for key, run in loads.items()
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    if not VLLM_ROUTER.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VLLM_ROUTER.parents[1])], check=True)
        pip = [str(VLLM_ROUTER.parent / "pip"), "install", "--quiet", f"vllm-router=={VLLM_ROUTER_VERSION}"]
        subprocess.run(pip, check=True)
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        latency = part_latency(directory)
        overhead = part_overhead(directory)
        sse = part_sse(directory)
        drain = part_drain(directory)
        kill = part_kill(directory)

    print("\n1. Two llama-server workers (tiny model): req/s, p50 / p99 ms (added p50 vs direct)")
    print_loads(latency, "direct, both workers in turn")
    print("\n1b. The routers' own cost, wrk against instant workers: req/s, p50 / p99 ms (added p50)")
    print_loads(overhead, "direct")
    print("\n2. SSE: each chunk's delay from the worker's write to the client's read, ms")
    print("| path | p50 | p99 | max |\n|---|---|---|---|")
    for name, delays in sse.items():
        print(f"| {name} | {percentile(delays, 50):.2f} | {percentile(delays, 99):.2f} | {max(delays):.2f} |")
    print("\n3. Drain of worker 1 with 8 streams of 2 s in flight")
    for name, line in drain.items():
        print(f"  {name}: {line}")
    print("\n4. Worker 1 killed under 8 clients of short streams")
    for name, line in kill.items():
        print(f"  {name}: {line}")


if __name__ == "__main__":
    main()
