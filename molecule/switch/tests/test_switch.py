"""The backend switch, driven as a user drives it: ansible-playbook site.yml -e llm_backend=...

The second backend here is Ollama, served by the Ollama test double (see
molecule/default/files/ollama_test_double.py): no Ollama binary can be had on these machines. Its model is
pulled through the double's /api/pull from the double's stand-in registry.
"""

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

from conftest import (
    GATEWAY_KEY,
    GATEWAY_URL,
    PLAYBOOK_ENV,
    PROJECT,
    assert_gateway_routes_to,
    assert_llamacpp_serving,
    assert_serving,
    backend_containers,
    pooling_containers,
    repeating,
    served_models,
    site_command,
    traffic,
)
from scripts.clients import failures

POOLING_UNITS = ("llm-embedding", "llm-reranker")


@contextmanager
def outage_watch(model: str) -> Iterator[dict[str, float]]:
    """Sends a completion to :8000 every 0.1 s while the block runs; yields the longest time
    without an answer (seconds), filled in when the block ends."""
    found = {"longest_outage_s": 0.0}
    last_ok = time.monotonic()
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}

    def probe(client: httpx.Client) -> None:
        nonlocal last_ok
        try:
            ok = client.post("/v1/chat/completions", json=body).status_code == 200
        except httpx.HTTPError:
            ok = False
        now = time.monotonic()
        if ok:
            last_ok = now
        found["longest_outage_s"] = max(found["longest_outage_s"], now - last_ok)

    with httpx.Client(base_url="http://127.0.0.1:8000", timeout=5) as client, repeating(lambda: probe(client), 0.1):
        yield found


def assert_no_pull_server_left(host) -> None:
    assert "switchyard-ollama-pull" not in host.check_output("podman ps --all --format '{{.Names}}'")


def assert_pull_script_works_through_the_backend() -> None:
    """The original's pull_model_ollama.sh, run as a user runs it against Ollama on :8000."""
    script = PROJECT / "scripts/pull_model_ollama.sh"
    pulled = subprocess.run([script, "tiny"], capture_output=True, text=True, check=False)
    assert pulled.returncode == 0, pulled.stderr
    assert "success" in pulled.stdout and "done: set llm_ollama_model: tiny" in pulled.stdout
    missing = subprocess.run([script, "absent:1"], capture_output=True, text=True, check=False)
    assert missing.returncode == 1
    assert "error: pull model manifest: file does not exist" in missing.stderr


TINY_MANIFEST = "/var/lib/switchyard/ollama/models/manifests/registry.ollama.ai/library/tiny/latest"


def test_switch_to_ollama_and_back_with_the_gateways_clients_seeing_no_failure(host, run_site, http, gateway):
    """llama.cpp → Ollama → (the same again: nothing to do) → llama.cpp with --tags services,
    while four clients, two streaming, drive the gateway: the gateway is reloaded, not
    restarted, holds new requests while the backend restarts and lets the forwarded ones
    finish first, and follows a scoped switch as it follows a full one."""

    def gateway_pid() -> str:
        return host.check_output("systemctl show --property=MainPID --value llm-gateway")

    assert_gateway_routes_to(gateway, "llamacpp")
    pooling = pooling_containers(host)
    assert set(pooling) == {"llm-embedding", "llm-reranker"}
    manifest = host.file(TINY_MANIFEST)
    assert not manifest.exists
    pid = gateway_pid()
    # A pause between each client's requests, as in the fleet's test: a request every half
    # second per client (one every 0.2 s or so from the four) still lands in every part of the
    # switch, and the cores stay with the run (back to back, the clients took one of the
    # machine's two).
    with traffic(GATEWAY_URL, pause_s=0.5) as outcomes:
        to_ollama = run_site("llm_backend=ollama")
        assert to_ollama.returncode == 0, to_ollama.output
        assert gateway_pid() == pid, "the gateway was restarted"
        assert re.search(r"TASK \[models : Start the pull of tiny:latest\]\W*\nchanged:", to_ollama.output)
        assert manifest.exists, "the model was pulled into the store before the switch"
        assert_no_pull_server_left(host)
        assert host.service("llm-backend").is_running
        assert list(backend_containers(host)) == ["llm-ollama"]
        assert served_models(http) == ["tiny:latest"]
        reply = http.post(
            "/v1/chat/completions", json={"model": "tiny:latest", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert reply.status_code == 200
        assert_gateway_routes_to(gateway, "ollama")

        assert_pull_script_works_through_the_backend()

        again = run_site("llm_backend=ollama")
        assert again.returncode == 0, again.output
        assert "changed=0" in again.output, "a pulled model is not pulled again"

        # Back with the scope an operator gives a backend switch alone: the gateway follows.
        back = run_site("llm_backend=llamacpp", tags="services")
        assert back.returncode == 0, back.output
        assert gateway_pid() == pid, "the gateway was restarted"
    failed = failures(outcomes)
    longest = max(seconds for _ok, seconds, _problem, _started in outcomes)
    print(f"through two switches: {len(outcomes)} requests, {len(failed)} failed, longest {longest:.1f} s")
    assert len(outcomes) > 20
    assert failed == [], failed[:5]
    assert_llamacpp_serving(host, http)
    assert_gateway_routes_to(gateway, "llamacpp")
    assert pooling_containers(host) == pooling, "a backend switch restarted embedding or reranker"


def test_invalid_backend_is_rejected_before_anything_changes(host, run_site, http, llamacpp_id):
    run = run_site("llm_backend=tgi")
    assert run.returncode != 0
    assert "llm_backend" in run.output and "vllm, ollama, llamacpp" in run.output
    assert_llamacpp_serving(host, http, llamacpp_id)


def test_switch_to_a_model_the_registry_lacks_leaves_the_backend_serving(host, run_site, http, llamacpp_id):
    run = run_site("llm_backend=ollama", "llm_ollama_model=absent:7b")
    assert run.returncode != 0
    assert "Could not pull absent:7b" in run.output
    assert "pull model manifest: file does not exist" in run.output, "Ollama's own reason is shown"
    assert_no_pull_server_left(host)
    assert_llamacpp_serving(host, http, llamacpp_id)


def test_switch_to_a_missing_image_leaves_the_backend_serving(host, run_site, http, llamacpp_id):
    run = run_site("llm_backend=ollama", "llm_ollama_image=localhost/switchyard/no-such-image:1")
    assert run.returncode != 0
    assert "Could not pull localhost/switchyard/no-such-image:1" in run.output
    assert_llamacpp_serving(host, http, llamacpp_id)


def test_check_mode_reports_no_change_on_a_converged_host(host, run_site, http, llamacpp_id):
    run = run_site(check=True)
    assert run.returncode == 0, run.output
    assert "changed=0" in run.output
    assert_llamacpp_serving(host, http, llamacpp_id)


def test_check_mode_switch_reports_changes_but_changes_nothing(host, run_site, http, llamacpp_id):
    run = run_site("llm_backend=ollama", check=True)
    assert run.returncode == 0, run.output
    assert "changed=0" not in run.output
    assert_llamacpp_serving(host, http, llamacpp_id)


def blob_of(host, manifest: str) -> str:
    """The store's weights blob of an Ollama model (the manifest's last layer)."""
    digest = json.loads(host.file(manifest).content_string)["layers"][-1]["digest"]
    return "/var/lib/switchyard/ollama/models/blobs/" + digest.replace(":", "-")


def test_llamacpp_to_a_broken_ollama_model_rolls_back_to_llamacpp(host, run_site, http, gateway, llamacpp_id):
    """Ollama starts and lists the model even when its weights are corrupt; only a first
    request loads them. The switch must see that and put llama.cpp back."""
    blob = blob_of(host, TINY_MANIFEST)
    host.check_output(f"cp {blob} /root/good-blob && printf x >> {blob}")
    # llm_health_timeout changes the embedding and reranker units too: the failed switch calls
    # off their restarts, and their units go back to the running ones, for the next run to redo.
    pooling_units = {unit: host.file(f"/etc/systemd/system/{unit}.service").content_string for unit in POOLING_UNITS}
    try:
        with outage_watch("tiny-llama") as outage:
            started = time.monotonic()
            run = run_site("llm_backend=ollama", "llm_health_timeout=600")
            took = time.monotonic() - started
        assert run.returncode != 0
        assert "It was rolled back to its last healthy unit" in run.output
        # Ollama's answer names the reason; it fails the start at once, not after the timeout.
        assert "llama runner process has terminated" in run.output
        assert took < 300, f"the failed switch took {took:.0f} s"
        assert_llamacpp_serving(host, http)
        assert_gateway_routes_to(gateway, "llamacpp")
        for unit, content in pooling_units.items():
            assert host.file(f"/etc/systemd/system/{unit}.service").content_string == content, unit
            assert "NeedDaemonReload=no" in host.check_output(f"systemctl show --property=NeedDaemonReload {unit}")
        print(f"llama.cpp -> broken Ollama: llama.cpp unanswered for {outage['longest_outage_s']:.1f} s in all")
    finally:
        host.check_output(f"mv /root/good-blob {blob}")


SWITCH_MARK = "/run/switchyard-run/switching"


@contextmanager
def gateway_answers() -> Iterator[list[tuple[float, bool]]]:
    """One client asking the gateway for a completion, again as soon as it is answered (a held
    request waits); yields (when each was answered, whether it succeeded)."""
    answers: list[tuple[float, bool]] = []
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}

    def ask(client: httpx.Client) -> None:
        try:
            ok = client.post("/v1/chat/completions", json=body).status_code == 200
        except httpx.HTTPError:
            ok = False
        answers.append((time.monotonic(), ok))

    client = httpx.Client(base_url=GATEWAY_URL, headers={"Authorization": f"Bearer {GATEWAY_KEY}"}, timeout=30)
    with client, repeating(lambda: ask(client), 0.05):
        yield answers


def kill_a_switch(extra_var: str, at: Callable[[], bool], kill: Callable[[subprocess.Popen], None]) -> float:
    """Starts site.yml with `extra_var` as a user does, kills it once `at()` holds; returns when
    it died (Ctrl-C lets ansible-playbook end its current task's workers first)."""
    command = site_command(PROJECT / "molecule/switch", extra_var)
    run = subprocess.Popen(
        command, cwd=PROJECT, env=PLAYBOOK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while not at():
        assert run.poll() is None, "the run ended before the point it was to be killed at"
        assert time.monotonic() < deadline, "the run never reached the point it was to be killed at"
        time.sleep(0.1)
    kill(run)
    run.wait(timeout=60)
    return time.monotonic()


def ctrl_c(run: subprocess.Popen) -> None:
    """What Ctrl-C in its terminal does: SIGINT to ansible-playbook and everything it started."""
    os.killpg(run.pid, signal.SIGINT)


def crash(run: subprocess.Popen) -> None:
    """ansible-playbook alone killed outright (SIGKILL, the OOM killer), its workers orphaned."""
    run.kill()


def assert_serving_again_soon(host, gateway, answers: list[tuple[float, bool]], killed_at: float, how: str) -> float:
    """Once the run is dead and the backend's unit has started (the start systemd was running
    goes on without the run), the gateway answers within 5 s, routes to the backend that
    runs, and the run's lock and switch mark are gone. Returns the seconds it took."""
    deadline = time.monotonic() + 300
    while host.run("systemctl is-active llm-backend").stdout.strip() != "active":
        assert time.monotonic() < deadline, "llm-backend did not come up after the run was killed"
        time.sleep(0.2)
    backend_up = time.monotonic()
    while not any(ok and when > killed_at for when, ok in answers):
        assert time.monotonic() < deadline, "the gateway did not answer after the run was killed"
        time.sleep(0.1)
    served = min(when for when, ok in answers if ok and when > killed_at)
    since = served - max(killed_at, backend_up)
    print(f"run killed ({how}): the gateway answered {served - killed_at:.1f} s after its death")
    assert since <= 5, f"the gateway answered {since:.1f} s after the run's death and the backend's start"
    assert not host.file(SWITCH_MARK).exists, "the dead run's switch mark is still there"
    assert host.run("systemctl is-active switchyard-run").stdout.strip() != "active", "the dead run's lock is held"
    (running,) = backend_containers(host)
    assert_gateway_routes_to(gateway, running.removeprefix("llm-"))
    return since


def test_ctrl_c_after_the_drain_leaves_the_host_serving(host, http, gateway):
    """Ctrl-C right after the drain (the mark holds the gateway's requests): the host serves
    llama.cpp through the gateway again within 5 s without anyone running anything (the run's
    guard releases its lock, and the mark with it). The next test's run is the one after it."""
    assert_llamacpp_serving(host, http)
    with gateway_answers() as answers:
        killed_at = kill_a_switch("llm_backend=ollama", lambda: host.file(SWITCH_MARK).exists, ctrl_c)
        assert_serving_again_soon(host, gateway, answers, killed_at, "Ctrl-C after the drain")
    assert_llamacpp_serving(host, http)


def test_a_switch_with_tags_services_and_a_broken_llamacpp_rolled_back_to_ollama(host, run_site, http, gateway):
    """The run after a Ctrl-C: --tags services switches to Ollama and the gateway follows;
    a broken llama.cpp on top of it is rolled back to Ollama. The host stays on Ollama: the
    next test's crashed switch takes it back to llama.cpp."""
    to_ollama = run_site("llm_backend=ollama", tags="services")
    assert to_ollama.returncode == 0, to_ollama.output
    assert_gateway_routes_to(gateway, "ollama")
    ollama_unit = host.file("/etc/systemd/system/llm-backend.service").content_string
    with outage_watch("tiny:latest") as outage:
        run = run_site('{"llm_llamacpp_extra_args": ["--no-such-flag"]}')
    assert run.returncode != 0
    assert "It was rolled back to its last healthy unit" in run.output
    assert host.file("/etc/systemd/system/llm-backend.service").content_string == ollama_unit
    assert_serving(host, http, "ollama", "tiny:latest")
    assert_gateway_routes_to(gateway, "ollama")
    print(f"Ollama -> broken llama.cpp: Ollama unanswered for {outage['longest_outage_s']:.1f} s in all")


def test_a_run_crashed_during_the_model_load_serves_and_the_next_run_converges(host, run_site, http, gateway):
    """From Ollama, a crash of the run during llama.cpp's model load: the host serves through
    the gateway again within 5 s without anyone running anything (the backend's unit announces
    itself to the gateway), and the next run converges. A second run with the same settings
    then changes nothing and restarts nothing (the idempotence check of this inventory, the
    default scenario's too)."""
    assert_gateway_routes_to(gateway, "ollama")

    def loading() -> bool:
        return host.run("systemctl show --property=ActiveState --value llm-backend").stdout.strip() == "activating"

    with gateway_answers() as answers:
        killed_at = kill_a_switch("llm_backend=llamacpp", loading, crash)
        assert_serving_again_soon(host, gateway, answers, killed_at, "crash during the model load")
    assert_llamacpp_serving(host, http)
    converge = run_site()
    assert converge.returncode == 0, converge.output
    converged_id = backend_containers(host)["llm-llamacpp"]
    again = run_site()
    assert again.returncode == 0, again.output
    assert "changed=0" in again.output
    assert_llamacpp_serving(host, http, converged_id)
