"""Clients that drive the service and record what each request got: the Molecule tests'
traffic through a switch, and the benchmarks'. A request counts as ok when it answers 200 and,
streamed, ends in [DONE] with no error event."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

# (ok, seconds, what went wrong, when it started: time.monotonic())
Outcome = tuple[bool, float, str, float]


def drive_client(
    url: str,
    key: str,
    stop: threading.Event,
    stream: bool,
    outcomes: list[Outcome],
    pause_s: float = 0,
    verify: str | bool = True,
    timeout_s: float = 300,
) -> None:
    """One client of `url` (a gateway, or the router in front of gateways), in a loop until
    `stop`, `pause_s` between requests; `verify`: the CA file of an https URL's certificate;
    `timeout_s`: how long a request may wait for its next bytes."""
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": stream}
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=timeout_s, verify=verify) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    text = response.read().decode()
                events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
                if stream:
                    ok = response.status_code == 200 and events[-1:] == ["[DONE]"] and '"error"' not in text
                else:
                    ok = response.status_code == 200
                problem = "" if ok else f"{response.status_code} {text[-200:]}"
            except httpx.HTTPError as error:
                ok, problem = False, repr(error)
            outcomes.append((ok, time.monotonic() - started, problem, started))
            stop.wait(pause_s)


@contextmanager
def traffic(
    url: str, key: str, clients: int = 4, pause_s: float = 0, verify: str | bool = True, timeout_s: float = 300
) -> Iterator[list[Outcome]]:
    """`clients` clients of `url`, every other one streaming, for as long as the block runs;
    yields their outcomes as they come. With `pause_s`, each waits that long between requests
    (steady traffic rather than all the machine can take)."""
    stop = threading.Event()
    outcomes: list[Outcome] = []
    threads = [
        threading.Thread(
            target=drive_client, args=(url, key, stop, index % 2 == 0, outcomes, pause_s, verify, timeout_s)
        )
        for index in range(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        yield outcomes
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def failures(outcomes: list[Outcome]) -> list[str]:
    return [problem for ok, _seconds, problem, _started in outcomes if not ok]
