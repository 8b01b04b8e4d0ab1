"""Embedding (:8001) and reranker (:8002) on the CPU pooling engine (Infinity, picked by
llm_pooling_engine auto on a host without a GPU), with the real all-MiniLM-L6-v2 and the
small cross-encoder scripts/sandbox/make_tiny_reranker.py makes: the same API as on vLLM,
directly and through the gateway, which also takes TEI's rerank body and answers /v1/score."""

import base64
import json
import math
import struct

import httpx
import pytest

from conftest import GATEWAY_KEY, GATEWAY_URL, TEST_API_TARGETS, assert_test_api_passes

EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
RERANKER_MODEL = "switchyard/tiny-reranker"
QUERY = "What is the capital of France?"
DOCUMENTS = ["A truck carries goods on the road.", "Paris is the capital of France.", "Cats sleep a lot."]
PARIS = 1
HEADERS = {"Authorization": f"Bearer {GATEWAY_KEY}"}
# Directly on the service, and through the gateway with its key.
TARGETS = {"direct": ("http://127.0.0.1:{port}", {}), "gateway": (GATEWAY_URL, HEADERS)}


def post(target: str, port: int, path: str, body: dict) -> httpx.Response:
    base, headers = TARGETS[target]
    return httpx.post(base.format(port=port) + path, json=body, headers=headers, timeout=60)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.mark.parametrize("unit", ["llm-embedding", "llm-reranker"])
def test_the_pooling_units_run_infinity_from_the_same_template(host, unit):
    assert host.service(unit).is_enabled and host.service(unit).is_running
    text = host.file(f"/etc/systemd/system/{unit}.service").content_string
    assert "localhost/switchyard/infinity-cpu:local" in text
    assert "ExecStartPost=/usr/local/libexec/switchyard/ready" in text
    kind = unit.removeprefix("llm-")
    journal = host.check_output(f"journalctl --unit {unit} --no-pager --output cat")
    assert f"{kind} service serving" in journal, "started means the readiness probe saw it serve"


@pytest.mark.parametrize("target", TARGETS)
def test_embeddings_carry_meaning(target):
    response = post(target, 8001, "/v1/embeddings", {"model": EMBEDDING_MODEL, "input": ["cat", "kitten", "truck"]})
    assert response.status_code == 200, response.text
    cat, kitten, truck = (item["embedding"] for item in response.json()["data"])
    assert len(cat) == 384
    assert cosine(cat, kitten) > cosine(cat, truck)


def test_base64_embeddings_are_the_float_ones_packed():
    """encoding_format base64: little-endian float32, as OpenAI's SDK decodes it."""
    body = {"model": EMBEDDING_MODEL, "input": ["a kitten"]}
    floats = post("gateway", 8001, "/v1/embeddings", body).json()["data"][0]["embedding"]
    packed = post("gateway", 8001, "/v1/embeddings", body | {"encoding_format": "base64"})
    assert packed.status_code == 200, packed.text
    raw = base64.b64decode(packed.json()["data"][0]["embedding"])
    unpacked = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(unpacked) == len(floats) == 384
    assert max(abs(a - b) for a, b in zip(unpacked, floats, strict=True)) < 1e-6


@pytest.mark.parametrize(
    ("target", "path"), [("direct", "/v1/rerank"), ("gateway", "/v1/rerank"), ("gateway", "/rerank")]
)
def test_rerank_puts_the_relevant_document_first(target, path):
    body = {"model": RERANKER_MODEL, "query": QUERY, "documents": DOCUMENTS, "top_n": 2}
    response = post(target, 8002, path, body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2
    scores = [result["relevance_score"] for result in results]
    assert results[0]["index"] == PARIS and scores == sorted(scores, reverse=True)


def test_the_gateway_takes_teis_rerank_body_and_answers_as_tei():
    body = {"query": QUERY, "texts": DOCUMENTS, "return_text": True}
    response = post("gateway", 8002, "/rerank", body)
    assert response.status_code == 200, response.text
    ranked = response.json()
    assert ranked[0]["index"] == PARIS and len(ranked) == 3
    assert [entry["score"] for entry in ranked] == sorted((entry["score"] for entry in ranked), reverse=True)
    assert {entry["index"]: entry["text"] for entry in ranked} == dict(enumerate(DOCUMENTS))


def test_score_answers_each_pair_in_order_as_vllm_does():
    one_to_many = post("gateway", 8002, "/v1/score", {"model": RERANKER_MODEL, "text_1": QUERY, "text_2": DOCUMENTS})
    assert one_to_many.status_code == 200, one_to_many.text
    data = one_to_many.json()["data"]
    assert [item["index"] for item in data] == [0, 1, 2]
    assert {item["object"] for item in data} == {"score"}
    scores = [item["score"] for item in data]
    assert scores.index(max(scores)) == PARIS
    # Pair by pair: the same pairs in another order give the same scores in that order.
    pairs = {"text_1": [QUERY] * 3, "text_2": DOCUMENTS[::-1]}
    pairwise = [item["score"] for item in post("gateway", 8002, "/v1/score", pairs).json()["data"]]
    assert pairwise == pytest.approx(scores[::-1], abs=1e-4)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/score", {"text_1": ["a", "b"], "text_2": ["a", "b", "c"]}, "text_1"),
        ("/rerank", {"query": QUERY, "texts": []}, "texts"),
        ("/rerank", {"query": 7, "texts": DOCUMENTS}, "query"),
    ],
)
def test_a_malformed_body_is_refused_naming_the_field(path, body, param):
    response = post("gateway", 8002, path, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_config_names_the_engine():
    config = httpx.get(GATEWAY_URL + "/config", headers=HEADERS, timeout=30).json()
    assert config["pooling_engine"] == "infinity"
    assert (config["models"]["embedding"], config["models"]["reranker"]) == (EMBEDDING_MODEL, RERANKER_MODEL)


def test_deep_health_sees_all_three_services():
    deep = httpx.get(GATEWAY_URL + "/health/deep", headers=HEADERS, timeout=30).json()
    assert {name: service["status"] for name, service in deep["services"].items()} == {
        "backend": "ok",
        "embedding": "ok",
        "reranker": "ok",
    }


@pytest.mark.parametrize("target", TEST_API_TARGETS.values(), ids=TEST_API_TARGETS)
def test_test_api_passes_every_check(target):
    assert_test_api_passes(target)


def test_infinity_is_told_to_report_nothing_and_stay_offline(host):
    for unit in ("llm-embedding", "llm-reranker"):
        env = json.loads(host.check_output(f"podman inspect --format '{{{{json .Config.Env}}}}' {unit}"))
        assert {"DO_NOT_TRACK=1", "INFINITY_ANONYMOUS_USAGE_STATS=0", "HF_HUB_OFFLINE=1"} <= set(env), unit
