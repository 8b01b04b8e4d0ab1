"""A backend that fails the way real ones do: a generation is never sent twice, a busy
backend is not hammered, and a client that leaves stops its generation.

The first two use a test double of a backend (conftest's BackendDouble): no real server can
be made to drop a connection after reading a request, or to answer busy, on cue. It fails as
they fail: a crashed server closes the connection without an answer; Ollama sheds load with
`503` and a Retry-After.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable

import httpx
import pytest

from conftest import KEYS, PUBLIC_MODEL, BackendDouble, Gateway, LlamaServer

CHAT = {"model": PUBLIC_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
HEADERS = {"Authorization": f"Bearer {KEYS[0]}"}
BUSY_BODY = b'{"error":{"message":"server busy, please try again. maximum pending requests exceeded"}}'


@pytest.mark.parametrize("stream", [False, True])
def test_a_backend_that_dies_after_reading_the_request_gets_it_once(
    start_gateway: Callable[..., Gateway], backend_double: Callable[..., BackendDouble], stream: bool
):
    backend = backend_double(b"")
    gateway = start_gateway(backend.url, switch_hold_s="5")
    started = time.monotonic()
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=HEADERS, json=CHAT | {"stream": stream})
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "backend_error"
    assert len(backend.received) == 1, "the generation was sent again"
    assert time.monotonic() - started < 3, "answered at once, not after a hold"


def test_a_busy_backend_is_asked_no_faster_than_its_retry_after(
    start_gateway: Callable[..., Gateway], backend_double: Callable[..., BackendDouble]
):
    reply = (
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(BUSY_BODY) + BUSY_BODY
    )
    backend = backend_double(reply)
    gateway = start_gateway(backend.url, switch_hold_s="7")
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=HEADERS, json=CHAT, timeout=30)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert "server busy" in response.json()["error"]["message"], "the backend's own answer"
    gaps = [later - earlier for earlier, later in itertools.pairwise(backend.received)]
    assert 1 <= len(backend.received) <= 3 and all(gap >= 2.9 for gap in gaps), backend.received


def test_a_client_that_leaves_a_plain_request_frees_the_backends_slot(
    start_gateway: Callable[..., Gateway], start_llama_server: Callable[..., LlamaServer]
):
    """One slot, a long non-streamed generation through the gateway, its client gone: the next
    request is answered as soon as llama-server sees the closed connection (it looks once a
    second), not when the generation would have ended (several seconds later)."""
    # Context shift: the generation goes on past the tiny model's 2,048-token context.
    backend = start_llama_server("--parallel", "1", "--context-shift")
    gateway = start_gateway(backend.url)
    body = b'{"model": "%s", "prompt": "a", "max_tokens": 20000, "ignore_eos": true}' % PUBLIC_MODEL.encode()
    host, port = gateway.url.removeprefix("http://").split(":")
    client = socket.create_connection((host, int(port)))
    client.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n" % (host.encode(), KEYS[0].encode())
        + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )
    deadline = time.monotonic() + 30
    while backend.metric("requests_processing") < 1:
        assert time.monotonic() < deadline, "the generation never started"
        time.sleep(0.3)  # not faster: each look is a task that delays llama-server's own check
    client.close()
    left = time.monotonic()
    quick = {"prompt": "a", "max_tokens": 1}
    assert httpx.post(backend.url + "/v1/completions", json=quick, timeout=60).status_code == 200
    waited = time.monotonic() - left
    print(f"the slot was free {waited:.2f} s after the client left")
    # llama-server looks once a second; a loaded CI machine adds to that, the full generation far more.
    assert waited < 4, "the backend went on generating for a client that left"


def test_the_trace_context_goes_on_and_the_key_does_not(
    start_gateway: Callable[..., Gateway], backend_double: Callable[..., BackendDouble]
):
    backend = backend_double(b"")
    gateway = start_gateway(backend.url)
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "vendor=1"}
    httpx.post(gateway.url + "/v1/chat/completions", headers=HEADERS | trace, json=CHAT)
    (sent,) = backend.headers
    assert {name: sent.get(name) for name in trace} == trace
    assert "authorization" not in sent and "x-api-key" not in sent
