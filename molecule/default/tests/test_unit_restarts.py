"""The backend unit restarts when it must, and only then: a changed setting restarts it, a
server that exits at start is rolled back at once, a crashed server and a restarted host
serve again by themselves. On the default scenario's host (llama.cpp only: the switches
between backends are the switch scenario's). Its file sorts last: the host restart is the
scenario's last test. The runs here are scoped to the services play (--tags services), as an
operator changing a service setting runs it: the unit, its restart and its rollback are there.
"""

import re
import subprocess
import time

import httpx

from conftest import SANDBOX, assert_llamacpp_serving, backend_containers


def test_changed_settings_restart_the_backend(host, run_site, http, llamacpp_id):
    run = run_site("llm_max_model_len=256", tags="services")
    assert run.returncode == 0, run.output
    assert backend_containers(host)["llm-llamacpp"] != llamacpp_id
    assert "--ctx-size 256" in host.file("/etc/systemd/system/llm-backend.service").content_string.replace("'", "")
    restore = run_site(tags="services")
    assert restore.returncode == 0, restore.output


def test_a_backend_that_exits_at_start_fails_at_once_and_is_rolled_back(host, run_site, http):
    good_unit = host.file("/etc/systemd/system/llm-backend.service").content_string
    started = time.monotonic()
    run = run_site('{"llm_llamacpp_extra_args": ["--no-such-flag"], "llm_health_timeout": 600}', tags="services")
    took = time.monotonic() - started
    assert run.returncode != 0
    assert "It was rolled back to its last healthy unit, which serves again after" in run.output
    assert "no-such-flag" in run.output, "the failure shows the journal of llm-backend"
    # The unit's main process died: the wait ends then, not after llm_health_timeout.
    assert took < 300, f"the failed start took {took:.0f} s"
    assert host.file("/etc/systemd/system/llm-backend.service").content_string == good_unit
    assert_llamacpp_serving(host, http)


def serving_pid(host) -> str:
    return host.check_output("podman inspect --format '{{.State.Pid}}' llm-llamacpp")


def test_a_crashed_backend_serves_again_within_seconds(host, http):
    restarts = int(host.check_output("systemctl show --property NRestarts --value llm-backend"))
    host.check_output(f"kill -9 {serving_pid(host)}")
    killed = time.monotonic()
    deadline = killed + 60
    while time.monotonic() < deadline:
        try:
            if http.get("/v1/models").status_code == 200 and backend_containers(host):
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    back_after = time.monotonic() - killed
    print(f"llama-server killed with SIGKILL: serving again after {back_after:.1f} s")
    assert int(host.check_output("systemctl show --property NRestarts --value llm-backend")) == restarts + 1
    assert_llamacpp_serving(host, http)


def test_services_come_back_after_the_host_restarts(host, gateway):
    subprocess.run(["podman", "restart", "--time", "30", SANDBOX], check=True, capture_output=True)
    started = time.monotonic()
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    answered = None
    while time.monotonic() - started < 180:
        try:
            if gateway.post("/v1/chat/completions", json=body).status_code == 200:
                answered = time.monotonic() - started
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    assert answered is not None, "the gateway did not serve a completion within 180 s of the host's start"
    print(f"host restarted: the gateway served a completion {answered:.1f} s after the host started")
    for unit in ("llm-backend", "llm-gateway"):
        assert host.service(unit).is_running
    # Embedding and reranker come back too, each within its unit's start limit (on this
    # machine's two cores their loads, at once, may end well after the backend's), at the first
    # start: a start that failed and was restarted shows in NRestarts.
    for unit in ("llm-embedding", "llm-reranker"):
        unit_file = host.file(f"/etc/systemd/system/{unit}.service").content_string
        limit_s = int(re.search(r"^TimeoutStartSec=(\d+)$", unit_file, re.MULTILINE).group(1))
        while not host.service(unit).is_running and time.monotonic() - started < 30 + limit_s:
            time.sleep(1)
        state = host.check_output(f"systemctl show --property=ActiveState,SubState,NRestarts {unit}")
        assert host.service(unit).is_running and "NRestarts=0" in state, f"{unit}: {state}"
    print(f"host restarted: embedding and reranker serving {time.monotonic() - started:.1f} s after the host started")
