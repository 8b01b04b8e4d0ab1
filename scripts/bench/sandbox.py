"""A fresh sandbox host for a benchmark: created on entry, provisioned with site.yml, removed on exit."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


class Sandbox:
    def __init__(
        self, name: str, *scenario_inventories: Path, engine: str = "podman", ssh_port: int = 2222, ports: str = ""
    ) -> None:
        """A host beside another one takes the SSH port and service ports its inventory gives it."""
        self.name = name
        self.engine = engine
        self.inventories = (PROJECT / "inventory/sandbox/hosts.yml", *scenario_inventories)
        self.up_env = {"SWITCHYARD_SANDBOX_ENGINE": engine, "SWITCHYARD_SANDBOX_SSH_PORT": str(ssh_port)}
        if ports:
            self.up_env["SWITCHYARD_SANDBOX_PORTS"] = ports

    def __enter__(self) -> Sandbox:
        self._down()
        up = os.environ | self.up_env
        subprocess.run([PROJECT / "scripts/sandbox/up.sh", self.name], check=True, env=up)
        return self

    def __exit__(self, *exc: object) -> None:
        self._down()

    def _down(self) -> None:
        subprocess.run([PROJECT / "scripts/sandbox/down.sh", self.name], check=True, stdout=subprocess.DEVNULL)

    def site(self, *extra_vars: str) -> float:
        """Run site.yml on the sandbox host, -e per item; return its wall time in seconds."""
        command = ["ansible-playbook", *(f"--inventory={path}" for path in self.inventories), str(PROJECT / "site.yml")]
        for item in extra_vars:
            command += ["--extra-vars", item]
        env = os.environ | {"SWITCHYARD_SANDBOX": self.name, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg")}
        started = time.monotonic()
        subprocess.run(command, cwd=PROJECT, env=env, check=True, stdout=subprocess.DEVNULL)
        return time.monotonic() - started

    def run(self, *argv: str) -> str:
        """Run a command on the sandbox host; return its standard output."""
        done = subprocess.run(["podman", "exec", self.name, *argv], check=True, capture_output=True, text=True)
        return done.stdout
