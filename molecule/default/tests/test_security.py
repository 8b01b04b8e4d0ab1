"""What the converged sandbox host exposes and allows: listening sockets, the containers'
confinement, the gateway unit's sandboxing, and a key rotation without a restart."""

from __future__ import annotations

import ipaddress
import re
import shlex

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
    """The containers' own account, not root; no capability, no privilege gain, a bound on
    processes, models mounted read-only."""
    account = host.user("switchyard-llm")
    assert account.exists and account.uid != 0 and account.shell == "/usr/sbin/nologin"
    for name in host.check_output("podman ps --format '{{.Names}}'").split():
        pid = host.check_output(f"podman inspect --format '{{{{.State.Pid}}}}' {name}")
        status = dict(
            line.split(":\t", 1)
            for line in host.file(f"/proc/{pid}/status").content_string.splitlines()
            if ":\t" in line
        )
        # Real, effective, saved and filesystem ids, as the host's kernel sees them.
        assert status["Uid"].split() == [str(account.uid)] * 4, (name, status["Uid"])
        assert status["Gid"].split() == [str(account.gid)] * 4, (name, status["Gid"])
        assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0, (name, status["CapBnd"])
        assert status["NoNewPrivs"].strip() == "1", name
        assert host.check_output(f"podman inspect --format '{{{{.HostConfig.PidsLimit}}}}' {name}") == "4096"
        mounts = host.check_output(f"podman inspect --format '{{{{range .Mounts}}}}{{{{.RW}}}} {{{{end}}}}' {name}")
        assert mounts.split() and set(mounts.split()) == {"false"}, (name, mounts)


# Run inside a container: connect to each ADDRESS:PORT given, and to a port the kernel gave
# a listener of the container's own; print how each attempt ended.
CONNECT = """
import errno, socket, sys

def attempt(address, port):
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as client:
        client.settimeout(5)
        try:
            client.connect((address, port))
        except OSError as error:
            return errno.errorcode.get(error.errno, str(error))
        return "connected"

own = socket.create_server(("127.0.0.1", 0))
targets = [("127.0.0.1", own.getsockname()[1])]
targets += [(target.rpartition(":")[0].strip("[]"), int(target.rpartition(":")[2])) for target in sys.argv[1:]]
print(" ".join(attempt(address, port) for address, port in targets))
"""


def test_a_container_reaches_neither_the_hosts_services_nor_the_metadata_address(host):
    """From inside a running service container, as its account: the backend, the gateway and
    sshd on loopback, and a cloud's metadata address, are refused at once by the firewall
    (admin-prohibited: EHOSTUNREACH over IPv4, EACCES over IPv6; with the rules unloaded, each
    connected or said ECONNREFUSED), while a port the kernel gave the container's own
    processes stays open to them."""
    targets = "127.0.0.1:8000 127.0.0.1:8080 127.0.0.1:2222 [::1]:8080 169.254.169.254:80"
    outcome = host.check_output(f"podman exec llm-embedding python3 -c {shlex.quote(CONNECT)} {targets}")
    assert outcome.split() == ["connected"] + ["EHOSTUNREACH"] * 3 + ["EACCES", "EHOSTUNREACH"], outcome
    assert host.service("switchyard-containers-firewall").is_enabled


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
