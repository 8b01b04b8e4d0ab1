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
    assert returncode == 1
    assert "gpu-z is not a server of the router's llm_hosts (known: gpu-a, gpu-b, gpu-c)" in message
    assert commands_sent(admin_socket) == []
