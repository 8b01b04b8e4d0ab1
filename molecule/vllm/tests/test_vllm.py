"""vLLM's three services on the sandbox host, with real models, and the backend switch
that leaves embedding and reranker running."""

import json
import math

import httpx
import pytest

from conftest import (
    GATEWAY_KEY,
    GATEWAY_URL,
    TEST_API_TARGETS,
    assert_test_api_passes,
    backend_containers,
    pooling_containers,
)

CHAT_MODEL = "tiny-chat"
POOLING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DOCUMENTS = [
    "A truck carries heavy goods on the highway.",
    "Paris is the capital and largest city of France.",
    "Kittens sleep up to twenty hours a day.",
]
QUERY = "What is the capital of France?"


def url(port: int, path: str) -> str:
    return f"http://127.0.0.1:{port}{path}"


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.mark.parametrize("unit", ["llm-backend", "llm-embedding", "llm-reranker"])
def test_the_three_vllm_units_run(host, unit):
    assert host.service(unit).is_running


def test_embeddings_carry_meaning():
    body = {"model": POOLING_MODEL, "input": ["cat", "kitten", "truck"]}
    response = httpx.post(url(8001, "/v1/embeddings"), json=body, timeout=60)
    assert response.status_code == 200, response.text
    cat, kitten, truck = (item["embedding"] for item in response.json()["data"])
    assert len(cat) == 384
    assert cosine(cat, kitten) > cosine(cat, truck)


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
def test_rerank_puts_the_relevant_document_first(path):
    body = {"model": POOLING_MODEL, "query": QUERY, "documents": DOCUMENTS}
    response = httpx.post(url(8002, path), json=body, timeout=60)
    assert response.status_code == 200, response.text
    ranked = sorted(response.json()["results"], key=lambda result: -result["relevance_score"])
    assert ranked[0]["index"] == 1


def test_score_prefers_the_relevant_document():
    body = {"model": POOLING_MODEL, "text_1": QUERY, "text_2": DOCUMENTS}
    response = httpx.post(url(8002, "/v1/score"), json=body, timeout=60)
    assert response.status_code == 200, response.text
    scores = [item["score"] for item in response.json()["data"]]
    assert scores.index(max(scores)) == 1


def test_chat_backend_serves_the_model_name():
    models = httpx.get(url(8000, "/v1/models"), timeout=30).json()["data"]
    assert [model["id"] for model in models] == [CHAT_MODEL]


def prompt_tokens(base: str, extra: dict, headers: dict | None = None) -> int:
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Capital of France?"}], "max_tokens": 4}
    response = httpx.post(base + "/v1/chat/completions", json=body | extra, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["usage"]["prompt_tokens"]


def test_the_thinking_switch_reaches_qwen3s_template_directly_and_through_the_gateway():
    """With enable_thinking false, Qwen3's template closes an empty <think> block in the
    prompt itself (the tiny random model never writes one): the prompt grows by its tokens.
    Through the gateway, its one switch ("enable_thinking": false) must do the same."""
    on = prompt_tokens(url(8000, ""), {"chat_template_kwargs": {"enable_thinking": True}})
    off = prompt_tokens(url(8000, ""), {"chat_template_kwargs": {"enable_thinking": False}})
    assert off > on
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    assert prompt_tokens(GATEWAY_URL, {}, headers) == on
    assert prompt_tokens(GATEWAY_URL, {"enable_thinking": False}, headers) == off


def test_vllm_serves_the_downloaded_revision_offline(host):
    """vLLM never asks the Hub at start: the model is the one the models role downloaded."""
    for container in ("llm-vllm", "llm-embedding", "llm-reranker"):
        env = host.check_output(f"podman exec {container} printenv HF_HUB_OFFLINE")
        assert env == "1", container
    argv = host.check_output("podman inspect --format '{{json .Config.Cmd}}' llm-vllm")
    assert json.loads(argv)[json.loads(argv).index("--revision") + 1] == "main"


def test_chat_streams():
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16, "stream": True}
    with httpx.stream("POST", url(8000, "/v1/chat/completions"), json=body, timeout=120) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert {json.loads(event)["model"] for event in events[:-1]} == {CHAT_MODEL}


def test_the_gateway_reaches_all_three():
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    deep = httpx.get(GATEWAY_URL + "/health/deep", headers=headers, timeout=30).json()
    assert deep["status"] == "ok" and set(deep["services"]) == {"backend", "embedding", "reranker"}
    body = {"model": POOLING_MODEL, "query": QUERY, "documents": DOCUMENTS}
    assert httpx.post(GATEWAY_URL + "/v1/rerank", json=body, headers=headers, timeout=60).status_code == 200


@pytest.mark.parametrize("target", TEST_API_TARGETS.values(), ids=TEST_API_TARGETS)
def test_test_api_passes_every_check(target):
    assert_test_api_passes(target)


def test_switch_to_llamacpp_and_back_leaves_embedding_and_reranker_running(host, run_site):
    pooling = pooling_containers(host)
    assert set(pooling) == {"llm-embedding", "llm-reranker"}

    to_llamacpp = run_site("llm_backend=llamacpp")
    assert to_llamacpp.returncode == 0, to_llamacpp.output
    assert list(backend_containers(host)) == ["llm-llamacpp"]
    assert httpx.get(url(8000, "/v1/models"), timeout=30).json()["data"][0]["id"] == CHAT_MODEL
    assert pooling_containers(host) == pooling, "a backend switch restarted embedding or reranker"

    back = run_site()
    assert back.returncode == 0, back.output
    assert list(backend_containers(host)) == ["llm-vllm"]
    assert pooling_containers(host) == pooling, "a backend switch restarted embedding or reranker"
