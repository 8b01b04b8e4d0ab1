"""Bad settings are refused by playbooks/check.yml before any play changes a host.

Each case runs `ansible-playbook site.yml --check` as a user would, with one bad value given
with -e, against a host reached over the local connection (check mode: nothing on this
machine changes even if a check were missing). The JSON callback tells which tasks ran: the
run must fail in the check play, with a message that names the setting, and no task of a
later play may have run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
# The plays of playbooks/check.yml: every host reached, then every setting checked.
CHECK_PLAYS = {"Reach every host", "Check the settings before anything changes"}
# The gateway is on, with a valid key, so that its checks run too.
GOOD = {"gateway_enabled": True, "gateway_api_key": "k" * 24}

CASES = [
    ("llm_backend=bogus", "llm_backend must be one of: vllm, ollama, llamacpp"),
    ("container_engine=lxc", "container_engine must be one of: podman, docker"),
    ("gpu_enabled=maybe", "gpu_enabled is 'maybe'"),
    ("nvidia_driver_source=debian", "nvidia_driver_source must be one of"),
    ("llm_backend_port=http", "llm_backend_port"),
    ("llm_embedding_port=8000", "must be four different ports"),
    ("llm_reranker_port=8001", "must be four different ports"),
    ("models_ollama_pull_port=8002", "must be four different ports"),
    ("llm_backend_port=70000", "between 1 and 65535"),
    ("gateway_port=8000", "gateway_port (8000) must be a port"),
    ("gateway_port=0", "gateway_port (0) must be a port"),
    ("llm_max_model_len=0", "llm_max_model_len is 0; it must be above 0"),
    ("llm_embedding_max_model_len=-1", "llm_embedding_max_model_len is -1; it must be above 0"),
    ("llm_health_timeout=0", "llm_health_timeout is 0; it must be above 0"),
    ("models_download_timeout=0", "models_download_timeout is 0; it must be above 0"),
    ("gateway_read_timeout=0", "gateway_read_timeout is 0; it must be above 0"),
    ("gateway_workers=-1", "gateway_workers is -1: set the number of worker processes"),
    ("llm_vllm_gpu_mem_util=1.5", "llm_vllm_gpu_mem_util = 1.5"),
    ("llm_vllm_gpu_mem_util=0.9", "together at most 1"),
    ("llm_embedding_gpu_mem_util=0", "llm_embedding_gpu_mem_util = 0"),
    ("llm_llamacpp_model_file=../etc/passwd.gguf", "llm_llamacpp_model_file is '../etc/passwd.gguf'"),
    ("llm_llamacpp_model_file=model.bin", "llm_llamacpp_model_file is 'model.bin'"),
    ("llm_ollama_model=../../escape", "llm_ollama_model is '../../escape'"),
    ("llm_vllm_model=org/../x", "llm_vllm_model is 'org/../x'"),
    ('{"llm_served_model_name": "qwen3\\nExecStartPre=/bin/false"}', "llm_served_model_name holds a newline"),
    ('{"llm_vllm_extra_args": ["--x", "a\\rb"]}', "llm_vllm_extra_args holds a newline"),
    ('{"gateway_model_name": "m\\u0000"}', "gateway_model_name holds a newline"),
    ('{"gateway_model_name": "m\\u2028SWITCHYARD_GATEWAY_AUTH=false"}', "gateway_model_name holds a newline"),
    ("llm_state_dir=var/lib/switchyard", "llm_state_dir is 'var/lib/switchyard'; give an absolute path"),
    ("llm_ollama_models_dir=/var/lib/../x", "llm_ollama_models_dir is '/var/lib/../x'"),
    ("llm_state_dir=/tmp", "llm_state_dir is '/tmp', a directory of the system itself"),
    ("llm_vllm_hf_cache_dir=/etc", "llm_vllm_hf_cache_dir is '/etc', a directory of the system itself"),
    ("llm_bind_address=everywhere", "llm_bind_address is 'everywhere'"),
    ('{"llm_bind_address": ""}', "llm_bind_address is ''; give an IPv4 or IPv6 address"),
    ("gateway_bind_address=my-host", "gateway_bind_address is 'my-host'"),
    ("gateway_bind_address=fe80::1%eth0", "gateway_bind_address is 'fe80::1%eth0'"),
    (
        '{"gateway_cors_origins": ["https://chat.example.com/app"]}',
        "gateway_cors_origins holds https://chat.example.com/app",
    ),
    ('{"gateway_cors_origins": ["chat.example.com"]}', "gateway_cors_origins holds chat.example.com: an origin"),
    ("gateway_api_key=short", "key number 1 is not valid: a key is at least 16"),
    ('{"gateway_api_key": ["' + "k" * 24 + '"]}', "gateway_api_key is a list: give one string"),
    ("llm_vllm_extra_args=--enforce-eager", "llm_vllm_extra_args is a string: give a list"),
    ('{"container_extra_packages": "podman-docker"}', "container_extra_packages is a string: give a list"),
    ('{"llm_image_archives": ["a.tar"]}', "llm_image_archives is a list: give a mapping"),
    ('{"llm_served_model_name": {"name": "x"}}', "llm_served_model_name is a mapping: give one string"),
    ('{"gateway_install_dir": true}', "gateway_install_dir is a boolean: give a path"),
    ('{"gateway_api_keys": ["#' + "k" * 20 + '"]}', "key number 2 is not valid"),
    ('{"gateway_api_keys": [{"key": "' + "b" * 20 + '", "name": "ci batch"}]}', "key number 2: name 'ci batch' is"),
    ('{"gateway_api_keys": [{"key": "' + "b" * 20 + '", "name": "key-1"}]}', "keys number 1 and 2 have the same"),
    ('{"gateway_api_keys": [{"key": "' + "b" * 20 + '", "max_in_flight": -2}]}', "max_in_flight -2 is not a whole"),
    ('{"gateway_api_keys": [{"secret": "' + "b" * 20 + '"}]}', "key number 2 has secret: use key, name,"),
    (
        '{"gateway_api_keys": [{"key": "' + "b" * 20 + '", "priority": 5}]}',
        "Some of gateway_api_keys have a priority, but llm_vllm_scheduling_policy is fcfs",
    ),
    ('{"gateway_api_key": "", "gateway_api_keys": []}', "auth on but no API key"),
    ('{"llm_ollama_image": "ollama latest"}', "llm_ollama_image is 'ollama latest', which is not an image reference"),
    ("llm_vllm_image=vllm@sha256:abc", "llm_vllm_image is 'vllm@sha256:abc', which is not"),
    ('{"llm_infinity_cpu_image": "infinity latest"}', "llm_infinity_cpu_image is 'infinity latest', which is not"),
    ("models_hf_endpoint=https://me:s3cret@hf-mirror.example", "models_hf_endpoint carries a user or password"),
    ('{"llm_backend_gpu_devices": ["all", "0"]}', "llm_backend_gpu_devices is ['all', '0']: give [all], or GPU"),
    ('{"llm_embedding_gpu_devices": []}', "llm_embedding_gpu_devices is []: give [all], or GPU indices or UUIDs"),
    ('{"llm_reranker_gpu_devices": ["gpu0"]}', "llm_reranker_gpu_devices is ['gpu0']: give [all], or GPU"),
    ('{"llm_backend_gpu_devices": "0"}', "llm_backend_gpu_devices is a string: give a list"),
    (
        '{"llm_backend": "vllm", "llm_vllm_gpu_mem_util": 0.85, "llm_pooling_engine": "vllm",'
        ' "llm_embedding_gpu_devices": ["1"], "llm_reranker_gpu_devices": ["1"]}',
        "together at most 1 on each GPU they share (GPU 1: llm_vllm_gpu_mem_util = 0.85,"
        " llm_embedding_gpu_mem_util = 0.1, llm_reranker_gpu_mem_util = 0.1)",
    ),
    ("llm_pooling_engine=tei", "llm_pooling_engine must be one of: auto, vllm, infinity"),
    ('{"gateway_auth": false}', "gateway_auth is false and gateway_bind_address is 0.0.0.0: anyone"),
    # -e key=value gives the string "false", which Jinja takes for true: read as a boolean.
    ("gateway_auth=false", "gateway_auth is false and gateway_bind_address is 0.0.0.0: anyone"),
    ("gateway_auth=no", "gateway_auth is false and gateway_bind_address is 0.0.0.0: anyone"),
    ("gateway_auth=0", "gateway_auth is false and gateway_bind_address is 0.0.0.0: anyone"),
    ('{"gateway_auth": false, "gateway_bind_address": "::"}', "gateway_bind_address is ::: anyone"),
]


@pytest.fixture(scope="module", autouse=True)
def facts_gathered_once(tmp_path_factory):
    """The runs of this module reach the same host: its facts are gathered by the first and
    read from a cache by the others (ansible.cfg's "smart" gathering), a second of each run."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANSIBLE_CACHE_PLUGIN", "ansible.builtin.jsonfile")
        patch.setenv("ANSIBLE_CACHE_PLUGIN_CONNECTION", str(tmp_path_factory.mktemp("facts")))
        yield


def run_site(
    tmp_path: Path,
    *extra_vars: str,
    playbook: str = "site.yml",
    second_host: dict | None = None,
    options: tuple[str, ...] = (),
    routers: dict | None = None,
) -> tuple[int, dict]:
    """With `second_host` (its own variables), a fleet: a second host beside bad-input-host,
    which also runs the router, or else the `routers` given (name: variables).
    `options`: more of ansible-playbook's options."""
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable} | GOOD
    hosts = {"bad-input-host": local}
    groups: dict = {"llm_hosts": {"hosts": hosts}}
    if second_host is not None:
        hosts["bad-input-host-2"] = local | {"gateway_port": 8180, "llm_backend_port": 8100} | second_host
        groups["llm_routers"] = {"hosts": routers or {"bad-input-host": {}}}
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps(groups))
    command = ["ansible-playbook", "--check", f"--inventory={inventory}", str(PROJECT / playbook), *options]
    for item in extra_vars:
        command += ["--extra-vars", item]
    env = os.environ | {
        "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
    }
    done = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, check=False, timeout=300)
    return done.returncode, json.loads(done.stdout)


def tasks_that_ran(report: dict) -> list[tuple[str, str, dict]]:
    """(play, task, result) of every task that ran on the host, skipped ones left out."""
    ran = []
    for play in report["plays"]:
        for task in play["tasks"]:
            result = task["hosts"].get("bad-input-host")
            if result is not None and not result.get("skipped"):
                ran.append((play["play"]["name"], task["task"]["name"], result))
    return ran


def what_the_user_reads(result: dict) -> str:
    """A failed task's message, and those of its failed loop items, on one line."""
    messages = [result.get("msg", "")] + [
        item.get("msg", "") for item in result.get("results", []) if item.get("failed")
    ]
    return " ".join(" ".join(str(message).split()) for message in messages)


@pytest.mark.parametrize(("extra_vars", "message"), CASES, ids=[case[0][:40] for case in CASES])
def test_bad_setting_is_refused_before_any_role_runs(tmp_path, extra_vars, message):
    returncode, report = run_site(tmp_path, extra_vars)
    assert returncode != 0
    ran = tasks_that_ran(report)
    assert {play for play, _task, _result in ran} <= CHECK_PLAYS, "a play after the check ran"
    failed = [result for _play, _task, result in ran if result.get("failed")]
    assert len(failed) == 1
    assert message in what_the_user_reads(failed[0])


ENTRY_PLAYBOOKS = [f"playbooks/{name}.yml" for name in ("container_engine", "gpu", "models", "router", "services")]


@pytest.mark.parametrize("playbook", ENTRY_PLAYBOOKS)
def test_every_playbook_run_alone_checks_the_settings_first(tmp_path, playbook):
    returncode, report = run_site(tmp_path, "llm_backend=bogus", playbook=playbook)
    assert returncode != 0
    ran = tasks_that_ran(report)
    assert {play for play, _task, _result in ran} <= CHECK_PLAYS, "a play after the check ran"
    (failed,) = [result for _play, _task, result in ran if result.get("failed")]
    assert "llm_backend must be one of: vllm, ollama, llamacpp" in what_the_user_reads(failed)


FLEET_CASES = [
    ("fleet_serial=0", {}, "fleet_serial is 0 and fleet_max_fail_percentage is 0"),
    ("fleet_serial=half", {}, "fleet_serial is half"),
    ("fleet_max_fail_percentage=150", {}, "fleet_max_fail_percentage is 150"),
    ("router_port=8080", {}, "router_port (8080) must be a port"),
    ("router_balance=source", {}, "router_balance must be one of"),
    ("router_check_fall=0", {}, "router_check_fall is 0; it must be above 0"),
    ("{}", {"gateway_enabled": False}, "bad-input-host-2 cannot be behind the router"),
    ("{}", {"gateway_model_name": "other"}, "the same gateway_model_name"),
    ("{}", {"gateway_api_key": "z" * 24}, "bad-input-host-2 and bad-input-host disagree on gateway_auth or on"),
    (
        '{"gateway_auth": false, "gateway_bind_address": "127.0.0.1"}',
        {},
        "has gateway_auth: false and the router listens on 0.0.0.0",
    ),
    ("{}", {"router_worker_address": "10.0.0.5", "gateway_bind_address": "127.0.0.1"}, "listens on 127.0.0.1 only"),
    (
        "router_tls_certificate_file=/nonexistent/router.crt",
        {},
        "router_tls_certificate_file (/nonexistent/router.crt) and router_tls_key_file (unset) go together",
    ),
    (
        '{"router_tls_certificate_file": "/nonexistent/router.crt", "router_tls_key_file": "/nonexistent/router.key"}',
        {},
        "set both to PEM files on this control node",
    ),
    ("{}", {}, "The router listens on 0.0.0.0 (router_bind_address) in plain HTTP"),
    ("router_bind_address=192.168.1.10", {}, "The router listens on 192.168.1.10 (router_bind_address) in plain HTTP"),
    (
        "router_bind_address=127.0.0.1",
        {"router_worker_address": "8.8.4.4", "gateway_bind_address": "0.0.0.0"},
        "The router reaches bad-input-host-2 on 8.8.4.4 (router_worker_address), a public address",
    ),
    # A standby router (keepalived); plain HTTP allowed, so that only the standby's check fails.
    (
        '{"router_virtual_address": "10.0.0.100", "router_allow_plain_http": true}',
        {},
        "router_virtual_address is 10.0.0.100, router_vrrp_id 51 and router_vrrp_priority 100: write the address",
    ),
    (
        '{"router_virtual_address": "10.0.0.100/24", "router_vrrp_priority": 255, "router_allow_plain_http": true}',
        {},
        "the id from 1 to 255 and the priority from 1 to 254",
    ),
    (
        '{"router_virtual_address": "10.0.0.100/24", "router_bind_address": "127.0.0.1"}',
        {},
        "shares the virtual address 10.0.0.100/24 but listens on 127.0.0.1 only (router_bind_address)",
    ),
    (
        '{"router_virtual_address": "10.0.0.100/24", "router_allow_plain_http": true}',
        {},
        "bad-input-host has bad-input-host: set router_vrrp_address to its IP address",
    ),
    (
        '{"router_virtual_address": "fd00::50/64", "router_vrrp_address": "127.0.0.1",'
        ' "router_allow_plain_http": true}',
        {},
        "bad-input-host has 127.0.0.1: set router_vrrp_address to its IP address on the network of"
        " router_vrrp_interface, IPv4 or IPv6 as the virtual address is",
    ),
    (
        '{"router_virtual_address": "10.0.0.100/24", "router_vrrp_address": "127.0.0.1",'
        ' "router_vrrp_interface": "nonexistent0", "router_allow_plain_http": true}',
        {},
        "bad-input-host has no network interface 'nonexistent0' (router_vrrp_interface)",
    ),
    (
        '{"router_virtual_address": "10.0.0.100/24", "router_vrrp_address": "127.0.0.1",'
        ' "router_allow_plain_http": true}',
        {},
        "bad-input-host has no network interface '' (router_vrrp_interface)",
    ),
]


@pytest.mark.parametrize(
    ("extra_vars", "second_host", "message"), FLEET_CASES, ids=[case[2][:40] for case in FLEET_CASES]
)
def test_a_bad_fleet_is_refused_before_any_role_runs(tmp_path, extra_vars, second_host, message):
    """Bad router settings, and hosts behind the router that would not answer alike."""
    returncode, report = run_site(tmp_path, extra_vars, second_host=second_host)
    assert returncode != 0
    assert "z" * 24 not in json.dumps(report), "a key is in the output"
    ran = tasks_that_ran(report)
    assert {play for play, _task, _result in ran} <= CHECK_PLAYS, "a play after the check ran"
    failed = [result for _play, _task, result in ran if result.get("failed")]
    assert len(failed) == 1
    assert message in what_the_user_reads(failed[0])


@pytest.mark.parametrize("playbook", ["site.yml", "playbooks/router.yml", "playbooks/services.yml"])
def test_a_run_limited_to_part_of_a_fleet_is_refused_before_any_role_runs(tmp_path, playbook):
    """The router's configuration and the checks across hosts need every host of the fleet."""
    returncode, report = run_site(tmp_path, playbook=playbook, second_host={}, options=("--limit=bad-input-host",))
    assert returncode != 0
    ran = tasks_that_ran(report)
    assert {play for play, _task, _result in ran} <= CHECK_PLAYS, "a play after the check ran"
    (failed,) = [result for _play, _task, result in ran if result.get("failed")]
    assert "This run leaves out bad-input-host-2 (--limit)" in what_the_user_reads(failed)


# Nothing listens on the discard port: the SSH connection is refused, as by a host that is down.
ROUTER_DOWN = {"router-down": {"ansible_host": "127.0.0.1", "ansible_port": 9, "ansible_connection": "ssh"}}
# The first host's router, and a second one that is down.
TWO_ROUTERS = {"bad-input-host": {}} | ROUTER_DOWN


def test_a_router_that_cannot_be_reached_is_named_with_the_limit_that_leaves_it_out(tmp_path):
    returncode, report = run_site(tmp_path, "router_bind_address=127.0.0.1", second_host={}, routers=TWO_ROUTERS)
    assert returncode != 0
    results = [task["hosts"].get("router-down") for play in report["plays"] for task in play["tasks"]]
    failed = [result for result in results if result and result.get("failed")]
    assert [play["play"]["name"] for play in report["plays"]] == ["Reach every host"], "a play after it ran"
    assert len(failed) == 1
    said = what_the_user_reads(failed[0])
    assert "router-down cannot be reached" in said and "leave it out with --limit '!router-down'" in said, said


def test_the_only_router_that_cannot_be_reached_is_named_without_a_limit_that_would_be_refused(tmp_path):
    """Leaving out the fleet's only router is refused (below): the way out is to bring it back."""
    returncode, report = run_site(tmp_path, "router_bind_address=127.0.0.1", second_host={}, routers=ROUTER_DOWN)
    assert returncode != 0
    results = [task["hosts"].get("router-down") for play in report["plays"] for task in play["tasks"]]
    (failed,) = [result for result in results if result and result.get("failed")]
    said = what_the_user_reads(failed)
    assert "router-down cannot be reached" in said and "bring a router back and run again" in said, said
    assert "--limit" not in said, said


@pytest.mark.parametrize("playbook", ["site.yml", "playbooks/check.yml"])
def test_a_run_that_leaves_out_a_router_that_is_down_goes_on(tmp_path, playbook):
    """The fleet's check passes, naming the router left out; site.yml then goes on to its
    roles (in check mode, here)."""
    returncode, report = run_site(
        tmp_path,
        "router_bind_address=127.0.0.1",
        playbook=playbook,
        second_host={},
        routers=TWO_ROUTERS,
        options=("--limit=!router-down",),
    )
    ran = tasks_that_ran(report)
    named = "router : Say which routers this run leaves out"
    said = [what_the_user_reads(result) for _play, task, result in ran if task == named]
    assert said == ["This run leaves out the router(s) router-down: they keep their configuration and their view"
                    " of the hosts as they were. Run playbooks/router.yml on them once they are back, before they"
                    " take requests again."]  # fmt: skip
    if playbook == "site.yml":
        assert {play for play, _task, _result in ran} - CHECK_PLAYS, "no play after the check ran"
    else:
        assert returncode == 0, [result for _play, _task, result in ran if result.get("failed")]


def test_a_run_that_leaves_out_every_router_is_refused(tmp_path):
    """The fleet's only router, on a host of its own, left out (--limit=llm_hosts)."""
    returncode, report = run_site(
        tmp_path, playbook="playbooks/check.yml", second_host={}, routers=ROUTER_DOWN, options=("--limit=llm_hosts",)
    )
    assert returncode != 0
    (failed,) = [result for _play, _task, result in tasks_that_ran(report) if result.get("failed")]
    assert "This run leaves out every router (--limit)" in what_the_user_reads(failed)


def test_a_good_fleet_passes_the_check(tmp_path):
    """Two hosts behind a router that serves TLS on every address, reaching one of them on a
    private address, the other by name; their key holds what HAProxy's configuration would
    read as syntax, which is fine: the router's health checks need no key."""
    tls = {
        "router_tls_certificate_file": str(tmp_path / "router.crt"),
        "router_tls_key_file": str(tmp_path / "router.key"),
    }
    for path in tls.values():
        Path(path).write_text("-----BEGIN PEM-----\n")
    second_host = {"router_worker_address": "10.0.0.5", "gateway_bind_address": "0.0.0.0"}
    returncode, report = run_site(
        tmp_path,
        "fleet_serial=50%",
        json.dumps(tls | {"gateway_api_key": "sk-#cut-%{expanded}-'quoted'-0001"}),
        playbook="playbooks/check.yml",
        second_host=second_host,
    )
    failed = [result for _play, _task, result in tasks_that_ran(report) if result.get("failed")]
    assert (returncode, failed) == (0, [])


def test_good_settings_pass_the_check(tmp_path):
    """The same host with its settings left alone, and with valid unusual ones (IPv6, -e strings)."""
    returncode, report = run_site(
        tmp_path,
        "llm_bind_address=::1",
        "llm_backend_port=9000",
        "llm_backend=llamacpp",
        "llm_ollama_image=docker.io/ollama/ollama:0.14.0@sha256:" + "0a" * 32,
        "llm_llamacpp_cpu_image=localhost:5000/llama.cpp@sha256:" + "1b" * 32,
        '{"gateway_cors_origins": ["https://chat.example.com", "http://[::1]:3000", "*"]}',
        # vLLM's share and the pooling services' on GPUs apart: together above 1, on no one GPU.
        '{"llm_backend": "vllm", "llm_vllm_gpu_mem_util": 0.95, "llm_backend_gpu_devices": ["0"],'
        ' "llm_pooling_engine": "vllm", "llm_embedding_gpu_devices": ["1"],'
        ' "llm_reranker_gpu_devices": ["GPU-5a3c4d1e-0f6b", "1:0"]}',
        playbook="playbooks/check.yml",
    )
    failed = [result for _play, _task, result in tasks_that_ran(report) if result.get("failed")]
    assert (returncode, failed) == (0, [])


@pytest.mark.parametrize(
    "extra_vars",
    [
        '{"gateway_auth": false, "gateway_bind_address": "127.0.0.1"}',
        '{"gateway_auth": false, "gateway_allow_unauthenticated_network": true}',
    ],
    ids=["loopback", "opted-in"],
)
def test_a_keyless_gateway_passes_on_loopback_or_when_opted_in(tmp_path, extra_vars):
    returncode, report = run_site(tmp_path, extra_vars, playbook="playbooks/check.yml")
    failed = [result for _play, _task, result in tasks_that_ran(report) if result.get("failed")]
    assert (returncode, failed) == (0, [])


@pytest.mark.parametrize("hosts", ["nope", "[]", '{"decommission_hosts": ["bad-input-host", "nope"]}'])
def test_decommissioning_a_host_the_inventory_lacks_is_refused_before_anything_changes(tmp_path, hosts):
    extra = hosts if hosts.startswith("{") else f"decommission_hosts={hosts}"
    returncode, report = run_site(tmp_path, extra, playbook="playbooks/decommission.yml")
    assert returncode != 0
    plays = [play for play in report["plays"] if any(task["hosts"] for task in play["tasks"])]
    assert [play["play"]["name"] for play in plays] == ["Check the hosts to decommission"]
    failed = [result for task in plays[0]["tasks"] for result in task["hosts"].values() if result.get("failed")]
    assert len(failed) == 1
    assert "names hosts of llm_hosts to take out of service" in what_the_user_reads(failed[0])
