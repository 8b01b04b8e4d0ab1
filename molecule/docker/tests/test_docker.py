"""container_engine: docker, run for real: dockerd inside the sandbox host, the services as
systemd units around `docker run`, switched, rolled back, crashed and restarted with dockerd.

The second backend is the Ollama test double (molecule/default/files/ollama_test_double.py):
no Ollama binary can be had on these machines."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from conftest import (
    BACKEND_CONTAINERS,
    GATEWAY_KEY,
    GATEWAY_URL,
    assert_gateway_routes_to,
    assert_llamacpp_serving,
    assert_serving,
    backend_containers,
    repeating,
)


def all_containers(host) -> list[str]:
    """Every container dockerd has, running or not, as 'name status'."""
    return host.check_output("docker ps --all --format '{{.Names}} {{.State}}'").splitlines()


def wait_until_back(host, before: str, timeout: float = 180) -> float:
    """Seconds until the backend is back after its container went away: the unit active
    again (its readiness probe passed), a new container, and a completion through the
    gateway. `docker ps` fails while dockerd itself restarts."""
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        listing = host.run("docker ps --filter name=^llm-llamacpp$ --format '{{.ID}}'")
        renewed = listing.rc == 0 and listing.stdout.strip() not in ("", before)
        if renewed and host.run("systemctl is-active llm-backend").stdout.strip() == "active":
            try:
                answer = httpx.post(GATEWAY_URL + "/v1/chat/completions", headers=headers, json=body, timeout=30)
                if answer.status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"the backend was not back within {timeout} s")


@contextmanager
def backend_container_census(host) -> Iterator[list[set[str]]]:
    """Samples `docker ps` on the host every 0.3 s while the block runs: the set of
    backend containers running at each sample."""
    samples: list[set[str]] = []

    def sample() -> None:
        listing = host.run("docker ps --format '{{.Names}}'").stdout
        samples.append(set(listing.split()) & set(BACKEND_CONTAINERS))

    with repeating(sample, 0.3):
        yield samples


def test_dockerd_runs_with_overlay2(host):
    """The engine the role installed (Debian's docker.io), on the storage driver that works
    nested when /var/lib/docker is not on an overlay (scripts/sandbox/up.sh)."""
    assert host.package("docker.io").is_installed
    assert host.service("docker").is_running and host.service("docker").is_enabled
    assert host.check_output("docker info --format '{{.Driver}}'") == "overlay2"


def test_the_unit_follows_the_container(host, http):
    """The unit is active with the docker client as its main process, and exactly one
    backend container runs, the one the unit started."""
    assert host.service("llm-backend").is_running
    main_pid = host.check_output("systemctl show --property MainPID --value llm-backend")
    assert host.check_output(f"cat /proc/{main_pid}/comm") == "docker"
    assert_llamacpp_serving(host, http)
    assert all_containers(host) == ["llm-llamacpp running"]


def test_switch_to_ollama_and_back_one_backend_at_a_time(host, run_site, http, gateway):
    with backend_container_census(host) as samples:
        started = time.monotonic()
        to_ollama = run_site("llm_backend=ollama")
        to_ollama_s = time.monotonic() - started
        assert to_ollama.returncode == 0, to_ollama.output
        assert_serving(host, http, "ollama", "tiny:latest")
        assert_gateway_routes_to(gateway, "ollama")

        started = time.monotonic()
        back = run_site("llm_backend=llamacpp")
        back_s = time.monotonic() - started
        assert back.returncode == 0, back.output
        assert_llamacpp_serving(host, http)
        assert_gateway_routes_to(gateway, "llamacpp")
    print(f"docker: switch to Ollama {to_ollama_s:.1f} s, back to llama.cpp {back_s:.1f} s")
    assert samples and max(len(sample) for sample in samples) == 1, "two backend containers ran at once"
    assert {"llm-ollama"} in samples, "the census saw the Ollama backend"
    assert all_containers(host) == ["llm-llamacpp running"], "no container left under another backend's name"


def test_a_failed_switch_is_rolled_back(host, run_site, http):
    good_unit = host.file("/etc/systemd/system/llm-backend.service").content_string
    run = run_site('{"llm_llamacpp_extra_args": ["--no-such-flag"]}')
    assert run.returncode != 0
    assert "It was rolled back to its last healthy unit, which serves again after" in run.output
    assert host.file("/etc/systemd/system/llm-backend.service").content_string == good_unit
    assert_llamacpp_serving(host, http)
    assert all_containers(host) == ["llm-llamacpp running"]


def test_a_killed_container_is_replaced_and_nothing_is_left_behind(host, http):
    before = backend_containers(host)["llm-llamacpp"]
    host.check_output("docker kill --signal KILL llm-llamacpp")
    print(f"docker: backend container killed, serving again after {wait_until_back(host, before):.1f} s")
    assert_llamacpp_serving(host, http)
    assert all_containers(host) == ["llm-llamacpp running"]


def test_a_killed_docker_client_leaves_no_container_behind(host, http):
    """SIGKILL to the unit's main process (the client): dockerd still runs the container; the
    unit's stop removes it and its restart starts a new one under the same name."""
    before = backend_containers(host)["llm-llamacpp"]
    host.check_output("systemctl kill --signal=KILL --kill-whom=main llm-backend")
    print(f"docker: docker client killed, serving again after {wait_until_back(host, before):.1f} s")
    assert_llamacpp_serving(host, http)
    assert all_containers(host) == ["llm-llamacpp running"]


def test_the_services_come_back_after_docker_restarts(host):
    """dockerd stops its containers when it restarts: the unit must start a new one."""
    before = backend_containers(host)["llm-llamacpp"]
    host.check_output("systemctl restart docker")
    back = wait_until_back(host, before)
    print(f"docker: `systemctl restart docker` -> a completion through the gateway after {back:.1f} s")
    assert all_containers(host) == ["llm-llamacpp running"]
