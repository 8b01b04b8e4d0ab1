"""router-ctl (roles/router/files/router-ctl) against HAProxy's runtime API as HAProxy 2.6 answers.

A test double stands in for HAProxy's admin socket: it answers `show servers state llm_hosts`
and `show stat` with the lines recorded from HAProxy 2.6.12 (Debian 12's package, the one the
router role installs; tests/fixtures/haproxy-2.6/, three servers: gpu-a up, gpu-b up and
drained, gpu-c down), with the states and session counts a test sets in place of the
recorded ones, and applies `set server llm_hosts/NAME state drain|ready|maint` as HAProxy does
to those states. Anything else gets HAProxy's answer to an unknown command.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
ROUTER_CTL = PROJECT / "roles/router/files/router-ctl"
RECORDED = Path(__file__).parent / "fixtures/haproxy-2.6"
# srv_op_state and srv_admin_state as HAProxy sets them (router-ctl's constants, src/server.h).
RUNNING, STOPPED = 2, 0
DRAIN, MAINT = 0x08, 0x01
ADMIN_STATES = {"drain": DRAIN, "maint": MAINT, "ready": 0}
STAT_STATUS = {(RUNNING, 0): "UP", (RUNNING, DRAIN): "DRAIN", (STOPPED, 0): "DOWN"}


@dataclass
class Server:
    op: int
    admin: int
    sessions: int = 0
    # False: not checked since HAProxy started, its first check in progress.
    checked: bool = True


@dataclass
class AdminSocket:
    """The stand-in: the servers' states, and every command it was sent."""

    path: str
    servers: dict[str, Server]
    received: list[str] = field(default_factory=list)

    def answer(self, line: str) -> str:
        self.received.append(line)
        if line == "show servers state llm_hosts":
            return self._servers_state()
        if line == "show stat":
            return self._stat()
        words = line.split()
        if words[:2] == ["set", "server"] and words[3:4] == ["state"] and words[2].startswith("llm_hosts/"):
            self.servers[words[2].removeprefix("llm_hosts/")].admin = ADMIN_STATES[words[4]]
            return "\n"
        return "Unknown command. Please enter one of the following commands only :\n"

    def _servers_state(self) -> str:
        version, header, *rows = (RECORDED / "show-servers-state.txt").read_text().splitlines()
        out = [version, header]
        for row in filter(None, rows):
            cells = row.split()
            server = self.servers[cells[3]]
            cells[5], cells[6] = str(server.op), str(server.admin)
            if not server.checked:
                cells[10], cells[13] = "0", "7"  # srv_check_status, srv_check_state
            out.append(" ".join(cells))
        return "\n".join(out) + "\n\n"

    def _stat(self) -> str:
        header, *rows = (RECORDED / "show-stat.txt").read_text().splitlines()
        names = header.lstrip("# ").split(",")
        out = [header]
        for row in filter(None, rows):
            cells = row.split(",")
            server = self.servers.get(cells[1])
            if server is not None:
                cells[names.index("scur")] = str(server.sessions)
                cells[names.index("status")] = STAT_STATUS.get((server.op, server.admin), "MAINT")
            out.append(",".join(cells))
        return "\n".join(out) + "\n\n"


@pytest.fixture
def admin_socket(tmp_path: Path) -> Iterator[AdminSocket]:
    """The recorded fleet: gpu-a serving, gpu-b up but drained, gpu-c down."""
    stand_in = AdminSocket(
        str(tmp_path / "admin.sock"),
        {"gpu-a": Server(RUNNING, 0), "gpu-b": Server(RUNNING, DRAIN), "gpu-c": Server(STOPPED, 0)},
    )
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(stand_in.path)
    listener.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                line = conn.makefile("r").readline().rstrip("\n")
                conn.sendall(stand_in.answer(line).encode())

    threading.Thread(target=serve, daemon=True).start()
    yield stand_in
    listener.close()


def router_ctl(admin_socket: AdminSocket, action: str, server: str) -> tuple[int, dict | str]:
    done = subprocess.run(
        [sys.executable, str(ROUTER_CTL), admin_socket.path, action, server],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout) if done.stdout else done.stderr


def commands_sent(admin_socket: AdminSocket) -> list[str]:
    return [line for line in admin_socket.received if line.startswith("set ")]


def test_show_reads_a_servers_state_and_sessions(admin_socket):
    admin_socket.servers["gpu-b"].sessions = 3
    assert router_ctl(admin_socket, "show", "gpu-b") == (
        0,
        {"up": True, "drained": True, "maintenance": False, "serving": False, "sessions": 3,
         "others_serving": 1, "changed": False},
    )  # fmt: skip
    assert router_ctl(admin_socket, "show", "gpu-c")[1]["up"] is False
    assert commands_sent(admin_socket) == []


def test_the_last_serving_host_is_not_drained(admin_socket):
    """gpu-b is drained and gpu-c down: draining gpu-a would leave the router no host."""
    returncode, state = router_ctl(admin_socket, "drain", "gpu-a")
    assert (returncode, state["serving"], state["others_serving"]) == (3, True, 0)
    assert commands_sent(admin_socket) == []


def test_admit_then_drain_hand_the_traffic_over(admin_socket):
    returncode, state = router_ctl(admin_socket, "admit", "gpu-b")
    assert (returncode, state["serving"], state["changed"]) == (0, True, True)
    returncode, state = router_ctl(admin_socket, "drain", "gpu-a")
    assert (returncode, state["drained"], state["serving"], state["changed"]) == (0, True, False, True)
    assert commands_sent(admin_socket) == [
        "set server llm_hosts/gpu-b state ready",
        "set server llm_hosts/gpu-a state drain",
    ]


def test_a_drained_host_is_drained_once_and_an_undrained_one_admitted_never(admin_socket):
    assert router_ctl(admin_socket, "drain", "gpu-b")[1]["changed"] is False
    assert router_ctl(admin_socket, "admit", "gpu-a")[1]["changed"] is False
    assert commands_sent(admin_socket) == []


def test_an_operators_maintenance_is_left_as_it_is(admin_socket):
    admin_socket.servers["gpu-c"].admin = MAINT
    for action in ("drain", "admit"):
        returncode, state = router_ctl(admin_socket, action, "gpu-c")
        assert (returncode, state["maintenance"], state["changed"]) == (0, True, False)
    assert commands_sent(admin_socket) == []


def test_an_unknown_server_is_named_with_the_known_ones(admin_socket):
    returncode, message = router_ctl(admin_socket, "drain", "gpu-z")
    assert returncode == 4
    assert "gpu-z is not a server of the router's llm_hosts (known: gpu-a, gpu-b, gpu-c)" in message
    assert commands_sent(admin_socket) == []


CONFIG = """global
    server-state-file /var/lib/haproxy/switchyard-server-state

backend llm_hosts
    default-server check inter 1000ms fall 2 rise 2
    server gpu-a 127.0.0.1:9001
    server gpu-b 127.0.0.1:9002
    server gpu-c 10.0.0.3:9003
    server gpu-d gpu-d.example:8080
"""


def save(admin_socket: AdminSocket | None, tmp_path: Path) -> dict[str, list[str]]:
    """router-ctl save for CONFIG; the state file's rows by server name."""
    (tmp_path / "haproxy.cfg").write_text(CONFIG)
    state_file = tmp_path / "server-state"
    path = admin_socket.path if admin_socket else str(tmp_path / "no-haproxy.sock")
    subprocess.run(
        [sys.executable, str(ROUTER_CTL), path, "save", str(tmp_path / "haproxy.cfg"), str(state_file)],
        check=True, timeout=30,
    )  # fmt: skip
    version, header, *rows = state_file.read_text().splitlines()
    assert (version, header) == ("1", (RECORDED / "show-servers-state.txt").read_text().splitlines()[1])
    return {row.split()[3]: row.split() for row in rows}


def test_save_keeps_the_running_states_and_starts_new_or_moved_hosts_down(admin_socket, tmp_path):
    """gpu-a and gpu-b stay as HAProxy runs them (gpu-b drained); gpu-c moved to another
    address and keeps its drain but starts down, as gpu-d, new, does; nothing else is listed."""
    recorded = {
        row.split()[3]: row.split() for row in (RECORDED / "show-servers-state.txt").read_text().splitlines()[2:] if row
    }
    admin_socket.servers["gpu-c"] = Server(RUNNING, DRAIN)
    rows = save(admin_socket, tmp_path)
    assert list(rows) == ["gpu-a", "gpu-b", "gpu-c", "gpu-d"]
    assert rows["gpu-a"] == recorded["gpu-a"]
    assert rows["gpu-b"][5:7] == [str(RUNNING), str(DRAIN)]
    # srv_addr, srv_op_state, srv_admin_state, srv_check_health, srv_fqdn, srv_port
    assert [rows["gpu-c"][i] for i in (4, 5, 6, 12, 17, 18)] == ["10.0.0.3", "0", str(DRAIN), "0", "-", "9003"]
    assert [rows["gpu-d"][i] for i in (4, 5, 6, 12, 17, 18)] == ["-", "0", "0", "0", "gpu-d.example", "8080"]
    assert all(len(row) == len(recorded["gpu-a"]) for row in rows.values())
    assert commands_sent(admin_socket) == []


def test_save_without_a_running_haproxy_reads_the_last_file(admin_socket, tmp_path):
    """Before a start (no admin socket), the states written at the last stop are kept."""
    admin_socket.servers["gpu-a"] = Server(RUNNING, MAINT)
    save(admin_socket, tmp_path)
    rows = save(None, tmp_path)
    assert rows["gpu-a"][5:7] == [str(RUNNING), str(MAINT)]
    assert rows["gpu-b"][5:7] == [str(RUNNING), str(DRAIN)]


def test_maint_puts_a_drained_host_in_maintenance_once(admin_socket):
    returncode, state = router_ctl(admin_socket, "maint", "gpu-b")
    assert (returncode, state["maintenance"], state["serving"], state["changed"]) == (0, True, False, True)
    assert router_ctl(admin_socket, "maint", "gpu-b")[1]["changed"] is False
    assert commands_sent(admin_socket) == ["set server llm_hosts/gpu-b state maint"]


def test_save_writes_no_row_that_makes_haproxy_crash(admin_socket, tmp_path):
    """A server not checked yet (check status 0, a check in progress: HAProxy 2.6.12's own
    answer right after it starts) is written as initializing, with no check in progress: read
    back as it was, those rows made HAProxy's worker segfault within 30 s, at every restart."""
    admin_socket.servers["gpu-a"] = Server(STOPPED, 0, checked=False)
    rows = save(admin_socket, tmp_path)
    for row in rows.values():
        # srv_check_status, srv_check_state, srv_agent_state
        assert row[10] != "0" and int(row[13]) & 1 == 0 and int(row[14]) & 1 == 0, row
    assert [rows["gpu-a"][i] for i in (5, 10, 13)] == ["0", "1", "6"]
