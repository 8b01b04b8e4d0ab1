"""Fixtures for the tests of every Molecule scenario, run against its sandbox host.

The sandbox shares this machine's network, so its services answer on 127.0.0.1 here just
as they would for curl on the host itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import pytest

from scripts import clients
from scripts.clients import Outcome

PROJECT = Path(__file__).resolve().parents[1]
# The container of the scenario's sandbox host (scripts/sandbox/up.sh; .config/molecule/config.yml).
SANDBOX = os.environ.get("SWITCHYARD_SANDBOX", "switchyard-molecule")
BACKEND_URL = "http://127.0.0.1:8000"
GATEWAY_URL = "http://127.0.0.1:8080"
# The sandbox inventory's gateway_api_key (inventory/sandbox/group_vars/sandbox_hosts.yml).
GATEWAY_KEY = "sandbox-key-not-secret-0001"
BACKEND_CONTAINERS = ("llm-vllm", "llm-ollama", "llm-llamacpp")


def pytest_configure(config: pytest.Config) -> None:
    """The directory of testinfra's SSH connection to the sandbox host (molecule/ssh_config),
    which a machine that never ran ssh lacks."""
    (Path.home() / ".ssh").mkdir(mode=0o700, exist_ok=True)


@dataclass
class PlaybookRun:
    returncode: int
    output: str


class SiteRunner(Protocol):
    def __call__(
        self, *extra_vars: str, check: bool = False, playbook: str = "site.yml", tags: str = ""
    ) -> PlaybookRun: ...


def site_command(
    scenario: Path, *extra_vars: str, check: bool = False, playbook: str = "site.yml", tags: str = ""
) -> list[str]:
    """ansible-playbook as a user runs it against the scenario's sandbox, with -e per item."""
    command = [
        "ansible-playbook",
        f"--inventory={PROJECT / 'inventory/sandbox/hosts.yml'}",
        f"--inventory={scenario / 'inventory/hosts.yml'}",
        str(PROJECT / playbook),
    ]
    for item in extra_vars:
        command += ["--extra-vars", item]
    if check:
        command.append("--check")
    if tags:
        command.append(f"--tags={tags}")
    return command


PLAYBOOK_ENV = os.environ | {"ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}


@pytest.fixture
def run_site(request: pytest.FixtureRequest) -> SiteRunner:
    """Run a playbook against the scenario's sandbox the way a user would, with -e per item."""
    scenario = request.path.parents[1]

    def run(*extra_vars: str, check: bool = False, playbook: str = "site.yml", tags: str = "") -> PlaybookRun:
        command = site_command(scenario, *extra_vars, check=check, playbook=playbook, tags=tags)
        done = subprocess.run(command, cwd=PROJECT, env=PLAYBOOK_ENV, capture_output=True, text=True, check=False)
        return PlaybookRun(done.returncode, done.stdout + done.stderr)

    return run


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(base_url=BACKEND_URL, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def gateway() -> Iterator[httpx.Client]:
    """A client of the gateway on :8080, with the sandbox's API key."""
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    with httpx.Client(base_url=GATEWAY_URL, headers=headers, timeout=60) as client:
        yield client


@contextmanager
def repeating(action: Callable[[], None], every_s: float) -> Iterator[None]:
    """Calls `action` in a background thread every `every_s` seconds while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            action()
            stop.wait(every_s)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def traffic(
    url: str, pause_s: float = 0, verify: str | bool = True, timeout_s: float = 300, sdk_retries: int | None = None
) -> Iterator[list[Outcome]]:
    """Four clients of `url` with the sandbox's key, two of them streaming (scripts/clients.py);
    `verify`: the CA file an https URL's certificate is checked against; `timeout_s`: how long
    a request may wait for its next bytes; `sdk_retries`: the official SDKs' clients, with that
    many retries, rather than plain HTTP ones that never retry."""
    with clients.traffic(
        url, GATEWAY_KEY, pause_s=pause_s, verify=verify, timeout_s=timeout_s, sdk_retries=sdk_retries
    ) as outcomes:
        yield outcomes


def engine(host) -> str:
    """The sandbox host's container engine: docker where the docker scenario installed it."""
    return "docker" if host.exists("docker") else "podman"


def backend_containers(host) -> dict[str, str]:
    """Running backend containers on the sandbox host: name -> container id."""
    listing = host.check_output(f"{engine(host)} ps --format '{{{{.Names}}}} {{{{.ID}}}}'")
    pairs = (line.split() for line in listing.splitlines() if line.strip())
    return {name: cid for name, cid in pairs if name in BACKEND_CONTAINERS}


def pooling_containers(host) -> dict[str, str]:
    """Running embedding and reranker containers on the sandbox host: name -> container id."""
    listing = host.check_output(f"{engine(host)} ps --format '{{{{.Names}}}} {{{{.ID}}}}'")
    pairs = (line.split() for line in listing.splitlines() if line.strip())
    return {name: cid for name, cid in pairs if name in ("llm-embedding", "llm-reranker")}


# test_api.py's ways in: the services' own ports, and the gateway with the sandbox's key.
TEST_API_TARGETS = {"direct": [], "gateway": ["--gateway", GATEWAY_URL, "--api-key", GATEWAY_KEY]}


def assert_test_api_passes(target: list[str]) -> None:
    """The original design's test_api.py: models, chat, stream, embedding and rerank all PASS."""
    run = subprocess.run(
        [sys.executable, str(PROJECT / "test_api.py"), *target], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("PASS") == 5, run.stdout


def served_models(http) -> list[str]:
    return [model["id"] for model in http.get("/v1/models").json()["data"]]


def assert_gateway_routes_to(gateway, backend: str) -> None:
    """Clients of the gateway keep one model name, whichever backend answers."""
    config = gateway.get("/config").json()
    assert config["backend"] == backend
    pooling = [name for name in (config["models"]["embedding"], config["models"]["reranker"]) if name]
    assert served_models(gateway) == ["tiny-llama", *pooling]
    # A bound on the answer: the tiny model, sampling, may not end it before the sandbox's
    # 512-token context is full, which llama-server answers with a 500.
    reply = gateway.post(
        "/v1/chat/completions",
        json={"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == "tiny-llama"


def assert_serving(host, http, backend: str, model: str, container_id: str | None = None) -> None:
    """Exactly this backend's container runs, lists the model and answers a chat."""
    containers = backend_containers(host)
    assert list(containers) == [f"llm-{backend}"]
    if container_id is not None:
        assert containers[f"llm-{backend}"] == container_id, "the running backend was restarted"
    assert model in served_models(http)
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text


def assert_llamacpp_serving(host, http, container_id: str | None = None) -> None:
    assert_serving(host, http, "llamacpp", "tiny-llama", container_id)


@pytest.fixture
def llamacpp_id(host, http) -> str:
    """The running llama.cpp container's id, once it is seen serving."""
    assert_llamacpp_serving(host, http)
    return backend_containers(host)["llm-llamacpp"]
