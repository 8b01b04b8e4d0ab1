"""/health/deep and a backend that lists its model but no longer generates (vLLM's engine core
hung under its API server, which still answers /v1/models): the gateway reads it from the
requests it forwards, never by generating itself."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from conftest import KEYS, PUBLIC_MODEL, UPSTREAM_MODEL, Gateway, LlamaServer

# Short, so the tests are quick; a real llama-server's first token and the gaps between its
# chunks take longer than a second on a loaded CI machine, so it gets more.
STALL_TIMEOUT_S = 1.0
LLAMA_STALL_TIMEOUT_S = 3.0
LONG_ANSWER = 5000
HEADERS = {"x-api-key": KEYS[0]}


class HungEngine(ThreadingHTTPServer):
    """A test double of a backend whose engine hangs (no real one hangs on cue here): it lists
    its model at once, and reads each generation request and answers it only when `release`
    is set, as vLLM's API server does while its engine core is stuck."""

    daemon_threads = True

    def __init__(self) -> None:
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), _HungEngineHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _HungEngineHandler(BaseHTTPRequestHandler):
    server: HungEngine

    def do_GET(self) -> None:
        self._answer({"object": "list", "data": [{"id": UPSTREAM_MODEL, "object": "model"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.release.wait(timeout=60)
        message = {"role": "assistant", "content": "Paris"}
        self._answer(
            {"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
        )

    def _answer(self, body: dict) -> None:
        content = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hung_engine() -> Iterator[HungEngine]:
    server = HungEngine()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def readiness(gateway: Gateway) -> tuple[int, dict]:
    """/health/ready, without a key, as a router's health check asks it."""
    answer = httpx.get(gateway.url + "/health/ready", timeout=10)
    return answer.status_code, answer.json()


def deep_health(gateway: Gateway) -> tuple[int, dict]:
    answer = httpx.get(gateway.url + "/health/deep", headers=HEADERS, timeout=10)
    return answer.status_code, answer.json()["services"]["backend"]


def ask(gateway: Gateway, answers: list[int], stream: bool = False, max_tokens: int = 4) -> threading.Thread:
    body = {"model": PUBLIC_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    body |= {"stream": stream, "ignore_eos": True}

    def run() -> None:
        with httpx.stream(
            "POST", gateway.url + "/v1/chat/completions", headers=HEADERS, json=body, timeout=60
        ) as answer:
            answer.read()
            answers.append(answer.status_code)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_backend_that_lists_its_model_but_answers_nothing_is_reported_stalled(
    start_gateway: Callable[..., Gateway], hung_engine: HungEngine
):
    """Two workers: the request waits in one, /health/deep may be answered by the other."""
    gateway = start_gateway(hung_engine.url, workers="2", stall_timeout_s=str(STALL_TIMEOUT_S))
    assert deep_health(gateway)[0] == 200, "stalled before any request was sent"
    assert readiness(gateway) == (200, {"status": "ok"})
    answers: list[int] = []
    asked = time.monotonic()
    asker = ask(gateway, answers)
    time.sleep(STALL_TIMEOUT_S / 2)
    status = deep_health(gateway)[0]
    # A loaded machine may answer the check itself after stall_timeout_s: then it shows nothing.
    if time.monotonic() - asked < STALL_TIMEOUT_S:
        assert status == 200, "stalled before stall_timeout_s"
    time.sleep(STALL_TIMEOUT_S)
    # Whichever worker answers: both must see the request the other one forwarded.
    for _ in range(4):
        status, backend = deep_health(gateway)
        assert status == 503 and backend["status"] == "stalled", backend
    waited = re.fullmatch(
        r"a generation has waited (\d+) s for the backend, which has sent nothing meanwhile", backend["error"]
    )
    assert waited and int(waited[1]) >= STALL_TIMEOUT_S, backend["error"]
    # Without a key, and without saying more.
    assert readiness(gateway) == (503, {"status": "unavailable"})
    hung_engine.release.set()
    asker.join()
    assert answers == [200]
    assert deep_health(gateway)[0] == 200, "still stalled after the backend answered"
    assert readiness(gateway) == (200, {"status": "ok"})


def test_a_backend_that_streams_is_not_stalled(
    start_gateway: Callable[..., Gateway], start_llama_server: Callable[..., LlamaServer]
):
    """A real llama-server generates a long non-streamed answer, whose headers come only with
    its end, beside a long stream: the stream's chunks say that the backend generates, so
    the request waiting for its answer is no stall."""
    # Room for two answers of LONG_ANSWER tokens each: several stall timeouts long.
    llama_server = start_llama_server("--parallel", "2", "--ctx-size", str(4 * LONG_ANSWER))
    gateway = start_gateway(llama_server.url, stall_timeout_s=str(LLAMA_STALL_TIMEOUT_S))
    answers: list[int] = []
    started = time.monotonic()
    stream = ask(gateway, answers, stream=True, max_tokens=LONG_ANSWER)
    whole = ask(gateway, answers, max_tokens=LONG_ANSWER)
    statuses = []
    while whole.is_alive():
        statuses.append(deep_health(gateway)[0])
        time.sleep(0.05)
    lasted = time.monotonic() - started
    stream.join()
    assert lasted > 1.5 * LLAMA_STALL_TIMEOUT_S, f"the answer took {lasted:.1f} s: too short to show anything"
    assert answers == [200, 200]
    assert set(statuses) == {200}, statuses
    print(f"a non-streamed answer of {lasted:.1f} s beside a stream: {len(statuses)} checks, all 200")


def test_readiness_says_unavailable_when_the_backend_is_down(start_gateway: Callable[..., Gateway]):
    gateway = start_gateway("http://127.0.0.1:9")
    status, body = readiness(gateway)
    assert (status, body) == (503, {"status": "unavailable"})
