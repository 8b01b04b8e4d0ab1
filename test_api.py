#!/usr/bin/env python3
"""Check a Switchyard host end to end and print pass/fail per check, with timings.

    python test_api.py                                   # backend :8000, embedding :8001, reranker :8002
    python test_api.py --host 10.0.0.5
    python test_api.py --gateway http://localhost:8080 --api-key KEY   # everything through the gateway
    API_KEY=KEY python test_api.py --gateway http://localhost:8080

The chat model is the first one /v1/models lists (as the original's test_api.py found it).
Exit code 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

CHECKS = ("models", "chat", "stream", "embedding", "rerank")


@dataclass
class Endpoints:
    backend: str
    embedding: str
    reranker: str


class CheckFailed(Exception):
    pass


def first_model(client: httpx.Client, base: str) -> str:
    response = client.get(f"{base}/v1/models")
    response.raise_for_status()
    models = response.json()["data"]
    if not models:
        raise CheckFailed(f"{base}/v1/models lists no model")
    return models[0]["id"]


def check_models(client: httpx.Client, urls: Endpoints, state: dict) -> str:
    state["model"] = first_model(client, urls.backend)
    return f"model {state['model']!r}"


def check_chat(client: httpx.Client, urls: Endpoints, state: dict) -> str:
    body = {"model": state["model"], "messages": [{"role": "user", "content": "2+2=?"}], "max_tokens": 64}
    response = client.post(f"{urls.backend}/v1/chat/completions", json=body)
    response.raise_for_status()
    reply = response.json()
    message = reply["choices"][0]["message"]
    reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
    if not (message.get("content") or reasoning):
        raise CheckFailed("the reply has neither content nor reasoning")
    tokens = reply.get("usage", {}).get("completion_tokens", "?")
    # content is null when the model spent every token thinking (raise max_tokens then).
    content = message.get("content") or ""
    return f"{tokens} tokens; content {content[:40]!r}; reasoning {len(reasoning)} chars"


def check_stream(client: httpx.Client, urls: Endpoints, state: dict) -> str:
    body = {"model": state["model"], "messages": [{"role": "user", "content": "Count to five."}], "max_tokens": 32}
    started, first, chunks, done = time.perf_counter(), None, 0, False
    with client.stream("POST", f"{urls.backend}/v1/chat/completions", json=body | {"stream": True}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            event = json.loads(line[6:])
            if "error" in event:
                raise CheckFailed(f"error event: {event['error']}")
            first = first or time.perf_counter()
            chunks += 1
    if not done:
        raise CheckFailed(f"the stream ended after {chunks} chunks without [DONE]")
    return f"{chunks} chunks, first after {(first - started) * 1000:.0f} ms" if first else "no chunk"


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def check_embedding(client: httpx.Client, urls: Endpoints, state: dict) -> str:
    model = state.get("embedding_model") or first_model(client, urls.embedding)
    response = client.post(
        f"{urls.embedding}/v1/embeddings", json={"model": model, "input": ["cat", "kitten", "truck"]}
    )
    response.raise_for_status()
    cat, kitten, truck = (item["embedding"] for item in response.json()["data"])
    near, far = cosine(cat, kitten), cosine(cat, truck)
    if near <= far:
        raise CheckFailed(f"cos(cat, kitten) {near:.2f} <= cos(cat, truck) {far:.2f}: the embeddings carry no meaning")
    return f"{len(cat)} dims; cos(cat, kitten) {near:.2f} > cos(cat, truck) {far:.2f}"


PARIS = 1  # the index of the one document that answers the rerank check's query


def check_rerank(client: httpx.Client, urls: Endpoints, state: dict) -> str:
    model = state.get("reranker_model") or first_model(client, urls.reranker)
    documents = ["A truck carries goods on the road.", "Paris is the capital of France.", "Cats sleep a lot."]
    body = {"model": model, "query": "What is the capital of France?", "documents": documents}
    response = client.post(f"{urls.reranker}/v1/rerank", json=body)
    response.raise_for_status()
    results = response.json()["results"]
    if sorted(result["index"] for result in results) != [0, 1, 2]:
        raise CheckFailed(f"expected a score for each of the 3 documents, got indexes {[r['index'] for r in results]}")
    top = max(results, key=lambda result: result["relevance_score"])
    if top["index"] != PARIS:
        raise CheckFailed(f"document #{top['index']} ({documents[top['index']]!r}) ranks above the answer about Paris")
    return f"top document #{top['index']} ({documents[top['index']][:32]!r}), score {top['relevance_score']:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="localhost", help="host of the services (ports 8000, 8001, 8002)")
    parser.add_argument("--gateway", help="gateway URL: every check goes through it")
    parser.add_argument("--api-key", default=os.environ.get("API_KEY", ""), help="gateway key (default: $API_KEY)")
    parser.add_argument("--skip", default="", help=f"comma-separated checks to skip: {', '.join(CHECKS)}")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per request")
    args = parser.parse_args()

    if args.gateway:
        base = args.gateway.rstrip("/")
        urls = Endpoints(base, base, base)
    else:
        urls = Endpoints(*(f"http://{args.host}:{port}" for port in (8000, 8001, 8002)))
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    skipped = {name.strip() for name in args.skip.split(",") if name.strip()}
    checks: dict[str, Callable[[httpx.Client, Endpoints, dict], str]] = {
        "models": check_models,
        "chat": check_chat,
        "stream": check_stream,
        "embedding": check_embedding,
        "rerank": check_rerank,
    }
    state: dict = {}
    failures = 0
    with httpx.Client(headers=headers, timeout=args.timeout) as client:
        if args.gateway:
            # The gateway's /config names its embedding and reranker models.
            models = client.get(f"{urls.backend}/config").json().get("models", {})
            state["embedding_model"], state["reranker_model"] = models.get("embedding"), models.get("reranker")
        for name, check in checks.items():
            if name in skipped:
                print(f"SKIP  {name}")
                continue
            started = time.perf_counter()
            try:
                detail = check(client, urls, state)
            except (httpx.HTTPError, CheckFailed, KeyError, ValueError) as error:
                failures += 1
                detail = _describe(error)
                outcome = "FAIL"
            else:
                outcome = "PASS"
            print(f"{outcome}  {name:<10} {(time.perf_counter() - started) * 1000:8.0f} ms  {detail}")
            if name == "models" and outcome == "FAIL":
                print("      (no model to test with: the other checks would fail too)")
                return 1
    print(f"\n{len(checks) - len(skipped) - failures} passed, {failures} failed, {len(skipped)} skipped")
    return 1 if failures else 0


def _describe(error: Exception) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code} from {error.request.url}: {error.response.text[:200]}"
    return f"{type(error).__name__}: {error}"


if __name__ == "__main__":
    sys.exit(main())
