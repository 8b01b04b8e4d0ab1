"""The other APIs clients speak, through the gateway to a real llama-server, driven by the
official SDKs: OpenAI's Responses API (`openai`), Anthropic's Messages (`anthropic`), the
tokenizer routes; each answer compared with the one the backend gives directly."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import anthropic
import httpx
import openai
import pytest

from conftest import KEYS, PUBLIC_MODEL, UPSTREAM_MODEL, Gateway, LlamaServer

PROMPT = "Capital of France?"


@pytest.fixture
def through_gateway(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEYS[0], max_retries=0)


@pytest.fixture
def direct(llama_server: LlamaServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=llama_server.url + "/v1", api_key="unused", max_retries=0)


def test_responses_plain_answer_as_the_backend_does(through_gateway: openai.OpenAI, direct: openai.OpenAI):
    asked = {"input": PROMPT, "max_output_tokens": 12, "temperature": 0}
    reply = through_gateway.responses.create(model=PUBLIC_MODEL, **asked)
    expected = direct.responses.create(model=UPSTREAM_MODEL, **asked)
    assert reply.output_text == expected.output_text != ""
    assert reply.model == PUBLIC_MODEL


def streamed_response(client: openai.OpenAI, model: str) -> tuple[str, list[str], str]:
    """The text, the event types in order, and the model of the completed response."""
    text, types, completed_model = [], [], ""
    for event in client.responses.create(
        model=model, input=PROMPT, max_output_tokens=12, temperature=0, stream=True
    ):  # fmt: skip
        types.append(event.type)
        if event.type == "response.output_text.delta":
            text.append(event.delta)
        if event.type == "response.completed":
            completed_model = event.response.model
    return "".join(text), types, completed_model


def test_responses_stream_event_by_event_as_the_backend_does(through_gateway: openai.OpenAI, direct: openai.OpenAI):
    text, types, model = streamed_response(through_gateway, PUBLIC_MODEL)
    expected_text, expected_types, _ = streamed_response(direct, UPSTREAM_MODEL)
    assert text == expected_text != ""
    assert types == expected_types and types[-1] == "response.completed"
    assert model == PUBLIC_MODEL


@pytest.fixture
def claude(gateway: Gateway) -> anthropic.Anthropic:
    # The SDK sends its key as x-api-key, as Claude Code does.
    return anthropic.Anthropic(base_url=gateway.url, api_key=KEYS[1], max_retries=0)


@pytest.fixture
def claude_direct(llama_server: LlamaServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=llama_server.url, api_key="unused", max_retries=0)


# Greedy sampling, so that the answer through the gateway can be compared with the direct one
# (this SDK no longer takes temperature as an argument; llama-server still reads it).
MESSAGE = {"max_tokens": 12, "extra_body": {"temperature": 0}, "messages": [{"role": "user", "content": PROMPT}]}


def test_messages_plain_answer_as_the_backend_does(claude: anthropic.Anthropic, claude_direct: anthropic.Anthropic):
    reply = claude.messages.create(model=PUBLIC_MODEL, **MESSAGE)
    expected = claude_direct.messages.create(model=UPSTREAM_MODEL, **MESSAGE)
    assert [block.text for block in reply.content] == [block.text for block in expected.content]
    assert reply.model == PUBLIC_MODEL
    assert reply.usage.output_tokens == expected.usage.output_tokens > 0


def test_messages_stream_as_the_backend_does(claude: anthropic.Anthropic, claude_direct: anthropic.Anthropic):
    with claude.messages.stream(model=PUBLIC_MODEL, **MESSAGE) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    with claude_direct.messages.stream(model=UPSTREAM_MODEL, **MESSAGE) as stream:
        expected = "".join(stream.text_stream)
    assert text == expected != ""
    assert final.model == PUBLIC_MODEL and final.stop_reason == "max_tokens"


def test_token_counts_and_the_tokenizer_as_the_backend_gives_them(
    claude: anthropic.Anthropic, claude_direct: anthropic.Anthropic, gateway: Gateway, llama_server: LlamaServer
):
    asked = {"messages": [{"role": "user", "content": PROMPT}]}
    counted = claude.messages.count_tokens(model=PUBLIC_MODEL, **asked)
    assert counted.input_tokens == claude_direct.messages.count_tokens(model=UPSTREAM_MODEL, **asked).input_tokens > 0
    key = {"Authorization": f"Bearer {KEYS[0]}"}
    tokens = httpx.post(gateway.url + "/tokenize", headers=key, json={"content": PROMPT}).json()
    assert tokens == httpx.post(llama_server.url + "/tokenize", json={"content": PROMPT}).json()
    text = httpx.post(gateway.url + "/detokenize", headers=key, json=tokens).json()
    assert text == httpx.post(llama_server.url + "/detokenize", json=tokens).json()


def test_every_route_needs_a_key(gateway: Gateway):
    for path in ("/v1/responses", "/v1/messages", "/v1/messages/count_tokens", "/tokenize", "/v1/responses/resp_1"):
        response = httpx.post(gateway.url + path, json={"model": PUBLIC_MODEL})
        assert response.status_code == 401, path


def test_a_route_the_backend_lacks_gets_the_backends_own_answer(gateway: Gateway, llama_server: LlamaServer):
    # llama-server keeps no responses: retrieving one is its own 404, not the gateway's.
    through = httpx.get(gateway.url + "/v1/responses/resp_123", headers={"x-api-key": KEYS[0]})
    expected = httpx.get(llama_server.url + "/v1/responses/resp_123")
    assert (through.status_code, through.content) == (expected.status_code, expected.content)


def test_a_model_is_retrieved_by_any_of_its_names(through_gateway: openai.OpenAI):
    assert through_gateway.models.retrieve("qwen3:8b").id == PUBLIC_MODEL
    assert through_gateway.models.retrieve("all-minilm").id == "all-minilm"
    with pytest.raises(openai.NotFoundError):
        through_gateway.models.retrieve("gpt-4o")


@pytest.fixture(scope="module")
def one_slot(start_llama_server: Callable[..., LlamaServer]) -> LlamaServer:
    """A llama-server with one slot and room for a long generation: a second request waits,
    silent, until the first one ends."""
    return start_llama_server("--parallel", "1", "--ctx-size", "32768")


@pytest.fixture
def slot_taken(one_slot: LlamaServer) -> Iterator[threading.Event]:
    """A long generation holding the only slot until the test sets the event it yields."""
    release = threading.Event()
    started = threading.Event()
    body = {"prompt": "a", "n_predict": 30000, "ignore_eos": True, "stream": True}

    def hold() -> None:
        with httpx.stream("POST", one_slot.url + "/completion", json=body, timeout=60) as stream:
            for _chunk in stream.iter_raw():
                started.set()
                if release.is_set():
                    return  # closing the connection stops the generation

    holder = threading.Thread(target=hold)
    holder.start()
    assert started.wait(30), "the long generation never started"
    yield release
    release.set()
    holder.join()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4}),
        ("/v1/messages", {"max_tokens": 4, "messages": [{"role": "user", "content": PROMPT}]}),
    ],
)
def test_a_silent_stream_gets_keepalive_comments_then_its_events(
    start_gateway: Callable[..., Gateway], one_slot: LlamaServer, slot_taken: threading.Event, path: str, body: dict
):
    gateway = start_gateway(one_slot.url, keepalive_s="0.2")
    received = b""
    with httpx.stream(
        "POST",
        gateway.url + path,
        headers={"x-api-key": KEYS[0]},
        json=body | {"model": PUBLIC_MODEL, "stream": True},
        timeout=30,
    ) as stream:
        started = time.monotonic()
        for chunk in stream.iter_raw():
            received += chunk
            if received.count(b": keep-alive\n\n") >= 2:
                slot_taken.set()
            assert time.monotonic() - started < 25, received
    assert received.startswith(b": keep-alive\n\n: keep-alive\n\n"), received[:200]
    events = received.replace(b": keep-alive\n\n", b"")
    assert b"data: " in events and (b"data: [DONE]" in events or b"event: message_stop" in events)


def test_a_passed_answer_has_one_date_one_request_id_and_no_server(gateway: Gateway):
    answer = httpx.get(gateway.url + "/v1/responses/resp_123", headers={"x-api-key": KEYS[0]})
    assert len(answer.headers.get_list("date")) == 1
    assert len(answer.headers.get_list("x-request-id")) == 1
    assert "server" not in answer.headers, "what serves behind the gateway is not told"


def test_a_wrong_method_is_405_naming_the_right_one(gateway: Gateway):
    answer = httpx.get(gateway.url + "/v1/messages", headers={"x-api-key": KEYS[0]})
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"


PREFLIGHT = {"access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type"}


def test_cors_is_off_unless_origins_are_set(gateway: Gateway):
    preflight = httpx.options(gateway.url + "/v1/chat/completions", headers=PREFLIGHT | {"origin": "https://a.test"})
    assert preflight.status_code == 405 and preflight.headers["allow"] == "POST"
    assert "access-control-allow-origin" not in preflight.headers


def test_a_browser_on_a_listed_origin_may_call_and_no_other(
    start_gateway: Callable[..., Gateway], llama_server: LlamaServer
):
    gateway = start_gateway(llama_server.url, cors_origins="https://chat.example.com")
    url = gateway.url + "/v1/chat/completions"
    allowed = httpx.options(url, headers=PREFLIGHT | {"origin": "https://chat.example.com"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://chat.example.com"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = httpx.options(url, headers=PREFLIGHT | {"origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in refused.headers
    body = {"model": PUBLIC_MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 2}
    called = httpx.post(url, json=body, headers={"origin": "https://chat.example.com", "x-api-key": KEYS[0]})
    assert called.status_code == 200
    assert called.headers["access-control-allow-origin"] == "https://chat.example.com"
    assert "x-request-id" in called.headers["access-control-expose-headers"].lower()
