"""The gateway in front of a real llama-server, driven by the official `openai` SDK."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import anthropic
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


def test_score_passes_through_to_vllm(gateway: Gateway, headers: dict):
    # llama-server has no /v1/score: its own 404 shows the request went there as it was.
    body = {"model": "bge-reranker", "text_1": "q", "text_2": ["a"]}
    response = httpx.post(gateway.url + "/v1/score", headers=headers, json=body)
    assert response.status_code == 404 and "File Not Found" in response.text


def test_on_infinity_score_and_teis_body_become_a_rerank(
    start_gateway: Callable[..., Gateway], llama_server: LlamaServer, reranker_server: LlamaServer, headers: dict
):
    """Infinity has no /v1/score and takes no TEI body: both reach the reranker as a
    /v1/rerank (the stand-in's refusal to rerank shows it); malformed ones are refused by the
    gateway, naming the field. molecule/default has the answers of a real reranker."""
    gateway = start_gateway(
        llama_server.url, reranker_url=reranker_server.url, reranker_model="bge-reranker", pooling_engine="infinity"
    )
    adapted = (("/v1/score", {"text_1": "q", "text_2": ["a", "b"]}), ("/rerank", {"query": "q", "texts": ["a"]}))
    for path, body in adapted:
        response = httpx.post(gateway.url + path, headers=headers, json=body)
        assert response.status_code == 501 and "rerank" in response.text.lower(), (path, response.text)
    for path, body, param in (
        ("/v1/score", {"text_1": ["a", "b"], "text_2": ["a", "b", "c"]}, "text_1"),
        ("/v1/score", {"text_1": "q"}, "text_2"),
        ("/rerank", {"query": "q", "texts": [1, 2]}, "texts"),
        ("/v1/rerank", {"query": None, "texts": ["a"]}, "query"),
    ):
        response = httpx.post(gateway.url + path, headers=headers, json=body)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["param"] == param


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


STATUS_PATHS = ("/health/deep", "/metrics", "/config")


def test_only_health_answers_without_a_key(gateway: Gateway, headers: dict):
    """/health tells only that the gateway is up; what the others show (upstreams, models,
    traffic) is for key holders."""
    assert httpx.get(gateway.url + "/health").json() == {"status": "ok"}
    for path in STATUS_PATHS:
        assert httpx.get(gateway.url + path).status_code == 401, path
        assert httpx.get(gateway.url + path, headers=headers).status_code == 200, path


def test_the_status_endpoints_can_be_opened(start_gateway: Callable[..., Gateway], llama_server: LlamaServer):
    """gateway_status_requires_key: false, e.g. for a Prometheus scraper; the API stays keyed."""
    gateway = start_gateway(llama_server.url, status_requires_key="false")
    for path in STATUS_PATHS:
        assert httpx.get(gateway.url + path).status_code == 200, path
    assert httpx.get(gateway.url + "/v1/models").status_code == 401


def test_sighup_rotates_the_keys_without_a_restart(
    start_gateway: Callable[..., Gateway], llama_server: LlamaServer, tmp_path
):
    keys = tmp_path / "api-keys"
    keys.write_text("sk-rotation-old-key-0001\n")
    gateway = start_gateway(llama_server.url, api_keys_file=str(keys))

    def status(key: str) -> int:
        return httpx.get(gateway.url + "/v1/models", headers={"x-api-key": key}).status_code

    def reload_and_wait(expected: str) -> None:
        before = gateway.log.read_text().count(expected)
        gateway.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while gateway.log.read_text().count(expected) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gateway.log.read_text().count(expected) == before + 1

    assert status("sk-rotation-old-key-0001") == 200
    keys.write_text("sk-rotation-new-key-0002\n")
    reload_and_wait("settings reloaded")
    assert (status("sk-rotation-old-key-0001"), status("sk-rotation-new-key-0002")) == (401, 200)
    assert gateway.process.poll() is None, "the same process serves"

    keys.write_text("# every key commented out by mistake\n")
    reload_and_wait("settings not reloaded")
    assert status("sk-rotation-new-key-0002") == 200, "a file with no key keeps the keys in use"


def test_every_response_tells_the_gateways_own_time(gateway: Gateway, headers: dict):
    """Server-Timing: the gateway's time apart from the upstream's, checkable in production."""
    body = {"model": PUBLIC_MODEL, "messages": MESSAGES, "max_tokens": 16}
    timing = httpx.post(gateway.url + "/v1/chat/completions", headers=headers, json=body).headers["server-timing"]
    parts = dict(part.strip().split(";dur=") for part in timing.split(","))
    assert set(parts) == {"gateway", "upstream"}
    assert float(parts["upstream"]) > float(parts["gateway"]) >= 0, "a generation outlasts the gateway's own work"
    health = httpx.get(gateway.url + "/health").headers["server-timing"]
    assert health.endswith("upstream;dur=0.00")


def test_the_access_log_escapes_control_characters(gateway: Gateway):
    """An encoded newline in the path (no key needed to send one) cannot forge a log line."""
    response = httpx.get(gateway.url + "/v1/x%0AINFO switchyard_gateway.access: GET /v1/models 200%0D")
    escaped = "GET /v1/x\\nINFO switchyard_gateway.access: GET /v1/models 200\\r 404"
    deadline = time.monotonic() + 5  # the line is written once the response has gone
    while escaped not in gateway.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = gateway.log.read_text().splitlines()
    assert any(escaped in line and response.headers["x-request-id"] in line for line in log)
    assert not any(line.startswith("INFO switchyard_gateway.access: GET /v1/models 200\r") for line in log)


def test_config_reports_the_setup_and_no_secret(gateway: Gateway, headers: dict, llama_server: LlamaServer):
    response = httpx.get(gateway.url + "/config", headers=headers)
    config = response.json()
    assert config["backend"] == "llamacpp"
    assert config["models"]["chat"] == PUBLIC_MODEL and config["models"]["backend_name"] == UPSTREAM_MODEL
    assert config["upstreams"]["backend"] == llama_server.url
    assert config["versions"]["backend"].startswith("b")  # llama-server's build, from /props
    assert config["auth"] == {
        "enabled": True,
        "keys": [{"name": f"key-{n}", "max_in_flight": None, "priority": None} for n in (1, 2)],
        "status_requires_key": True,
    }
    assert config["workers"] == 1
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
    # A backend that stays down: the wait for it (switch_hold_s) ends in 503.
    gateway = start_gateway(f"http://127.0.0.1:{free_port()}", retry_after="7", switch_hold_s="1")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEYS[0], max_retries=0)
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES, max_tokens=4)
    assert raised.value.status_code == 503
    assert raised.value.response.headers["retry-after"] == "7"
    assert raised.value.body["code"] == "backend_unavailable"
    deep = httpx.get(gateway.url + "/health/deep", headers={"x-api-key": KEYS[0]})
    assert deep.status_code == 503 and deep.json()["services"]["backend"]["status"] == "down"


def test_deep_health_probes_every_upstream(gateway: Gateway, headers: dict):
    deep = httpx.get(gateway.url + "/health/deep", headers=headers).json()
    assert deep["status"] == "ok"
    assert {name: service["status"] for name, service in deep["services"].items()} == {
        "backend": "ok",
        "embedding": "ok",
        "reranker": "ok",
    }


def test_deep_health_reports_the_gpu_check(
    start_gateway: Callable[..., Gateway], llama_server: LlamaServer, headers: dict, tmp_path
):
    """The host's GPU conformance check (roles/nvidia writes its status file every minute):
    shown as `gpu`, and a failing or missing check makes the answer degraded."""
    status_file = tmp_path / "gpu-status.json"
    gateway = start_gateway(llama_server.url, gpu_status_file=str(status_file))

    def deep() -> dict:
        response = httpx.get(gateway.url + "/health/deep", headers=headers)
        assert response.status_code == 200
        return response.json()

    missing = deep()
    assert (missing["status"], missing["gpu"]["status"]) == ("degraded", "unknown")
    assert "has not run yet" in missing["gpu"]["error"]
    ok = {"status": "ok", "checked_at": "2026-11-28T06:00:00Z", "driver_version": "580.95.05", "problems": []}
    status_file.write_text(json.dumps(ok | {"checks": {"driver": {"status": "ok"}}}))
    assert deep()["status"] == "ok" and deep()["gpu"] == ok
    mismatch = "driver: Driver/library version mismatch: ...; fix: reboot the host to load the installed driver"
    status_file.write_text(json.dumps(ok | {"status": "failing", "driver_version": None, "problems": [mismatch]}))
    failing = deep()
    assert failing["status"] == "degraded" and failing["gpu"]["problems"] == [mismatch]


def test_deep_health_has_no_gpu_section_without_a_gpu(gateway: Gateway, headers: dict):
    assert "gpu" not in httpx.get(gateway.url + "/health/deep", headers=headers).json()


def test_deep_health_sees_an_upstream_that_serves_another_model(
    start_gateway: Callable[..., Gateway], llama_server: LlamaServer, embedding_server: LlamaServer, headers: dict
):
    """A server that answers but does not serve the configured model is not healthy: after a
    switch that went wrong, /health alone would say 200."""
    gateway = start_gateway(llama_server.url, embedding_url=embedding_server.url, embedding_model="bge-m3")
    deep = httpx.get(gateway.url + "/health/deep", headers=headers)
    assert deep.status_code == 200 and deep.json()["status"] == "degraded"
    embedding = deep.json()["services"]["embedding"]
    assert embedding["status"] == "unhealthy" and "'bge-m3'" in embedding["error"]
    gateway = start_gateway(llama_server.url, backend_model="qwen3-8b")
    deep = httpx.get(gateway.url + "/health/deep", headers=headers)
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


def test_metrics_count_requests_and_tokens(gateway: Gateway, client: openai.OpenAI, headers: dict):
    client.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES, max_tokens=5)
    metrics = httpx.get(gateway.url + "/metrics", headers=headers).text
    assert 'switchyard_gateway_requests_total{key="key-1",route="/v1/chat/completions",status="200"}' in metrics
    assert f'switchyard_gateway_tokens_total{{key="key-1",kind="completion",model="{PUBLIC_MODEL}"}}' in metrics
    assert "switchyard_gateway_request_duration_seconds_bucket" in metrics


def tokens_counted(url: str, kind: str, headers: dict | None = None, key: str = "key-1") -> float:
    """The gateway's count of `kind` tokens for the key named `key` and the public model."""
    wanted = f'switchyard_gateway_tokens_total{{key="{key}",kind="{kind}",model="{PUBLIC_MODEL}"}} '
    for line in httpx.get(url + "/metrics", headers=headers).text.splitlines():
        if line.startswith(wanted):
            return float(line.split()[1])
    return 0.0


def test_the_token_counter_equals_the_backends_own_over_a_mixed_run(
    start_gateway: Callable[..., Gateway], start_llama_server: Callable[..., LlamaServer], headers: dict
):
    """Every API, streamed or not, with and without the client asking for usage: counted once,
    under the key that asked."""
    # A backend of its own: the shared one may still finish generations other tests left.
    llama_server = start_llama_server("--parallel", "2")
    gateway = start_gateway(llama_server.url)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEYS[0], max_retries=0)
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=KEYS[0], max_retries=0)
    counted_before = {kind: tokens_counted(gateway.url, kind, headers) for kind in ("prompt", "completion")}
    backend_before = {kind: llama_server.metric(f"{kind}_total") for kind in ("prompt_tokens", "tokens_predicted")}
    client.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES, max_tokens=5)
    unasked = list(client.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES, max_tokens=6, stream=True))
    asked = list(
        client.chat.completions.create(
            model=PUBLIC_MODEL, messages=MESSAGES, max_tokens=7, stream=True, stream_options={"include_usage": True}
        )
    )
    list(client.completions.create(model=PUBLIC_MODEL, prompt="Paris is", max_tokens=8, stream=True))
    client.responses.create(model=PUBLIC_MODEL, input="Capital of Spain?", max_output_tokens=9)
    list(client.responses.create(model=PUBLIC_MODEL, input="Capital of Italy?", max_output_tokens=10, stream=True))
    message = {"messages": [{"role": "user", "content": "Capital of Peru?"}]}
    claude.messages.create(model=PUBLIC_MODEL, max_tokens=11, **message)
    with claude.messages.stream(model=PUBLIC_MODEL, max_tokens=12, **message) as stream:
        stream.until_done()
    generated = sum(range(5, 13))

    def counts() -> tuple[dict[str, float], dict[str, float]]:
        counted = {kind: tokens_counted(gateway.url, kind, headers) - counted_before[kind] for kind in counted_before}
        backend = {kind: llama_server.metric(f"{kind}_total") - backend_before[kind] for kind in backend_before}
        return counted, backend

    # Both count a stream when it ends, a moment after its client read the last event.
    deadline = time.monotonic() + 10
    counted, backend = counts()
    while {counted["completion"], backend["tokens_predicted"]} != {generated} and time.monotonic() < deadline:
        time.sleep(0.1)
        counted, backend = counts()
    assert counted["completion"] == backend["tokens_predicted"] == generated
    # llama-server counts the prompt tokens it evaluated: a prompt it had cached counts less there.
    assert counted["prompt"] >= backend["prompt_tokens"] > 0
    assert tokens_counted(gateway.url, "completion", headers, key="key-2") == 0, "counted under the key that asked"
    assert [chunk.usage for chunk in unasked if chunk.usage] == [], "no usage the client did not ask for"
    assert [chunk.usage.completion_tokens for chunk in asked if chunk.usage] == [7]


def test_connections_the_backend_drops_cost_no_request(gateway: Gateway, headers: dict):
    """llama-server closes kept-alive connections without notice (after a stream, and when its
    HTTP threads are busy); a request the gateway sends on one as it goes is sent again."""
    outcomes: list[str] = []
    requests_per_client = 30  # a count, not a time: a loaded machine makes fewer in a given time

    def client(stream: bool) -> None:
        body = {"model": PUBLIC_MODEL, "messages": MESSAGES, "max_tokens": 4, "stream": stream}
        with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as session:
            for _ in range(requests_per_client):
                with session.stream("POST", "/v1/chat/completions", json=body) as response:
                    text = response.read().decode()
                outcomes.append("ok" if response.status_code == 200 and '"error"' not in text else text[-120:])

    clients = [threading.Thread(target=client, args=(index % 2 == 0,)) for index in range(4)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    assert len(outcomes) == 4 * requests_per_client
    assert [outcome for outcome in outcomes if outcome != "ok"] == []
