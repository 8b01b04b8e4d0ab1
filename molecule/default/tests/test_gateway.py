"""The gateway as roles/gateway runs it on the sandbox host: llm-gateway.service on :8080."""

import json
import re
import threading
import time

import httpx

from conftest import GATEWAY_KEY, GATEWAY_URL

CHAT = {"model": "tiny-llama", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8}


def test_gateway_unit_is_enabled_and_running(host):
    service = host.service("llm-gateway")
    assert service.is_enabled and service.is_running


def test_gateway_runs_as_its_own_user(host):
    user = host.check_output("systemctl show --property=User --value llm-gateway")
    assert user == "switchyard-gateway"


def test_the_gateway_may_hold_as_many_connections_as_the_host_allows(host):
    """Its unit asks for 65,536 descriptors; this sandbox's hard limit is lower, and systemd
    gives the service the most it can instead of failing its start."""
    pid = host.check_output("systemctl show --property=MainPID --value llm-gateway")
    hard = int(host.check_output("sh -c 'ulimit -Hn'"))
    limits = host.file(f"/proc/{pid}/limits").content_string
    soft_limit = int(re.search(r"Max open files\s+(\d+)", limits)[1])
    assert soft_limit == min(65536, hard) > 1024


def test_the_sandbox_gateway_listens_on_loopback_only(host):
    """Its key is committed: the demo must not open :8080 on the user's network."""
    assert host.socket("tcp://127.0.0.1:8080").is_listening
    assert not host.socket("tcp://0.0.0.0:8080").is_listening


def test_keys_file_is_readable_by_root_and_the_service_only(host):
    keys = host.file("/etc/switchyard/gateway-api-keys")
    assert (keys.user, keys.group, keys.mode) == ("root", "switchyard-gateway", 0o640)


def test_no_key_in_the_settings_the_unit_or_the_journal(host, gateway):
    gateway.get("/v1/models")
    for path in ("/etc/switchyard/gateway.env", "/etc/systemd/system/llm-gateway.service"):
        assert GATEWAY_KEY not in host.file(path).content_string
    journal = host.check_output("journalctl -u llm-gateway --no-pager")
    assert "GET /v1/models 200" in journal
    assert GATEWAY_KEY not in journal


def test_requests_without_a_key_are_refused(gateway):
    response = gateway.get("/v1/models", headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"


def test_deep_health_sees_the_backend(gateway):
    deep = gateway.get("/health/deep").json()
    assert deep["status"] == "ok" and deep["backend"] == "llamacpp"
    assert deep["services"]["backend"]["status"] == "ok"


def test_chat_streams_through_the_gateway(gateway):
    events = []
    with gateway.stream("POST", "/v1/chat/completions", json=CHAT | {"stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["model"] for chunk in chunks} == {"tiny-llama"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_a_restart_of_the_gateway_refuses_no_connection(host):
    """systemd holds the port (llm-gateway.socket): connections that arrive while the service
    restarts (an upgrade) wait in the socket's backlog instead of being refused."""
    assert "systemd" in host.check_output("ss -Hltnp sport = :8080")
    stop = threading.Event()
    outcomes: list[tuple[float, float, str]] = []  # when each request was sent and answered, and how

    def client() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:  # a new connection each time, as a client arriving during the restart makes
                status = httpx.get(GATEWAY_URL + "/v1/models", headers={"x-api-key": GATEWAY_KEY}, timeout=30)
                outcomes.append((sent, time.monotonic(), str(status.status_code)))
            except httpx.HTTPError as error:
                outcomes.append((sent, time.monotonic(), repr(error)))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        time.sleep(0.5)
        restarting = time.monotonic()
        host.run_test("systemctl restart llm-gateway")
        restarted = time.monotonic()
        time.sleep(1)
    finally:
        stop.set()
        thread.join()
    across = [outcome for sent, answered, outcome in outcomes if sent <= restarted and answered >= restarting]
    assert across, "no request was in flight while the gateway restarted"
    assert [outcome for _sent, _answered, outcome in outcomes if outcome != "200"] == []
    print(f"gateway restart: {len(across)} of {len(outcomes)} requests in flight across it, none refused")
