"""The run lock's guard (playbooks/files/switchyard-run-guard): what it takes of the run's
command line, and how it tells that the run is gone. The guard itself, killing a real run's
lifelines, is tested in Molecule (default: test_lock.py, switch: the killed switches)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import time
from pathlib import Path

GUARD = Path(__file__).resolve().parents[1] / "playbooks/files/switchyard-run-guard"
loader = importlib.machinery.SourceFileLoader("switchyard_run_guard", str(GUARD))
spec = importlib.util.spec_from_loader(loader.name, loader)
guard = importlib.util.module_from_spec(spec)
loader.exec_module(guard)


def test_only_connection_variables_and_files_of_the_extra_vars_are_passed_on():
    """No setting, key or password of the run lands on the guard's command line."""
    kept = guard.connection_vars(
        [
            "llm_backend=ollama ansible_user=ubuntu",
            '{"ansible_port": 2201, "gateway_api_key": "sk-secret"}',
            "@vars/fleet.yml",
            "ansible_become_password=secret ansible_ssh_pass=secret",
        ]
    )
    assert kept == ['{"ansible_user": "ubuntu"}', '{"ansible_port": 2201}', "@vars/fleet.yml"]


def test_the_run_options_become_ansible_options_one_per_value():
    parsed = {"inventory": ("/a.yml", "/b.yml"), "remote_user": "ubuntu", "timeout": None, "vault_ids": ()}
    assert guard.options_for_adhoc(parsed) == ["--inventory=/a.yml", "--inventory=/b.yml", "--user=ubuntu"]


def test_a_zombie_run_is_gone_and_a_running_one_is_not():
    running = subprocess.Popen(["sleep", "30"])
    ended = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while guard.alive(ended.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert guard.alive(running.pid)
        assert not guard.alive(ended.pid), "a process that exited but was not reaped counts as alive"
    finally:
        running.kill()
        running.wait()
        ended.wait()


def test_the_tree_of_a_process_holds_its_descendants_in_other_sessions():
    parent = subprocess.Popen(["sh", "-c", "setsid sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 10
        while len(guard.tree(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        shell, sleep = guard.tree(parent.pid)
        assert shell == parent.pid
        assert os.getsid(sleep) == sleep != os.getsid(shell), "the child was not in a session of its own"
    finally:
        for pid in reversed(guard.tree(parent.pid)):
            subprocess.run(["kill", "-9", str(pid)], check=False)
        parent.wait()
