"""What the converged sandbox host exposes and allows: listening sockets, the containers'
confinement, the gateway unit's sandboxing, and a key rotation without a restart."""

from __future__ import annotations

import ipaddress
import re

import httpx

from conftest import GATEWAY_KEY, GATEWAY_URL

ROTATED_KEY = "sandbox-rotated-key-not-secret-0002"


def listeners(host) -> list[tuple[str, str]]:
    """(local address, process) of every TCP listener of the sandbox host's own processes.
    The sandbox shares this machine's network, so sockets of processes outside it (shown
    without a process by ss) are not the host's."""
    found = []
    for line in host.check_output("ss -Hltnp").splitlines():
        address = line.split()[3].rsplit(":", 1)[0].strip("[]")
        found += [(address, process) for process in re.findall(r'\("([^"]+)",pid=', line)]
    return found


def test_every_listening_socket_is_on_loopback(host):
    """Nothing listens beyond the host unless a setting opened it: the model servers are on
    127.0.0.1 by default, the sandbox's gateway too (its key is committed)."""
    found = listeners(host)
    processes = {process for _address, process in found}
    assert "llama-server" in processes and any(name.startswith("python") for name in processes), found
    open_ = [(address, process) for address, process in found if not ipaddress.ip_address(address).is_loopback]
    assert open_ == [], f"listening beyond loopback: {open_}"


def test_service_containers_are_confined(host):
    """No capability, no privilege gain, a bound on processes, models mounted read-only."""
    for name in host.check_output("podman ps --format '{{.Names}}'").split():
        pid = host.check_output(f"podman inspect --format '{{{{.State.Pid}}}}' {name}")
        status = dict(
            line.split(":\t", 1)
            for line in host.file(f"/proc/{pid}/status").content_string.splitlines()
            if ":\t" in line
        )
        assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0, (name, status["CapBnd"])
        assert status["NoNewPrivs"].strip() == "1", name
        assert host.check_output(f"podman inspect --format '{{{{.HostConfig.PidsLimit}}}}' {name}") == "4096"
        mounts = host.check_output(f"podman inspect --format '{{{{range .Mounts}}}}{{{{.RW}}}} {{{{end}}}}' {name}")
        assert mounts.split() and set(mounts.split()) == {"false"}, (name, mounts)


def test_the_gateway_unit_is_sandboxed(host):
    """systemd's own exposure score for the unit: 2.0 or lower (it was 6.5)."""
    report = host.check_output("systemd-analyze security --no-pager llm-gateway.service")
    score = float(re.search(r"Overall exposure level for llm-gateway.service: ([0-9.]+)", report)[1])
    print(f"systemd-analyze security llm-gateway.service: {score}")
    assert score <= 2.0, report


def test_a_key_added_and_revoked_reaches_the_gateway_without_a_restart(host, run_site):
    def main_pid() -> str:
        return host.check_output("systemctl show --property=MainPID --value llm-gateway")

    def accepted(key: str) -> bool:
        response = httpx.get(GATEWAY_URL + "/v1/models", headers={"x-api-key": key}, timeout=10)
        assert response.status_code in (200, 401), response.text
        return response.status_code == 200

    pid = main_pid()
    added = run_site(f'{{"gateway_api_keys": ["{ROTATED_KEY}"]}}', tags="gateway")
    assert added.returncode == 0, added.output
    assert (accepted(GATEWAY_KEY), accepted(ROTATED_KEY)) == (True, True)

    revoked = run_site(tags="gateway")
    assert revoked.returncode == 0, revoked.output
    assert (accepted(GATEWAY_KEY), accepted(ROTATED_KEY)) == (True, False)
    assert main_pid() == pid, "the gateway was restarted"
    assert ROTATED_KEY not in added.output + revoked.output
