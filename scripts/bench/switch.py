"""Time the provisioning on the sandbox host: a full converge, an idempotent re-run, and a
backend switch (llama.cpp -> Ollama -> llama.cpp), with the seconds port 8000 was down -
with Podman, then with Docker (the molecule/docker settings), in one run.

The switch target is the Ollama test double (molecule/default/files/ollama_test_double.py),
the only second backend that starts on these machines; it starts in well under a second,
so the switch time is the provisioning's own cost. The baseline is Podman's idempotent
re-run. Run it as `make bench`.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import httpx

from .sandbox import PROJECT, Sandbox

SANDBOX = os.environ.get("SWITCHYARD_SANDBOX", "switchyard-bench")
HEALTH_URL = "http://127.0.0.1:8000/v1/models"


@dataclass
class DowntimeProbe:
    """Polls port 8000 every interval; sums the time between a failed probe and the next success."""

    interval: float = 0.05
    down_seconds: float = 0.0
    longest_gap: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        down_since: float | None = None
        with httpx.Client(timeout=1.0) as client:
            while not self._stop.is_set():
                now = time.monotonic()
                try:
                    healthy = client.get(HEALTH_URL).status_code == 200
                except httpx.HTTPError:
                    healthy = False
                if not healthy and down_since is None:
                    down_since = now
                elif healthy and down_since is not None:
                    self.down_seconds += now - down_since
                    self.longest_gap = max(self.longest_gap, now - down_since)
                    down_since = None
                time.sleep(self.interval)

    def __enter__(self) -> DowntimeProbe:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


ENGINES = {
    "podman": PROJECT / "molecule/default/inventory/hosts.yml",
    "docker": PROJECT / "molecule/docker/inventory/hosts.yml",
}


def measure(engine: str) -> dict[str, float]:
    with Sandbox(SANDBOX, ENGINES[engine], engine=engine) as sandbox:
        found = {"full converge (fresh host)": sandbox.site(), "idempotent re-run": sandbox.site()}
        for backend in ("ollama", "llamacpp"):
            with DowntimeProbe() as probe:
                found[f"switch to {backend}, command to healthy"] = sandbox.site(f"llm_backend={backend}")
            found[f"  port 8000 down during that switch to {backend}"] = probe.down_seconds
    return found


def main() -> None:
    results = {engine: measure(engine) for engine in ENGINES}
    baseline = results["podman"]["idempotent re-run"]
    print(f"\n{'measure (seconds; x Podman re-run)':<48}{'podman':>10}{'x':>7}{'docker':>10}{'x':>7}")
    for name in results["podman"]:
        podman, docker = results["podman"][name], results["docker"][name]
        print(f"{name:<48}{podman:>10.2f}{podman / baseline:>7.2f}{docker:>10.2f}{docker / baseline:>7.2f}")


if __name__ == "__main__":
    main()
