"""Named API keys: what the key file says of each key (name, requests in flight, vLLM
priority), counted across worker processes, in metrics and the log under the name only.

The requests that must stay in flight are held by conftest's BackendDouble: no real backend
holds a request for as long as a test needs, on cue."""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conftest import PUBLIC_MODEL, UPSTREAM_MODEL, BackendDouble, Gateway
from switchyard_gateway.keys import ApiKey, KeyFileError, read_key_file
from switchyard_gateway.limits import InFlight
from switchyard_gateway.settings import SettingsError, load

BATCH, CHAT_KEY, PLAIN = "sk-batch-0123456789abcdef", "sk-chat-0123456789abcdef", "sk-plain-0123456789abcdef"
ANSWER = (
    b'{"id":"chatcmpl-1","object":"chat.completion","model":"%s","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"Paris"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}' % UPSTREAM_MODEL.encode()
)
REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(ANSWER) + ANSWER
CHAT = {"model": PUBLIC_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def key_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "api-keys"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_the_key_file_gives_names_limits_and_priorities(tmp_path: Path):
    path = key_file(
        tmp_path,
        f"# comment\n{PLAIN}\n\n{BATCH} name=batch max_in_flight=4 priority=10\n  {CHAT_KEY}  priority=-5 name=chat\n",
    )
    assert read_key_file(path) == (
        ApiKey(PLAIN, "key-1"),
        ApiKey(BATCH, "batch", max_in_flight=4, priority=10, slot=0),
        ApiKey(CHAT_KEY, "chat", priority=-5),
    )


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (f"{BATCH} colour=blue", "line 2: word 2 is not one of name=, max_in_flight=, priority="),
        (f"{BATCH} name=a name=b", "line 2: word 3 is not one of"),
        (f"{BATCH} max_in_flight=two", "line 2: max_in_flight='two' is not a whole number"),
        (f"{BATCH} max_in_flight=-1", "max_in_flight=-1: 0 (no limit) or more"),
        (f"{BATCH} name=no/slash", "line 2: name='no/slash'"),
        # A key with a space in it: the second half must not be shown.
        ("sk-first-half second-half-of-the-key", "line 2: word 2 is not one of"),
        (f"{BATCH} name=key-1", "the name key-1 is given to more than one key"),
    ],
)
def test_a_malformed_key_file_is_refused_naming_the_line_never_the_key(tmp_path: Path, line: str, said: str):
    path = key_file(tmp_path, f"{PLAIN}\n{line}\n")
    with pytest.raises(SettingsError, match="API key file") as refused:
        load({"SWITCHYARD_GATEWAY_BACKEND": "vllm", "SWITCHYARD_GATEWAY_MODEL": "m",
              "SWITCHYARD_GATEWAY_API_KEYS_FILE": str(path)})  # fmt: skip
    assert said in str(refused.value)
    assert not any(secret in str(refused.value) for secret in (PLAIN, BATCH, "second-half", "first-half"))


def test_a_key_file_with_too_many_limited_keys_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("switchyard_gateway.keys.LIMITED_KEYS_MAX", 2)
    lines = "".join(f"sk-limited-key-{n:04d} max_in_flight=1\n" for n in range(3))
    with pytest.raises(KeyFileError, match="3 keys have a max_in_flight: 2 at most"):
        read_key_file(key_file(tmp_path, lines))


@pytest.fixture
def in_flight() -> Iterator[InFlight]:
    yield InFlight(workers=2)


def _in_a_child(work: Callable[[], None]) -> int:
    """Runs `work` in a forked process, as a worker does, and returns its pid once it ended."""
    pid = os.fork()
    if pid == 0:
        try:
            work()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_the_count_is_shared_by_the_workers_and_cleared_with_a_dead_ones_row(in_flight: InFlight):
    key = ApiKey(BATCH, "batch", max_in_flight=2, slot=0)

    def worker_one() -> None:
        in_flight.use_row(1)
        assert in_flight.enter(key)

    _in_a_child(worker_one)  # it died with its request counted
    assert in_flight.enter(key), "the second request of the limit"
    assert not in_flight.enter(key), "a third, counted across both workers"
    in_flight.clear_row(1)  # what the supervisor does before the next worker takes the row
    assert in_flight.enter(key)
    assert in_flight.count(0) == 2


def test_a_worker_that_dies_holding_the_lock_blocks_no_one(in_flight: InFlight):
    key = ApiKey(BATCH, "batch", max_in_flight=1, slot=0)
    _in_a_child(lambda: fcntl.lockf(in_flight._fd, fcntl.LOCK_EX))
    signal.alarm(5)  # a lock left held would hang the test: fail it instead
    try:
        assert in_flight.enter(key)
    finally:
        signal.alarm(0)


@pytest.fixture
def limited_gateway(
    tmp_path: Path, start_gateway: Callable[..., Gateway], backend_double: Callable[..., BackendDouble]
) -> tuple[Gateway, BackendDouble, threading.Event]:
    """Two workers; the batch key may have 2 requests in flight, the chat key any number; the
    backend holds every request until the event is set."""
    hold = threading.Event()
    backend = backend_double(REPLY, hold)
    keys = key_file(tmp_path, f"{BATCH} name=batch max_in_flight=2\n{CHAT_KEY} name=chat\n")
    return start_gateway(backend.url, workers="2", api_keys_file=str(keys)), backend, hold


def _send(gateway: Gateway, key: str, outcomes: list[int | str]) -> threading.Thread:
    def send() -> None:
        try:
            response = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, timeout=60,
                                  headers={"Authorization": f"Bearer {key}"})  # fmt: skip
            outcomes.append(response.status_code)
        except httpx.HTTPError as error:
            outcomes.append(type(error).__name__)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _batch_key_at_its_limit(gateway: Gateway, backend: BackendDouble) -> tuple[list[threading.Thread], list]:
    """The batch key's two requests, held by the backend: (their threads, their outcomes)."""
    outcomes: list[int | str] = []
    held = [_send(gateway, BATCH, outcomes) for _ in range(2)]
    _wait_for(lambda: len(backend.received) == 2, "the batch key's two requests reached the backend")
    return held, outcomes


def test_a_key_over_its_limit_gets_429_while_another_key_passes(
    limited_gateway: tuple[Gateway, BackendDouble, threading.Event],
):
    gateway, backend, hold = limited_gateway
    held, outcomes = _batch_key_at_its_limit(gateway, backend)
    refused = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers={"x-api-key": BATCH})
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "too_many_requests_in_flight"
    assert refused.headers["retry-after"] == "1"
    held.append(_send(gateway, CHAT_KEY, outcomes))
    _wait_for(lambda: len(backend.received) == 3, "the chat key's request reached the backend")
    hold.set()
    for thread in held:
        thread.join()
    assert outcomes == [200, 200, 200]
    again = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers={"x-api-key": BATCH})
    assert again.status_code == 200, "the answered requests no longer count"
    metrics = httpx.get(gateway.url + "/metrics", headers={"x-api-key": CHAT_KEY}).text
    assert 'switchyard_gateway_requests_total{key="batch",route="/v1/chat/completions",status="429"} 1.0' in metrics
    assert f'switchyard_gateway_tokens_total{{key="chat",kind="completion",model="{PUBLIC_MODEL}"}} 1.0' in metrics
    log = gateway.log.read_text()
    assert any(" 429 " in line and " key=batch " in line for line in log.splitlines()), log
    assert BATCH not in log and CHAT_KEY not in log


def test_a_worker_killed_with_requests_in_flight_leaves_them_uncounted(
    limited_gateway: tuple[Gateway, BackendDouble, threading.Event],
):
    gateway, backend, hold = limited_gateway
    held, _outcomes = _batch_key_at_its_limit(gateway, backend)
    workers = [int(pid) for pid in Path(f"/proc/{gateway.process.pid}/task/{gateway.process.pid}/children")
               .read_text().split()]  # fmt: skip
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    for thread in held:
        thread.join()
    _wait_for(lambda: httpx.get(gateway.url + "/health").status_code == 200, "new workers serve")
    hold.set()
    answered = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers={"x-api-key": BATCH})
    assert answered.status_code == 200, answered.text


@pytest.mark.parametrize(("backend", "forwarded"), [("vllm", [10, -5, 0]), ("llamacpp", [-100, -100, -100])])
def test_vllm_gets_each_keys_priority_and_no_client_picks_its_own(
    tmp_path: Path,
    start_gateway: Callable[..., Gateway],
    backend_double: Callable[..., BackendDouble],
    backend: str,
    forwarded: list[int],
):
    double = backend_double(REPLY)
    keys = key_file(tmp_path, f"{BATCH} name=batch priority=10\n{CHAT_KEY} name=chat priority=-5\n{PLAIN}\n")
    gateway = start_gateway(double.url, backend=backend, api_keys_file=str(keys))
    for key in (BATCH, CHAT_KEY, PLAIN):
        response = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT | {"priority": -100},
                              headers={"x-api-key": key})  # fmt: skip
        assert response.status_code == 200, response.text
    assert [body["priority"] for body in double.bodies] == forwarded
