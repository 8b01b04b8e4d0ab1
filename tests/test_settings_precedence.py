"""A setting written in any place Ansible documents wins over the project's defaults.

The defaults are role defaults (roles/switchyard_defaults), the lowest rank there is. Each
case writes llm_backend=ollama and gateway_port=9090 in one place and renders, with the real
templates, what a run renders from them (tests/render_settings.yml): the backend's unit
must run Ollama's container and the gateway must listen on 9090; a host with nothing
written gets vLLM on 8080.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
WRITTEN = {"llm_backend": "ollama", "gateway_port": 9090}
DEFAULT = ("llm-vllm", "8080")
CHOSEN = ("llm-ollama", "9090")


def render(tmp_path: Path, inventory: dict, files: dict[str, dict] | None = None, *options: str) -> Path:
    """Renders with an inventory directory: hosts.yml, and group_vars/ or host_vars/ files."""
    directory = tmp_path / "inventory"
    for name, content in {"hosts.yml": inventory, **(files or {})}.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(json.dumps(content))
    out = tmp_path / "rendered"
    playbook = options[0] if options and options[0].endswith(".yml") else str(PROJECT / "tests/render_settings.yml")
    command = ["ansible-playbook", f"--inventory={directory}", playbook, "-e", f"render_dir={out}"]
    command += [option for option in options if not option.endswith(".yml")]
    env = os.environ | {"ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg")}
    done = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def what_runs(out: Path, host: str) -> tuple[str, str]:
    """(the backend unit's container, the gateway's port) as rendered for `host`."""
    unit = (out / host / "llm-backend.service").read_text().replace("\\\n", " ")
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    container = argv[argv.index("--name") + 1]
    env = (out / host / "gateway-server.env").read_text().splitlines()
    port = next(line.split("=", 1)[1] for line in env if line.startswith("SWITCHYARD_GATEWAY_PORT="))
    return container, port


def test_each_host_gets_what_its_own_places_say(tmp_path):
    """Host and group places side by side in one inventory, and a host with none."""
    inventory = {
        "llm_hosts": {
            "hosts": {"defaults": {}, "file-host-vars": WRITTEN, "host-vars-dir": {}},
            "children": {
                "file_group": {"hosts": {"file-group-vars": {}}, "vars": WRITTEN},
                "dir_group": {"hosts": {"group-vars-dir": {}}},
            },
        }
    }
    files = {"group_vars/dir_group.yml": WRITTEN, "host_vars/host-vars-dir.yml": WRITTEN}
    out = render(tmp_path, inventory, files)
    assert what_runs(out, "defaults") == DEFAULT
    for host in ("file-host-vars", "host-vars-dir", "file-group-vars", "group-vars-dir"):
        assert what_runs(out, host) == CHOSEN, host


PLACES = {
    # The issue's own example: group vars in the inventory file.
    "inventory file, llm_hosts vars": ({"llm_hosts": {"hosts": {"h": {}}, "vars": WRITTEN}}, {}, ()),
    "inventory file, all vars": ({"all": {"vars": WRITTEN}, "llm_hosts": {"hosts": {"h": {}}}}, {}, ()),
    "inventory group_vars/all.yml": ({"llm_hosts": {"hosts": {"h": {}}}}, {"group_vars/all.yml": WRITTEN}, ()),
    "inventory group_vars/llm_hosts.yml": (
        {"llm_hosts": {"hosts": {"h": {}}}},
        {"group_vars/llm_hosts.yml": WRITTEN},
        (),
    ),
    "-e": ({"llm_hosts": {"hosts": {"h": {}}}}, {}, ("-e", json.dumps(WRITTEN))),
}


@pytest.mark.parametrize("place", list(PLACES))
def test_a_value_written_for_all_hosts_wins_over_the_default(tmp_path, place):
    inventory, files, options = PLACES[place]
    out = render(tmp_path, inventory, files, *options)
    assert what_runs(out, "h") == CHOSEN


def test_play_vars_of_a_playbook_that_imports_ours_win_over_the_default(tmp_path):
    wrapper = tmp_path / "wrapper.yml"
    wrapper.write_text(
        json.dumps([{"ansible.builtin.import_playbook": str(PROJECT / "tests/render_settings.yml"), "vars": WRITTEN}])
    )
    out = render(tmp_path, {"llm_hosts": {"hosts": {"h": {}}}}, {}, str(wrapper))
    assert what_runs(out, "h") == CHOSEN
