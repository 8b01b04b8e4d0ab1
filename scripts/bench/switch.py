"""Time the provisioning on the sandbox host: a full converge, an idempotent re-run, and a
backend switch (llama.cpp -> Ollama -> llama.cpp), with the seconds port 8000 was down.

The switch target is the Ollama test double (molecule/default/files/ollama_test_double.py),
the only second backend that starts on these machines; it starts in well under a second,
so the switch time is the provisioning's own cost. Run it as `make bench`.
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


def main() -> None:
    with Sandbox(SANDBOX, PROJECT / "molecule/default/inventory/hosts.yml") as sandbox:
        full = sandbox.site()
        rerun = sandbox.site()
        switches = []
        for backend in ("ollama", "llamacpp"):
            with DowntimeProbe() as probe:
                seconds = sandbox.site(f"llm_backend={backend}")
            switches.append((backend, seconds, probe.down_seconds))

    print(f"\n{'measure':<42}{'seconds':>10}{'x re-run':>10}")
    print(f"{'full converge (fresh host)':<42}{full:>10.1f}{full / rerun:>10.2f}")
    print(f"{'idempotent re-run (baseline)':<42}{rerun:>10.1f}{1:>10.2f}")
    for backend, seconds, down in switches:
        print(f"{'switch to ' + backend + ', command to healthy':<42}{seconds:>10.1f}{seconds / rerun:>10.2f}")
        print(f"{'  port 8000 down during that switch':<42}{down:>10.2f}{down / rerun:>10.3f}")


if __name__ == "__main__":
    main()
