"""A backend switch as the gateway sees it: the switch mark the llm role leaves, a backend that
refuses connections for a while, and the settings reloaded on SIGHUP instead of a restart."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from conftest import KEYS, PUBLIC_MODEL, Gateway, LlamaServer, free_port

MESSAGES = [{"role": "user", "content": "Capital of France?"}]
HEADERS = {"Authorization": f"Bearer {KEYS[0]}"}
CHAT = {"model": PUBLIC_MODEL, "messages": MESSAGES, "max_tokens": 4}


def switch_mark(target: str) -> str:
    """What the llm role writes before it restarts the backend."""
    return json.dumps({"to": target, "hold_s": 600})


def later(seconds: float, action: Callable[[], object]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def test_requests_wait_while_the_mark_is_there_and_go_on_after(
    start_gateway: Callable[..., Gateway], llama_server: LlamaServer, tmp_path: Path
):
    mark = tmp_path / "switching"
    gateway = start_gateway(llama_server.url, switch_mark=str(mark), switch_hold_s="60")
    mark.write_text(switch_mark("ollama"))
    assert httpx.get(gateway.url + "/switch", headers=HEADERS).json() == {
        "to": "ollama",
        "forwarding": 0,
        "backend": "llamacpp",
    }
    assert httpx.get(gateway.url + "/health").json() == {"status": "ok"}, "/health, open to all, tells more"
    assert httpx.get(gateway.url + "/switch").status_code == 401
    later(1.5, mark.unlink)
    started = time.monotonic()
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=HEADERS, json=CHAT, timeout=30)
    waited = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert waited >= 1.4, "the request went on before the switch was over"
    assert httpx.get(gateway.url + "/switch", headers=HEADERS).json() == {
        "to": None,
        "forwarding": 0,
        "backend": "llamacpp",
    }


def test_a_stream_that_waits_gets_keepalives_then_its_events(
    start_gateway: Callable[..., Gateway], llama_server: LlamaServer, tmp_path: Path
):
    mark = tmp_path / "switching"
    gateway = start_gateway(llama_server.url, switch_mark=str(mark), switch_hold_s="60")
    mark.write_text(switch_mark("llamacpp"))
    later(6, mark.unlink)  # longer than one keep-alive interval (5 s)
    lines = []
    with httpx.stream(
        "POST", gateway.url + "/v1/chat/completions", headers=HEADERS, json=CHAT | {"stream": True}, timeout=30
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    assert lines[0] == ": keep-alive"
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert json.loads(data[0])["model"] == PUBLIC_MODEL


def test_the_wait_ends_with_503_after_switch_hold_s(
    start_gateway: Callable[..., Gateway], llama_server: LlamaServer, tmp_path: Path
):
    mark = tmp_path / "switching"
    mark.write_text(switch_mark("vllm"))
    gateway = start_gateway(llama_server.url, switch_mark=str(mark), switch_hold_s="1", retry_after="9")
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=HEADERS, json=CHAT, timeout=30)
    assert response.status_code == 503 and response.headers["retry-after"] == "9"
    assert response.json()["error"]["code"] == "backend_switching"
    with httpx.stream(
        "POST", gateway.url + "/v1/chat/completions", headers=HEADERS, json=CHAT | {"stream": True}, timeout=30
    ) as stream:
        events = [line for line in stream.iter_lines() if line.startswith("data: ")]
    assert json.loads(events[-1].removeprefix("data: "))["error"]["code"] == "backend_switching"


def test_a_mark_older_than_the_hold_is_ignored(
    start_gateway: Callable[..., Gateway], llama_server: LlamaServer, tmp_path: Path
):
    """A mark that outlived its run and the lock (a lock that could not be stopped) must not
    hold requests for ever: its hold_s counts from its mtime, the host's clock."""
    mark = tmp_path / "switching"
    mark.write_text(json.dumps({"to": "ollama", "hold_s": 60}))
    written = time.time() - 61
    os.utime(mark, (written, written))
    gateway = start_gateway(llama_server.url, switch_mark=str(mark), switch_hold_s="60")
    assert httpx.get(gateway.url + "/health").json() == {"status": "ok"}
    assert httpx.post(gateway.url + "/v1/chat/completions", headers=HEADERS, json=CHAT, timeout=30).status_code == 200


def test_a_refused_connection_is_waited_out(
    start_gateway: Callable[..., Gateway], start_llama_server: Callable[..., LlamaServer]
):
    """The backend restarts (here: it starts 2 s later): requests, streamed or not, wait."""
    port = free_port()
    gateway = start_gateway(f"http://127.0.0.1:{port}", switch_hold_s="60")
    later(2, lambda: start_llama_server("--parallel", "2", port=port))
    results: dict[str, object] = {}

    def stream() -> None:
        with httpx.stream(
            "POST", gateway.url + "/v1/chat/completions", headers=HEADERS, json=CHAT | {"stream": True}, timeout=60
        ) as response:
            results["stream"] = [line for line in response.iter_lines() if line.startswith("data: ")][-1]

    streaming = threading.Thread(target=stream)
    streaming.start()
    plain = httpx.post(gateway.url + "/v1/chat/completions", headers=HEADERS, json=CHAT, timeout=60)
    streaming.join()
    assert plain.status_code == 200, plain.text
    assert results["stream"] == "data: [DONE]"


def test_switch_counts_the_forwarded_requests_the_role_drains(
    start_gateway: Callable[..., Gateway], llama_server: LlamaServer, tmp_path: Path
):
    mark = tmp_path / "switching"
    gateway = start_gateway(llama_server.url, switch_mark=str(mark), switch_hold_s="60")
    body = CHAT | {"stream": True, "max_tokens": 200, "ignore_eos": True}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", headers=HEADERS, json=body, timeout=30) as stream:
        lines = stream.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        mark.write_text(switch_mark("ollama"))
        assert httpx.get(gateway.url + "/switch", headers=HEADERS).json()["forwarding"] == 1
        assert [line for line in lines if line.startswith("data: ")][-1] == "data: [DONE]"
    deadline = time.monotonic() + 5
    while httpx.get(gateway.url + "/switch", headers=HEADERS).json()["forwarding"] != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(gateway.url + "/switch", headers=HEADERS).json()["forwarding"] == 0


def test_switch_counts_a_request_whose_answer_has_not_begun(
    start_gateway: Callable[..., Gateway], llama_server: LlamaServer, tmp_path: Path
):
    """A non-streamed answer sends its headers only once it is complete: the request is
    forwarded (and the role must wait for it) from the moment it is sent."""
    mark = tmp_path / "switching"
    gateway = start_gateway(llama_server.url, switch_mark=str(mark), switch_hold_s="60")
    body = CHAT | {"max_tokens": 2000, "ignore_eos": True}
    answered: list[int] = []
    sending = threading.Thread(
        target=lambda: answered.append(
            httpx.post(gateway.url + "/v1/chat/completions", headers=HEADERS, json=body, timeout=60).status_code
        )
    )
    sending.start()
    time.sleep(0.3)
    mark.write_text(switch_mark("ollama"))
    forwarding = httpx.get(gateway.url + "/switch", headers=HEADERS).json()["forwarding"]
    sending.join()
    assert (forwarding, answered) == (1, [200])


def test_sighup_takes_a_switched_backend_without_a_restart(
    start_gateway: Callable[..., Gateway],
    llama_server: LlamaServer,
    start_llama_server: Callable[..., LlamaServer],
    tmp_path: Path,
):
    """What a switch changes (backend, its model name, its URL) comes from the reload file."""
    reload_file = tmp_path / "gateway-backend.env"
    reload_file.write_text(f"SWITCHYARD_GATEWAY_BACKEND=llamacpp\nSWITCHYARD_GATEWAY_BACKEND_URL={llama_server.url}\n")
    gateway = start_gateway(llama_server.url, reload_file=str(reload_file))
    other = start_llama_server("--parallel", "2", alias="other-backend-name")
    reload_file.write_text(
        "# the switch's settings\nSWITCHYARD_GATEWAY_BACKEND=ollama\n"
        f"SWITCHYARD_GATEWAY_BACKEND_URL={other.url}\nSWITCHYARD_GATEWAY_BACKEND_MODEL=other-backend-name\n"
    )
    gateway.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "settings reloaded" not in gateway.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    config = httpx.get(gateway.url + "/config", headers=HEADERS).json()
    assert (config["backend"], config["upstreams"]["backend"]) == ("ollama", other.url)
    reply = httpx.post(gateway.url + "/v1/chat/completions", headers=HEADERS, json=CHAT, timeout=30)
    assert reply.status_code == 200 and reply.json()["model"] == PUBLIC_MODEL
    assert gateway.process.poll() is None


def test_the_backends_announcement_wins_over_the_reload_file(
    start_gateway: Callable[..., Gateway],
    llama_server: LlamaServer,
    start_llama_server: Callable[..., LlamaServer],
    tmp_path: Path,
):
    """A run wrote the reload file for a new backend, then died before it restarted the
    backend (or rolled it back): what the backend's unit announced at its start is what the
    gateway routes to, on any reload; other settings in the announcement are not taken."""
    other = start_llama_server("--parallel", "2", alias="announced-name")
    reload_file = tmp_path / "gateway.env"
    reload_file.write_text(
        "SWITCHYARD_GATEWAY_BACKEND=ollama\nSWITCHYARD_GATEWAY_BACKEND_MODEL=not-served\n"
        f"SWITCHYARD_GATEWAY_BACKEND_URL={other.url}\n"
    )
    backend_file = tmp_path / "backend.env"
    gateway = start_gateway(llama_server.url, reload_file=str(reload_file), backend_file=str(backend_file))
    backend_file.write_text(
        "SWITCHYARD_GATEWAY_BACKEND=llamacpp\nSWITCHYARD_GATEWAY_BACKEND_MODEL=announced-name\n"
        "SWITCHYARD_GATEWAY_BACKEND_URL=http://127.0.0.1:9\n"
    )
    gateway.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "settings reloaded" not in gateway.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    config = httpx.get(gateway.url + "/config", headers=HEADERS).json()
    assert (config["backend"], config["models"]["backend_name"]) == ("llamacpp", "announced-name")
    assert config["upstreams"]["backend"] == other.url, "the announcement set more than what serves"
    reply = httpx.post(gateway.url + "/v1/chat/completions", headers=HEADERS, json=CHAT, timeout=30)
    assert reply.status_code == 200, reply.text
