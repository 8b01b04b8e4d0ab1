"""The fleet behind its router (roles/router: HAProxy), in one run on two fresh sandbox hosts
with molecule/fleet's inventory (llama.cpp on both, the router on the first):

1. Non-streamed chat completions from 1 and 8 clients (scripts/bench/routers.py's client):
   straight to one host's gateway (the baseline), through the router with one host (the
   other drained) and with both. "added" is the router's p50 minus the baseline's. Both
   hosts share this machine's two cores, so two hosts do not double the rate here; on real
   hosts each brings its own GPU.
2. The rolling switch llama.cpp -> Ollama (the test double) -> llama.cpp with four clients of
   the router (two streaming, 0.1 s between requests, as in molecule/fleet): each switch's
   duration and the failed requests.

Run it as `make bench-fleet`.
"""

from __future__ import annotations

import os
import subprocess

from scripts.clients import failures, traffic

from .gateway import Load
from .routers import load
from .sandbox import PROJECT, Sandbox

SANDBOX = os.environ.get("SWITCHYARD_SANDBOX", "switchyard-bench")
INVENTORY = PROJECT / "molecule/fleet/inventory/hosts.yml"
KEY = "sandbox-key-not-secret-0001"
HEADERS = {"Authorization": f"Bearer {KEY}"}
ROUTER_CTL = ["/usr/local/libexec/switchyard/router-ctl", "/run/haproxy/admin.sock"]
# The router serves TLS with the sandbox's self-signed pair (scripts/sandbox/up.sh).
ROUTER_URL = "https://127.0.0.1:8090"
ROUTER_CA = str(PROJECT / ".cache/sandbox/router-tls/router.crt")


def loads(url: str) -> dict[int, Load]:
    return {
        connections: load([url], False, connections, "tiny-llama", HEADERS, verify=ROUTER_CA) for connections in (1, 8)
    }


def main() -> None:
    host_b = Sandbox(f"{SANDBOX}-b", INVENTORY, ssh_port=2223, ports="8100 8101 8102 8180")
    with Sandbox(SANDBOX, INVENTORY) as host_a, host_b:
        converge = host_a.site()
        results = {"one host's gateway, direct": loads("http://127.0.0.1:8080")}
        host_a.run(*ROUTER_CTL, "drain", "switchyard-sandbox-b")
        results["router, 1 host"] = loads(ROUTER_URL)
        host_a.run(*ROUTER_CTL, "admit", "switchyard-sandbox-b")
        subprocess.run(["sleep", "3"], check=True)  # two health checks pass: it is up again
        results["router, 2 hosts"] = loads(ROUTER_URL)
        switches = {}
        with traffic(ROUTER_URL, KEY, pause_s=0.1, verify=ROUTER_CA) as outcomes:
            for backend in ("ollama", "llamacpp"):
                switches[backend] = host_a.site(f"llm_backend={backend}")
        failed = failures(outcomes)

    baseline = results["one host's gateway, direct"]
    print(f"\nFleet of 2 sandbox hosts; first converge of both and the router: {converge:.0f} s\n")
    print("| path | c=1 p50 / p99 ms | added p50 ms | c=8 req/s | c=8 p50 / p99 ms | req/s vs direct |")
    print("|---|---|---|---|---|---|")
    for name, found in results.items():
        one, eight = found[1], found[8]
        print(
            f"| {name} | {one.p50:.2f} / {one.p99:.2f} | {one.p50 - baseline[1].p50:+.2f} | {eight.rate:.0f} | "
            f"{eight.p50:.2f} / {eight.p99:.2f} | {eight.rate / baseline[8].rate:.2f}x |"
        )
    print("\n| rolling switch, 2 hosts, 4 clients of the router | seconds |")
    print("|---|---|")
    for backend, seconds in switches.items():
        print(f"| llm_backend={backend} | {seconds:.0f} |")
    print(f"\nrequests through the router during both switches: {len(outcomes)}, failed: {len(failed)}")
    for problem in failed[:5]:
        print("  ", problem)


if __name__ == "__main__":
    main()
