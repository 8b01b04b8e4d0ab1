"""The gateway in front of a real llama-server, driven by the official `openai` SDK."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from conftest import KEYS, PUBLIC_MODEL, ROOT, UPSTREAM_MODEL, Gateway, LlamaServer, free_port

# Forces the tiny random model to answer in Qwen3's shape, so the reasoning path runs for real.
THINK_GRAMMAR = 'root ::= "<think>" [a-z]{3,12} "</think>" "Paris"'
MESSAGES = [{"role": "user", "content": "Capital of France?"}]


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEYS[0], max_retries=0)


def test_models_lists_the_public_names(client: openai.OpenAI):
    assert [model.id for model in client.models.list()] == [PUBLIC_MODEL, "all-minilm", "bge-reranker"]


@pytest.mark.parametrize("name", [PUBLIC_MODEL, "qwen3:8b", UPSTREAM_MODEL])
def test_chat_answers_under_the_public_name_whatever_name_was_asked(client: openai.OpenAI, name: str):
    reply = client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=8)
    assert reply.model == PUBLIC_MODEL
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_unknown_model_is_404_listing_the_available_ones(client: openai.OpenAI):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=4)
    error = raised.value.body
    assert error["code"] == "model_not_found"
    assert PUBLIC_MODEL in error["message"] and "gpt-4o" in error["message"]


def test_streamed_chat_arrives_in_chunks_and_ends(client: openai.OpenAI):
    chunks = list(
        client.chat.completions.create(
            model=PUBLIC_MODEL, messages=MESSAGES, max_tokens=16, stream=True, stream_options={"include_usage": True}
        )
    )
    assert len(chunks) >= 16
    assert {chunk.model for chunk in chunks} == {PUBLIC_MODEL}
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16


def test_legacy_completions_are_routed(client: openai.OpenAI):
    reply = client.completions.create(model=PUBLIC_MODEL, prompt="Once upon", max_tokens=4)
    assert reply.model == PUBLIC_MODEL and reply.choices[0].text


def test_reasoning_is_separated_from_the_answer(client: openai.OpenAI):
    reply = client.chat.completions.create(
        model=PUBLIC_MODEL, messages=MESSAGES, max_tokens=40, extra_body={"grammar": THINK_GRAMMAR}
    )
    message = reply.choices[0].message.model_dump()
    assert message["content"] == "Paris"
    assert message["reasoning_content"] and message["reasoning_content"] == message["reasoning"]
    assert "<think>" not in message["reasoning_content"]


def test_streamed_reasoning_is_separated_from_the_answer(client: openai.OpenAI):
    stream = client.chat.completions.create(
        model=PUBLIC_MODEL, messages=MESSAGES, max_tokens=40, stream=True, extra_body={"grammar": THINK_GRAMMAR}
    )
    reasoning = content = ""
    for chunk in stream:
        delta = chunk.choices[0].delta.model_dump() if chunk.choices else {}
        assert delta.get("reasoning_content") == delta.get("reasoning")
        reasoning += delta.get("reasoning_content") or ""
        content += delta.get("content") or ""
    assert content == "Paris"
    assert reasoning.isalpha()


def test_the_thinking_switch_is_accepted_by_the_backend(client: openai.OpenAI):
    reply = client.chat.completions.create(
        model=PUBLIC_MODEL, messages=MESSAGES, max_tokens=4, extra_body={"enable_thinking": False}
    )
    assert reply.choices[0].finish_reason == "length"


def test_embeddings_go_to_the_embedding_service(client: openai.OpenAI):
    result = client.embeddings.create(model="all-minilm", input=["cat", "truck"])
    assert [len(item.embedding) for item in result.data] == [64, 64]


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
def test_rerank_goes_to_the_reranker_service(gateway: Gateway, headers: dict, path: str):
    # The stand-in reranker is llama-server in embedding mode: it refuses to rerank, and that
    # refusal, passed on as is, shows the request reached it.
    response = httpx.post(
        gateway.url + path, headers=headers, json={"model": "bge-reranker", "query": "q", "documents": ["a"]}
    )
    assert response.status_code == 501 and "rerank" in response.text.lower()


# --- Auth -------------------------------------------------------------------------------


def test_a_missing_key_is_401_in_openai_shape(gateway: Gateway):
    # The SDK refuses to send no key at all, so this one goes by hand.
    response = httpx.post(gateway.url + "/v1/chat/completions", json={"model": PUBLIC_MODEL, "messages": MESSAGES})
    assert response.status_code == 401
    assert response.json()["error"] == {
        "message": "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
        "type": "authentication_error",
        "param": None,
        "code": "missing_api_key",
    }


def test_a_wrong_key_is_401(gateway: Gateway):
    with pytest.raises(openai.AuthenticationError) as raised:
        openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEYS[0] + "x", max_retries=0).models.list()
    assert raised.value.body["code"] == "invalid_api_key"


def test_x_api_key_is_accepted(gateway: Gateway):
    response = httpx.get(gateway.url + "/v1/models", headers={"x-api-key": KEYS[1]})
    assert response.status_code == 200


def test_health_is_open_by_default(gateway: Gateway):
    assert httpx.get(gateway.url + "/health").json() == {"status": "ok"}


def test_health_can_require_a_key(start_gateway: Callable[..., Gateway], llama_server: LlamaServer, headers: dict):
    gateway = start_gateway(llama_server.url, health_requires_key="true")
    assert httpx.get(gateway.url + "/health/deep").status_code == 401
    assert httpx.get(gateway.url + "/health/deep", headers=headers).status_code == 200


def test_config_reports_the_setup_and_no_secret(gateway: Gateway, headers: dict, llama_server: LlamaServer):
    response = httpx.get(gateway.url + "/config", headers=headers)
    config = response.json()
    assert config["backend"] == "llamacpp"
    assert config["models"]["chat"] == PUBLIC_MODEL and config["models"]["backend_name"] == UPSTREAM_MODEL
    assert config["upstreams"]["backend"] == llama_server.url
    assert config["versions"]["backend"].startswith("b")  # llama-server's build, from /props
    assert config["auth"] == {"enabled": True, "keys": 2, "health_requires_key": False}
    assert not any(key in response.text for key in KEYS)


def test_keys_never_reach_the_log(gateway: Gateway, headers: dict):
    httpx.get(gateway.url + "/v1/models", headers=headers)
    log = gateway.log.read_text()
    assert "GET /v1/models 200" in log
    assert not any(key in log for key in KEYS)


def test_auth_on_without_keys_refuses_to_start():
    result = subprocess.run(
        [sys.executable, "-m", "switchyard_gateway"],
        env={
            "SWITCHYARD_GATEWAY_BACKEND": "vllm",
            "SWITCHYARD_GATEWAY_MODEL": "m",
            "PYTHONPATH": str(ROOT / "gateway/src"),
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "no API key file is configured" in result.stderr


# --- Failure behaviour ------------------------------------------------------------------


def test_malformed_json_is_400(gateway: Gateway, headers: dict):
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=headers, content=b'{"model": ')
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_a_body_over_the_limit_is_413(start_gateway: Callable[..., Gateway], llama_server: LlamaServer, headers: dict):
    gateway = start_gateway(llama_server.url, max_body_bytes="1024")
    body = {"model": PUBLIC_MODEL, "messages": [{"role": "user", "content": "x" * 2000}]}
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=headers, json=body)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_backend_down_is_503_with_retry_after(start_gateway: Callable[..., Gateway]):
    gateway = start_gateway(f"http://127.0.0.1:{free_port()}", retry_after="7")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEYS[0], max_retries=0)
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES, max_tokens=4)
    assert raised.value.status_code == 503
    assert raised.value.response.headers["retry-after"] == "7"
    assert raised.value.body["code"] == "backend_unavailable"
    deep = httpx.get(gateway.url + "/health/deep")
    assert deep.status_code == 503 and deep.json()["services"]["backend"]["status"] == "down"


def test_deep_health_probes_every_upstream(gateway: Gateway):
    deep = httpx.get(gateway.url + "/health/deep").json()
    assert deep["status"] == "ok"
    assert {name: service["status"] for name, service in deep["services"].items()} == {
        "backend": "ok",
        "embedding": "ok",
        "reranker": "ok",
    }


def test_deep_health_sees_an_upstream_that_serves_another_model(
    start_gateway: Callable[..., Gateway], llama_server: LlamaServer, embedding_server: LlamaServer
):
    """A server that answers but does not serve the configured model is not healthy: after a
    switch that went wrong, /health alone would say 200."""
    gateway = start_gateway(llama_server.url, embedding_url=embedding_server.url, embedding_model="bge-m3")
    deep = httpx.get(gateway.url + "/health/deep")
    assert deep.status_code == 200 and deep.json()["status"] == "degraded"
    embedding = deep.json()["services"]["embedding"]
    assert embedding["status"] == "unhealthy" and "'bge-m3'" in embedding["error"]
    gateway = start_gateway(llama_server.url, backend_model="qwen3-8b")
    deep = httpx.get(gateway.url + "/health/deep")
    assert deep.status_code == 503 and deep.json()["services"]["backend"]["status"] == "unhealthy"


def test_an_upstream_timeout_is_504(start_gateway: Callable[..., Gateway], llama_server: LlamaServer, headers: dict):
    gateway = start_gateway(llama_server.url, read_timeout="0.2")
    body = {"model": PUBLIC_MODEL, "messages": MESSAGES, "max_tokens": 1500, "ignore_eos": True}
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=headers, json=body, timeout=30)
    assert response.status_code == 504 and response.json()["error"]["code"] == "backend_timeout"


def test_a_client_disconnect_cancels_the_generation(
    start_llama_server: Callable[..., LlamaServer], start_gateway: Callable[..., Gateway], headers: dict
):
    upstream = start_llama_server("--parallel", "1")
    gateway = start_gateway(upstream.url)
    body = {"model": PUBLIC_MODEL, "messages": MESSAGES, "max_tokens": 1800, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", headers=headers, json=body) as response:
        assert next(response.iter_lines()).startswith("data: ")
    deadline = time.monotonic() + 30
    while upstream.metric("requests_processing") > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.metric("requests_processing") == 0
    assert upstream.metric("tokens_predicted_total") < 1800


def test_a_broken_upstream_stream_ends_with_an_error_event(
    start_llama_server: Callable[..., LlamaServer], start_gateway: Callable[..., Gateway], headers: dict
):
    upstream = start_llama_server("--parallel", "1")
    gateway = start_gateway(upstream.url)
    body = {"model": PUBLIC_MODEL, "messages": MESSAGES, "max_tokens": 1800, "ignore_eos": True, "stream": True}
    events = []
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", headers=headers, json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if len(events) == 3:
                    upstream.process.kill()
    assert events[-1] != "[DONE]"
    assert json.loads(events[-1])["error"]["code"] == "backend_error"


def test_metrics_count_requests_and_tokens(gateway: Gateway, client: openai.OpenAI):
    client.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES, max_tokens=5)
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'switchyard_gateway_requests_total{route="/v1/chat/completions",status="200"}' in metrics
    assert 'switchyard_gateway_tokens_total{kind="completion"}' in metrics
    assert "switchyard_gateway_request_duration_seconds_bucket" in metrics
