"""A fleet behind the router, driven as a user drives it: site.yml on an inventory of two hosts
and a llm_routers group. The hosts share this machine's loopback on their own ports: host A
(the testinfra host, which also runs the router) on 8000/8080, host B on 8100/8180. A standby
pair of two more routers, each with a network of its own, joins for the tests that use it."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from conftest import GATEWAY_KEY, PLAYBOOK_ENV, PROJECT, SANDBOX, site_command, traffic
from scripts.clients import CUT_MID_ANSWER, failures

ROUTER_URL = "https://127.0.0.1:8090"
# The router's self-signed certificate (scripts/sandbox/up.sh), which its clients trust.
ROUTER_CA = str(PROJECT / ".cache/sandbox/router-tls/router.crt")
HOSTS = {"switchyard-sandbox": "http://127.0.0.1:8080", "switchyard-sandbox-b": "http://127.0.0.1:8180"}
# Host B's container (scripts/sandbox/up.sh), beside host A's.
HOST_B = SANDBOX + "-b"
# The clients' pause between requests: steady traffic (four clients: a request every 0.2 s or
# so) that leaves the two cores to the runs; at 0.1 s, 17 requests a second went through
# the router, each served by a gateway and a llama-server, all through a rolling switch.
PAUSE_S = 0.5
# The SDK clients' retries through a router's failover (about 3-4 s here): the SDKs' default, 2,
# backs off about 1.5 s in all; 4, 6 to 7 s (docs/fleet.md).
SDK_RETRIES = 4
ROUTER_CTL = "/usr/local/libexec/switchyard/router-ctl /run/haproxy/admin.sock"
SCENARIO = Path(__file__).resolve().parents[1]


def router_state(host, server: str) -> dict:
    """What the router (HAProxy's runtime API, through router-ctl) says of one host."""
    return json.loads(host.check_output(f"{ROUTER_CTL} show {server}"))


def runtime_api(host, line: str) -> str:
    """HAProxy's answer to one command on its admin socket, as an operator sends it."""
    script = (
        "import socket, sys\n"
        "with socket.socket(socket.AF_UNIX) as s:\n"
        "    s.connect('/run/haproxy/admin.sock'); s.sendall(sys.argv[1].encode() + b'\\n')\n"
        "    print(s.makefile().read())\n"
    )
    return host.check_output("python3 -c %s %s", script, line)


def router_stat(host, server: str, field: str) -> int:
    """One counter of HAProxy's `show stat` for a host."""
    rows = csv.DictReader(io.StringIO(runtime_api(host, "show stat").lstrip("# ")))
    return int(next(row for row in rows if row["svname"] == server)[field] or 0)


def answered(gateway_url: str) -> float:
    """Chat completions a host's gateway has answered (its /metrics)."""
    text = httpx.get(gateway_url + "/metrics", headers={"x-api-key": GATEWAY_KEY}, timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("switchyard_gateway_requests_total{") and "/v1/chat/completions" in line
    )


def switching(gateway_url: str) -> bool:
    try:
        answer = httpx.get(gateway_url + "/switch", headers={"x-api-key": GATEWAY_KEY}, timeout=5)
        return answer.json().get("to") is not None
    except httpx.HTTPError:
        return False


def on_host_b(*argv: str) -> str:
    return subprocess.run(["podman", "exec", HOST_B, *argv], capture_output=True, text=True, check=True).stdout


def outcome_summary(outcomes: list) -> tuple[list[str], int]:
    return failures(outcomes), len(outcomes)


def test_the_router_spreads_requests_over_both_hosts(host):
    before = {name: answered(url) for name, url in HOSTS.items()}
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with httpx.Client(base_url=ROUTER_URL, headers=headers, timeout=60, verify=ROUTER_CA) as client:
        for _ in range(20):
            reply = client.post("/v1/chat/completions", json=body)
            assert reply.status_code == 200, reply.text
            assert reply.json()["model"] == "tiny-llama"
        # The router holds no key: a request without one reaches a gateway, which refuses it.
        unkeyed = httpx.post(ROUTER_URL + "/v1/chat/completions", json=body, timeout=60, verify=ROUTER_CA)
        assert unkeyed.status_code == 401
    # TLS only: a plain HTTP request to the router's port gets no answer.
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.post(
            ROUTER_URL.replace("https:", "http:") + "/v1/chat/completions", headers=headers, json=body, timeout=10
        )
    served = {name: answered(url) - before[name] for name, url in HOSTS.items()}
    assert all(count >= 3 for count in served.values()), served


@contextmanager
def router_watch(host) -> Iterator[list[dict]]:
    """Samples, while the block runs, of each host's gateway (switching or not) and of the
    router's view of it. A sample counts a host as switching only when its gateway said so
    both before and after the router was read, so the router's answer fell inside the switch."""
    stop = threading.Event()
    samples: list[dict] = []

    def loop() -> None:
        while not stop.is_set():
            before = {name: switching(url) for name, url in HOSTS.items()}
            states = {name: json.loads(line) for name, line in zip(HOSTS, router_lines(host), strict=True)}
            after = {name: switching(url) for name, url in HOSTS.items()}
            samples.append({name: (before[name] and after[name], states[name]) for name in HOSTS})
            # Each sample is an SSH session and two router-ctl runs: CPU a tighter loop takes from
            # the switch it watches, which keeps each host out for tens of seconds.
            stop.wait(0.5)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def router_lines(host) -> list[str]:
    command = "; ".join(f"{ROUTER_CTL} show {name}" for name in HOSTS)
    return host.check_output(command).splitlines()


STANDBY_NETWORK = "switchyard-standby"
# The standby pair: two routers sharing a virtual address (in the sandbox's router certificate:
# scripts/sandbox/up.sh), each a sandbox host with a network stack of its own on a Podman
# bridge, whose .1 is this machine's side, where the hosts' gateways listen for them. One pair
# at a time on this machine: Podman hands each address to one container.
STANDBY_ADDRESS = "10.89.77.100"
STANDBY_URL = f"https://{STANDBY_ADDRESS}:8090"
STANDBY_ROUTERS = {"switchyard-standby-1": "10.89.77.11", "switchyard-standby-2": "10.89.77.12"}
BRIDGE_SIDE = "10.89.77.1"


def standby_container(router: str) -> str:
    return SANDBOX + "-" + router.removeprefix("switchyard-")


def on_standby(router: str, command: str) -> str:
    return subprocess.run(
        ["podman", "exec", standby_container(router), "sh", "-c", command],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip


def address_holders() -> list[str]:
    """The standby routers that hold the virtual address now (a killed one holds nothing)."""
    holders = []
    for router in STANDBY_ROUTERS:
        shown = subprocess.run(
            ["podman", "exec", standby_container(router), "ip", "-brief", "-4", "address", "show", "eth0"],
            capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        if f" {STANDBY_ADDRESS}/" in shown.stdout:
            holders.append(router)
    return holders


def wait_for_holder(not_this: str = "") -> tuple[str, float]:
    """The router that takes the virtual address (other than `not_this`), and the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < 60:
        holders = [router for router in address_holders() if router != not_this]
        if holders:
            assert len(holders) == 1, holders
            return holders[0], time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"no standby router took {STANDBY_ADDRESS} in 60 s")


def restore_the_fleets_router(host) -> None:
    """The fleet's own router back to reaching the hosts on loopback, if a run with the standby
    pair's inventory left it reaching them on the bridge."""
    if f"{BRIDGE_SIDE}:" in host.file("/etc/haproxy/haproxy.cfg").content_string:
        restored = router_play()
        assert restored.returncode == 0, restored.stdout + restored.stderr


@pytest.fixture(scope="module")
def standby_pair(host, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two more routers, each a sandbox host with a network stack of its own, that share the
    virtual address, set up by the router's play with an inventory that adds them to
    llm_routers and has the hosts reached on the bridge: that inventory's --inventory option.
    The fleet's own router (the first host) stays one of the routers, without the address."""
    cache = "{{ hostvars['switchyard-sandbox'].switchyard_sandbox_cache }}"
    shared = {
        "ansible_port": 2222,
        "switchyard_sandbox_cache": cache,
        "router_tls_certificate_file": f"{cache}/router-tls/router.crt",
        "router_tls_key_file": f"{cache}/router-tls/router.key",
        "router_virtual_address": f"{STANDBY_ADDRESS}/24",
        "router_vrrp_interface": "eth0",
    }
    routers = {name: shared | {"ansible_host": address} for name, address in STANDBY_ROUTERS.items()}
    inventory = tmp_path_factory.mktemp("standby") / "standby.yml"
    inventory.write_text(
        json.dumps({
            "llm_hosts": {"hosts": {name: {"router_worker_address": BRIDGE_SIDE} for name in HOSTS}},
            "llm_routers": {"hosts": routers},
            "sandbox_hosts": {"hosts": {name: {} for name in routers}},
        })
    )  # fmt: skip
    option = f"--inventory={inventory}"
    try:
        for router, address in STANDBY_ROUTERS.items():
            # One left by a run that was killed is in a network namespace that is gone.
            subprocess.run([str(PROJECT / "scripts/sandbox/down.sh"), standby_container(router)], check=True)
            subprocess.run(
                [str(PROJECT / "scripts/sandbox/up.sh"), standby_container(router)],
                env=os.environ | {"SWITCHYARD_SANDBOX_NETWORK": STANDBY_NETWORK, "SWITCHYARD_SANDBOX_ADDRESS": address},
                check=True, timeout=180,
            )  # fmt: skip
        paired = router_play(option)
        assert paired.returncode == 0, paired.stdout + paired.stderr
        # Which one holds it first is a matter of timing (nopreempt); that it stays the only one
        # is not: each hears the other's VRRP.
        holder, _ = wait_for_holder()
        time.sleep(5)
        assert address_holders() == [holder], "both routers of the pair hold the address"
        yield option
    finally:
        restore_the_fleets_router(host)
        for router in STANDBY_ROUTERS:
            subprocess.run([str(PROJECT / "scripts/sandbox/down.sh"), standby_container(router)], check=False)


def test_a_rolling_switch_drains_each_host_in_turn_and_fails_no_request(host, standby_pair):
    """llama.cpp → Ollama on both hosts under four clients of the standby pair's virtual
    address, two of them streaming: each host is out of every router (the fleet's own, watched,
    and both of the pair) while its gateway switches, never both. The fleet stays on Ollama:
    the next switch, back to llama.cpp, is the one that fails on the second host."""
    with traffic(STANDBY_URL, PAUSE_S, verify=ROUTER_CA) as outcomes, router_watch(host) as samples:
        started = time.monotonic()
        run = fleet_play("site.yml", standby_pair, "-e", "llm_backend=ollama")
        duration = time.monotonic() - started
        assert run.returncode == 0, run.stdout + run.stderr
        for name in HOSTS:
            for router, address in STANDBY_ROUTERS.items():
                drained = f"changed: [{name} -> {router}({address})]"
                assert drained in run.stdout, f"{name} was not drained on {router}"
    failed, total = outcome_summary(outcomes)
    switching_seen = {name: sum(1 for sample in samples if sample[name][0]) for name in HOSTS}
    print(
        f"rolling switch of 2 hosts: {duration:.0f} s; "
        f"{total} requests through the standby pair, {len(failed)} failed; samples while switching: {switching_seen}"
    )
    assert total > 20
    assert failed == [], failed[:5]
    assert all(count > 0 for count in switching_seen.values()), "the watch saw no switch"
    for sample in samples:
        for name, (was_switching, state) in sample.items():
            if was_switching:
                assert state["drained"] and not state["serving"], f"{name} switched while the router sent it requests"
        assert any(state["serving"] for _switching, state in sample.values()), f"no host served: {sample}"
    for name in HOSTS:
        state = router_state(host, name)
        assert state["serving"] and not state["drained"], (name, state)
        assert httpx.get(HOSTS[name] + "/config", headers={"x-api-key": GATEWAY_KEY}).json()["backend"] == "ollama"


def test_a_standby_router_takes_the_address_when_the_active_one_dies(host, standby_pair):
    """Four clients of the official SDKs (OpenAI's chat streamed and whole, its Responses API,
    Anthropic's Messages streamed), each with SDK_RETRIES retries, through the pair's virtual
    address while host B is drained on both routers and a reload follows, and then the router
    that holds the address is killed, its whole host: the other takes the address within
    seconds. No request fails but a stream cut after its answer began on the killed router
    (no client can retry that); what was sent while no router held the address, or waited on
    the dead one, the SDKs retry. The killed router then stops a run that does not leave it
    out, named with the --limit that does; the run with it goes on."""
    holders = address_holders()
    assert len(holders) == 1, holders
    killed = holders[0]
    # A request on a router that dies without closing its connections waits for its client's
    # timeout, after which the SDK retries it: a short one.
    with traffic(STANDBY_URL, PAUSE_S, verify=ROUTER_CA, timeout_s=30, sdk_retries=SDK_RETRIES) as outcomes:
        time.sleep(3)
        for router in STANDBY_ROUTERS:
            on_standby(router, f"{ROUTER_CTL} drain switchyard-sandbox-b")
        reloaded = router_play(standby_pair, "-e", "router_check_rise=3")
        assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
        for router in STANDBY_ROUTERS:
            state = json.loads(on_standby(router, f"{ROUTER_CTL} show switchyard-sandbox-b"))
            assert state["drained"], (router, "the reload undrained host B", state)
        before_kill = len(outcomes)
        subprocess.run(["podman", "kill", standby_container(killed)], check=True, capture_output=True)
        survivor, moved_s = wait_for_holder(not_this=killed)
        time.sleep(15)
    through, since_kill = outcomes[:before_kill], outcomes[before_kill:]
    cut = [problem for problem in failures(since_kill) if problem.startswith(CUT_MID_ANSWER)]
    print(
        f"standby pair, {SDK_RETRIES} SDK retries: {len(through)} requests through a drain and a reload, "
        f"{len(failures(through))} failed; {killed} killed, {survivor} held the address {moved_s:.1f} s later; "
        f"{len(failures(since_kill))} of {len(since_kill)} sent since the kill failed, {len(cut)} of them "
        f"streams cut mid-answer ({sorted(set(failures(since_kill)))})"
    )
    assert through and not failures(through), failures(through)
    assert moved_s < 10
    assert since_kill and failures(since_kill) == cut, failures(since_kill)
    # Only a stream under way at the kill is cut: one per streaming client at most.
    assert len(cut) <= 2, cut
    assert json.loads(on_standby(survivor, f"{ROUTER_CTL} show switchyard-sandbox-b"))["drained"]

    try:
        before = host.file("/etc/haproxy/haproxy.cfg").content_string
        stopped = router_play(standby_pair, "-e", "router_check_rise=4")
        said = " ".join((stopped.stdout + stopped.stderr).split())
        assert stopped.returncode != 0
        assert f"{killed} cannot be reached" in said and f"--limit '!{killed}'" in said, said[-3000:]
        assert host.file("/etc/haproxy/haproxy.cfg").content_string == before, "a refused run changed a router"
        # The survivor alone, the killed router left out by name, and the address given up.
        went_on = router_play(
            standby_pair, f"--limit=!{killed}", "-e", "router_check_rise=4", "-e", "router_virtual_address="
        )
        assert went_on.returncode == 0, went_on.stdout + went_on.stderr
        assert f"This run leaves out the router(s) {killed}" in " ".join(went_on.stdout.split())
        assert "rise 4" in host.file("/etc/haproxy/haproxy.cfg").content_string
        assert "rise 4" in on_standby(survivor, "cat /etc/haproxy/haproxy.cfg")
        assert address_holders() == []
        assert on_standby(survivor, "systemctl is-active keepalived || true").strip() == "inactive"
    finally:
        restored = router_play()
        assert restored.returncode == 0, restored.stdout + restored.stderr


def lock_released(host, name: str) -> bool:
    """Whether the run lock of a fleet host is free (playbooks/lock.yml's unit is gone)."""
    argv = ["systemctl", "is-active", "--quiet", "switchyard-run"]
    if name == "switchyard-sandbox":
        return host.run(" ".join(argv)).rc != 0
    return subprocess.run(["podman", "exec", HOST_B, *argv], check=False).returncode != 0


def wait_for_locks_released(host) -> None:
    """The run's guard releases the locks once ansible-playbook has exited: within 30 s."""
    deadline = time.monotonic() + 30
    while not all(lock_released(host, name) for name in HOSTS):
        assert time.monotonic() < deadline, "a host kept the failed run's lock"
        time.sleep(1)


def fleet_table(report_file: Path) -> dict[str, list[str]]:
    """The fleet's table in Markdown (templates/fleet_status.md.j2): host -> its cells
    (health, backend, model, image, GPU, up since, router)."""
    lines = report_file.read_text().splitlines()
    rows = [line.strip("|").split("|") for line in lines if line.startswith("| switchyard")]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows}


def test_a_switch_that_fails_on_the_second_host_leaves_the_first_switched_and_both_serving(host, tmp_path):
    """The fleet back from Ollama to llama.cpp (a context of 448 tokens), whose new unit exits
    at start on the second host only (an argument llama-server refuses, set for it in the
    inventory): host A switches and serves, host B is rolled back to Ollama, its last healthy
    unit, and admitted again, the run fails naming B and ends with the fleet's table saying
    so, no request through the router fails, and both locks are released."""
    extra = tmp_path / "host-b.yml"
    extra.write_text(
        "llm_hosts:\n  hosts:\n    switchyard-sandbox-b:\n      llm_llamacpp_extra_args: [--no-such-flag]\n"
    )
    report_file = tmp_path / "fleet-status.md"
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with traffic(ROUTER_URL, PAUSE_S, verify=ROUTER_CA) as outcomes:
        run = fleet_play(
            "site.yml", f"--inventory={extra}", "-e", "llm_max_model_len=448", "-e", f"fleet_status_file={report_file}"
        )
    output = " ".join((run.stdout + run.stderr).split())
    failed, total = outcome_summary(outcomes)
    assert run.returncode != 0
    recap = dict(re.findall(r"^(switchyard-sandbox(?:-b)?) +: .* failed=(\d+)", run.stdout, re.MULTILINE))
    assert recap == {"switchyard-sandbox": "0", "switchyard-sandbox-b": "1"}, recap
    assert "It was rolled back to its last healthy unit" in output
    unit_a = host.file("/etc/systemd/system/llm-backend.service").content_string.replace("'", "")
    unit_b = on_host_b("cat", "/etc/systemd/system/llm-backend.service").replace("'", "")
    assert "--ctx-size 448" in unit_a, "host A did not switch"
    assert "no-such-flag" not in unit_b and "--ctx-size 448" not in unit_b, "host B kept the failed unit"
    assert failed == [], failed[:5]
    assert total > 5
    # The run ends with the fleet's table, read from the hosts: A up since this run's switch,
    # B since before it (rolled back to its last healthy unit), both serving, both in.
    assert "at the end of a run that failed on switchyard-sandbox-b" in report_file.read_text()
    table = fleet_table(report_file)
    assert list(table) == list(HOSTS)
    # Each host read on its own port (B's 8100 from its inventory, A's 8000 from the defaults):
    # read with B's settings, A's row gave B's model.
    served = {"switchyard-sandbox": ("llamacpp", "tiny-llama"), "switchyard-sandbox-b": ("ollama", "tiny:latest")}
    for name, (backend, model) in served.items():
        assert table[name][:3] == ["serving", backend, model], (name, table[name])
        assert table[name][6] == "serving", (name, table[name])
        assert f"{name}: serving, {backend} serving {model}" in output, name
    assert table["switchyard-sandbox"][5] >= started, table
    assert table["switchyard-sandbox-b"][5] < started, table
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    for name, gateway_url in HOSTS.items():
        assert router_state(host, name)["serving"], name
        answer = httpx.post(gateway_url + "/v1/chat/completions", json=body, headers={"x-api-key": GATEWAY_KEY})
        assert answer.status_code == 200, (name, answer.text)
    wait_for_locks_released(host)
    # Host A stays at 448 tokens and host B on Ollama: the next test's last run converges both.


HOLD_MARK = "/run/switchyard-run/switching"


def test_a_drain_that_outlasts_its_timeout_fails_the_host_and_cuts_nothing(
    host, run_site, second_router_down, tmp_path
):
    """A request that host A's gateway holds (a switch mark left on it by hand) keeps a router
    session open on A past router_drain_timeout_s: the run fails the host, which stays out of
    the router and restarts nothing, and stops there (host B untouched), its table saying so;
    the request then ends normally, and the next run switches and admits the host, with a
    second router that is down left out (--limit): the drain and the admission go to the
    router that is up."""
    backend_before = host.check_output("podman ps --filter name=llm-llamacpp --format '{{.ID}}'")
    mark = json.dumps({"to": "llamacpp", "hold_s": 120})
    host.run_expect([0], f"mkdir -p {os.path.dirname(HOLD_MARK)} && echo '{mark}' > {HOLD_MARK}")
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    answers: list[int] = []

    def ask() -> None:
        with httpx.Client(headers={"x-api-key": GATEWAY_KEY}, timeout=180, verify=ROUTER_CA) as client:
            answers.append(client.post(ROUTER_URL + "/v1/chat/completions", json=body).status_code)

    askers = []
    while router_state(host, "switchyard-sandbox")["sessions"] == 0:  # until one lands on host A
        assert len(askers) < 10, "no request reached host A"
        askers.append(threading.Thread(target=ask))
        askers[-1].start()
        time.sleep(0.5)
    report_file = tmp_path / "fleet-status.md"
    run = run_site("llm_max_model_len=384", "router_drain_timeout_s=3", f"fleet_status_file={report_file}")
    assert run.returncode != 0
    table = fleet_table(report_file)
    assert [table[name][6] for name in HOSTS] == ["drained", "serving"], table
    assert (
        "switchyard-sandbox still carries 1 request(s) from the routers after 3 s (router_drain_timeout_s)."
        " It stays out of the routers, finishing them, and its services were not restarted."
    ) in " ".join(run.output.split())
    assert router_state(host, "switchyard-sandbox")["drained"]
    assert host.check_output("podman ps --filter name=llm-llamacpp --format '{{.ID}}'") == backend_before
    unit_b = on_host_b("cat", "/etc/systemd/system/llm-backend.service").replace("'", "")
    assert "--ctx-size 384" not in unit_b, "the run went on to the second host"
    host.run(f"rm -f {HOLD_MARK}")  # the run's lock took its directory with it; in case it did not
    for asker in askers:
        asker.join()
    assert answers == [200] * len(askers), answers
    again = fleet_play("site.yml", second_router_down, f"--limit=!{ROUTER_DOWN}")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"switchyard-sandbox -> {ROUTER_DOWN}" not in again.stdout, "a host was drained on the router left out"
    for name in HOSTS:
        assert router_state(host, name)["serving"], name


def fleet_play(playbook: str, *options: str) -> subprocess.CompletedProcess:
    """A playbook on the scenario's inventory, with any more `options` (inventories, --limit)."""
    command = [*site_command(SCENARIO, playbook=playbook), *options]
    return subprocess.run(command, cwd=PROJECT, env=PLAYBOOK_ENV, capture_output=True, text=True, check=False)


def router_play(*options: str) -> subprocess.CompletedProcess:
    """The router's play alone, on the scenario's inventory and any more `options`."""
    return fleet_play("playbooks/router.yml", *options)


ROUTER_DOWN = "switchyard-router-gone"


@pytest.fixture
def second_router_down(tmp_path: Path) -> str:
    """An inventory with a second router that is down: nothing answers on its SSH port."""
    extra = tmp_path / "routers.yml"
    extra.write_text(
        f"llm_routers:\n  hosts:\n    {ROUTER_DOWN}:\n      ansible_host: 127.0.0.1\n      ansible_port: 9\n"
    )
    return f"--inventory={extra}"


def fleet_status(directory: Path, *options: str) -> dict[str, list[str]]:
    """playbooks/status.yml's Markdown report: host -> its cells."""
    report_file = directory / "fleet-status.md"
    run = fleet_play("playbooks/status.yml", "-e", f"fleet_status_file={report_file}", *options)
    assert run.returncode == 0, run.stdout + run.stderr
    return fleet_table(report_file)


# `host` keeps the tests in this file's order: pytest groups the tests by its parameter.
@pytest.mark.parametrize("limit", [[], [f"--limit=!{ROUTER_DOWN}"]], ids=["asked", "left-out"])
def test_the_status_playbook_reports_each_host(host, tmp_path, second_router_down, limit):
    """With a second router down, whose view is unknown: asked (it does not answer), or left
    out of the run (--limit)."""
    report = fleet_status(tmp_path, second_router_down, *limit)
    assert list(report) == list(HOSTS)
    for cells in report.values():
        assert cells[:3] == ["serving", "llamacpp", "tiny-llama"], cells
        assert cells[3] == "`localhost/switchyard/llama.cpp:server-local`", cells
        assert cells[5] != "never", cells
        assert cells[6] == f"switchyard-sandbox: serving, {ROUTER_DOWN}: ?", cells


def test_a_host_added_to_the_inventory_joins_the_router_without_cutting_streams(host, tmp_path):
    """Re-running the router's play with a third host in the inventory reloads HAProxy: the new
    host is listed, down from the start (its gateway is not up yet): the router never picks
    it, where HAProxy alone starts a new server up until its first check fails. No request in
    flight fails. The third
    host is a second inventory name for host b's machine (this machine has room for two), with
    a gateway port where nothing listens; the run checks and locks it as any host."""
    extra = tmp_path / "hosts.yml"
    # A sandbox host like the others (sandbox_hosts: its gateway on, the fleet's model name and
    # key), which the router's settings check requires of every host behind it.
    extra.write_text(
        "llm_hosts:\n  hosts:\n    switchyard-sandbox-c:\n      ansible_host: 127.0.0.1\n"
        "      ansible_port: 2223\n      gateway_port: 8280\n"
        "      switchyard_sandbox_cache: \"{{ hostvars['switchyard-sandbox'].switchyard_sandbox_cache }}\"\n"
        "sandbox_hosts:\n  hosts:\n    switchyard-sandbox-c:\n"
    )
    with traffic(ROUTER_URL, PAUSE_S, verify=ROUTER_CA) as outcomes:
        time.sleep(1)
        added = router_play(f"--inventory={extra}")
        time.sleep(1)
    assert added.returncode == 0, added.stdout + added.stderr
    failed, total = outcome_summary(outcomes)
    assert failed == [], failed[:5]
    assert total > 5
    assert router_state(host, "switchyard-sandbox-c")["up"] is False
    assert router_stat(host, "switchyard-sandbox-c", "lbtot") == 0, "the router sent requests to a host not yet up"
    removed = router_play()
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert host.run(f"{ROUTER_CTL} show switchyard-sandbox-c").rc != 0, "the host left the inventory but not the router"


def test_a_reload_keeps_a_drained_host_drained_and_an_operators_maintenance(host):
    """Host B drained (as a rolling switch leaves it while it switches), then put in MAINT by
    an operator on HAProxy's runtime API: the router's play with a changed setting, a plain
    `systemctl reload haproxy` and a restart each start new HAProxy processes, which keep it."""
    host.run_expect([0], f"{ROUTER_CTL} drain switchyard-sandbox-b")
    try:
        changed = router_play("-e", "router_check_rise=3")
        assert changed.returncode == 0, changed.stdout + changed.stderr
        assert "rise 3" in host.file("/etc/haproxy/haproxy.cfg").content_string
        assert router_state(host, "switchyard-sandbox-b")["drained"], "the router's play undrained host B"
        runtime_api(host, "set server llm_hosts/switchyard-sandbox-b state maint")
        for command in ("systemctl reload haproxy", "systemctl restart haproxy"):
            host.run_expect([0], command)
            time.sleep(1)
            state = router_state(host, "switchyard-sandbox-b")
            assert state["maintenance"] and not state["serving"], (command, state)
            assert router_state(host, "switchyard-sandbox")["serving"], command
    finally:
        runtime_api(host, "set server llm_hosts/switchyard-sandbox-b state ready")
        restored = router_play()
    assert restored.returncode == 0, restored.stdout + restored.stderr
    time.sleep(3)
    assert router_state(host, "switchyard-sandbox-b")["serving"]


def test_a_run_limited_to_the_router_is_refused_and_changes_nothing(host):
    """`--limit` leaves hosts out whose settings the router's configuration needs: refused by
    the settings check, with the router's configuration as it was."""
    before = host.file("/etc/haproxy/haproxy.cfg").content_string
    limited = router_play("--limit=llm_routers", "-e", "router_check_rise=5")
    assert limited.returncode != 0
    assert "This run leaves out switchyard-sandbox-b (--limit)" in " ".join(limited.stdout.split())
    assert host.file("/etc/haproxy/haproxy.cfg").content_string == before


ROTATED_KEY = "fleet-rotated-key-0000000000000001"


def test_a_key_rotated_with_tags_gateway_keeps_every_host_in(host, run_site):
    """A key rotation, `--tags gateway`, on a fleet, with the first key changed at once: the
    router's health checks (/health/ready) need no key, so no host leaves the router while its
    gateway takes the new keys (HAProxy's count of hosts going down, `chkdown`, stays as it
    was), and no key is written in the router's configuration."""
    went_down = {name: router_stat(host, name, "chkdown") for name in HOSTS}
    rotated = f'{{"gateway_api_key": "{ROTATED_KEY}", "gateway_api_keys": ["{GATEWAY_KEY}"]}}'
    run = run_site(rotated, tags="gateway")
    try:
        assert run.returncode == 0, run.output
        time.sleep(3)
        for name in HOSTS:
            assert router_state(host, name)["serving"], name
        assert {name: router_stat(host, name, "chkdown") for name in HOSTS} == went_down
        config = host.file("/etc/haproxy/haproxy.cfg").content_string
        assert ROTATED_KEY not in config and GATEWAY_KEY not in config
    finally:
        restored = run_site(tags="gateway")
    assert restored.returncode == 0, restored.output


def unit_state_on_host_b(unit: str) -> tuple[str, str]:
    """(is-active, is-enabled) of a unit on host B."""
    states = subprocess.run(
        ["podman", "exec", HOST_B, "systemctl", "show", "-P", "ActiveState,UnitFileState", unit],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return states[0], states[1] if len(states) > 1 else ""


def test_a_decommissioned_host_leaves_the_router_and_serves_nobody(host, run_site, second_router_down):
    """playbooks/decommission.yml takes host B out under traffic through the router, with a
    second router down and left out (--limit): no request fails; B stays in MAINT; its gateway
    and backend are stopped and stay so at boot, and the fleet's keys are gone from it. Host A,
    then the only one serving, is refused. B comes back as an operator brings it back: out of
    MAINT, and the site run again."""

    def decommission(name: str) -> subprocess.CompletedProcess:
        options = (second_router_down, f"--limit=!{ROUTER_DOWN}", "-e", f"decommission_hosts={name}")
        return fleet_play("playbooks/decommission.yml", *options)

    with traffic(ROUTER_URL, PAUSE_S, verify=ROUTER_CA) as outcomes:
        time.sleep(1)
        run = decommission("switchyard-sandbox-b")
        time.sleep(1)
    assert run.returncode == 0, run.stdout + run.stderr
    failed, total = outcome_summary(outcomes)
    assert failed == [], failed[:5]
    assert total > 5
    state = router_state(host, "switchyard-sandbox-b")
    assert state["maintenance"] and not state["serving"], state
    for unit in ("llm-gateway.socket", "llm-gateway.service", "llm-backend.service"):
        assert unit_state_on_host_b(unit) == ("inactive", "disabled"), unit
    assert subprocess.run(["podman", "exec", HOST_B, "test", "-e", "/etc/switchyard/gateway-api-keys"]).returncode == 1
    last = decommission("switchyard-sandbox")
    assert last.returncode != 0
    assert "switchyard-sandbox is the only host the routers" in " ".join(last.stdout.split())
    assert router_state(host, "switchyard-sandbox")["serving"]

    runtime_api(host, "set server llm_hosts/switchyard-sandbox-b state ready")
    again = run_site()
    assert again.returncode == 0, again.output
    assert router_state(host, "switchyard-sandbox-b")["serving"]


def models_play_spans(*extra_vars: str) -> tuple[subprocess.CompletedProcess[str], dict[str, list[tuple[str, str]]]]:
    """playbooks/models.yml alone on the fleet, and the start and end of each of its tasks on
    each host, read from the JSON callback."""
    command = site_command(SCENARIO, *extra_vars, playbook="playbooks/models.yml")
    env = PLAYBOOK_ENV | {"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}
    run = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, check=False)
    plays = [play for play in json.loads(run.stdout)["plays"] if play["play"]["name"].startswith("Put the models")]
    spans: dict[str, list[tuple[str, str]]] = {name: [] for name in HOSTS}
    for play in plays:
        for task in play["tasks"]:
            for name in task["hosts"]:
                spans[name].append((task["task"]["duration"]["start"], task["task"]["duration"]["end"]))
    return run, spans


def test_the_models_play_goes_one_host_at_a_time_on_a_fleet(host, tmp_path):
    """playbooks/models.yml alone on the fleet: every task of host A's turn ends before host
    B's first begins (fleet_serial 1), as the services play goes. A download that fails on
    host A stops the run there: host B untouched, the fleet's table written, both serving, the
    locks released."""
    run, spans = models_play_spans()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    assert all(spans.values()), spans
    a_ends = max(end for _start, end in spans["switchyard-sandbox"])
    b_starts = min(start for start, _end in spans["switchyard-sandbox-b"])
    assert a_ends <= b_starts, f"host B's models began at {b_starts}, before host A's ended at {a_ends}"

    report_file = tmp_path / "fleet-status.md"
    failed, spans = models_play_spans(
        "llm_backend=ollama", "llm_ollama_model=absent:7b", f"fleet_status_file={report_file}"
    )
    assert failed.returncode != 0
    assert "Could not pull absent:7b" in failed.stdout, failed.stdout[-3000:]
    assert spans["switchyard-sandbox"] and not spans["switchyard-sandbox-b"], "the run went on to host B"
    assert "at the end of a run that failed on switchyard-sandbox" in report_file.read_text()
    table = fleet_table(report_file)
    assert list(table) == list(HOSTS)
    for name, cells in table.items():
        assert cells[:3] == ["serving", "llamacpp", "tiny-llama"] and cells[6] == "serving", (name, cells)
    wait_for_locks_released(host)


def test_a_killed_host_is_dropped_within_seconds_and_no_request_fails_after(host, tmp_path):
    with traffic(ROUTER_URL, PAUSE_S, verify=ROUTER_CA) as outcomes:
        time.sleep(1)
        killed = time.monotonic()
        subprocess.run(["podman", "stop", "--time", "0", HOST_B], check=True, capture_output=True)
        stopped = time.monotonic()
        while router_state(host, "switchyard-sandbox-b")["up"]:
            assert time.monotonic() - killed < 30, "the router still sends requests to a stopped host"
            time.sleep(0.2)
        dropped = time.monotonic()
        mark = len(outcomes)
        time.sleep(5)
    after = outcomes[mark:]
    failed_at_kill, _ = outcome_summary(outcomes[:mark])
    failed_after, total_after = outcome_summary(after)
    print(
        f"host stopped in {stopped - killed:.1f} s, dropped by the router {dropped - killed:.1f} s after the kill; "
        f"{len(failed_at_kill)} requests failed before, {len(failed_after)} of {total_after} after"
    )
    assert dropped - killed < 10
    assert total_after > 5
    assert failed_after == [], failed_after[:5]
    report = fleet_status(tmp_path)
    assert report["switchyard-sandbox"][0] == "serving"
    assert report["switchyard-sandbox-b"][0] == "unreachable"
    assert report["switchyard-sandbox-b"][6] == "down", "the router still counts the stopped host in"
