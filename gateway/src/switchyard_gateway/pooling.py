"""The embedding and rerank routes: one API whatever engine serves them (vLLM or Infinity).

Both engines serve /v1/embeddings (float and base64) and /v1/rerank with the Cohere/Jina body
{query, documents, top_n} and answer results[{index, relevance_score}]: those pass through as
they stream. Two shapes are made here, decided before anything is sent:
  - TEI's rerank body {query, texts}: sent on as {query, documents}, answered as TEI answers,
    a list of {index, score} (and "text" with return_text), best first;
  - /v1/score on Infinity, which has none: the pairs are reranked and answered as vLLM's
    /v1/score answers, data[{index, object: "score", score}] in the order of the pairs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .auth import require_key
from .body import read_json, upstream_headers
from .errors import GatewayError, upstream_error_response
from .upstream import open_stream, raw_response, read_body


def _texts(body: dict[str, Any], name: str) -> list[str]:
    """body[name] as a list of strings (a lone string is a list of one), or a 400 naming it."""
    value = body.get(name)
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(text, str) for text in texts):
        raise GatewayError(
            400, f"'{name}' must be a string or a non-empty list of strings.", "invalid_request", param=name
        )
    return texts


class PoolingCall:
    """One request to the embedding or reranker service: its key checked, its body read and
    its model resolved, in that order (begin)."""

    def __init__(self, request: Request, service: str, base_url: str, body: dict[str, Any]) -> None:
        self.request = request
        self.service = service
        self.base_url = base_url
        self.route = getattr(request.app.state.catalog, service)(body.get("model"))
        request.scope["state"]["model"] = self.route.public

    @classmethod
    async def begin(cls, request: Request, service: str) -> tuple[PoolingCall, dict[str, Any]]:
        require_key(request)
        base_url = getattr(request.app.state.settings, f"{service}_url")
        if not base_url:
            raise GatewayError(404, f"No {service} service is configured on this host.", f"{service}_not_configured")
        body = await read_json(request)
        return cls(request, service, base_url, body), body

    async def open(self, path: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        state = self.request.app.state
        payload = orjson.dumps(body | {"model": self.route.upstream})
        return await open_stream(
            state.client,
            self.service,
            self.base_url + path,
            payload,
            upstream_headers(self.request),
            state.settings,
            state.metrics,
        )

    async def passed_through(self, path: str, body: dict[str, Any]) -> Response:
        return raw_response(await self.open(path, body))

    async def rerank(self, query: str, documents: list[str]) -> tuple[int, dict[str, Any] | bytes]:
        """The service's rerank of `documents` for `query`: (200, its JSON) or (status, error body)."""
        upstream = await self.open("/v1/rerank", {"query": query, "documents": documents})
        state = self.request.app.state
        content = await read_body(upstream, self.service, state.settings, state.metrics)
        if upstream.status >= 400:
            return upstream.status, content
        return upstream.status, orjson.loads(content)


async def embeddings(request: Request) -> Response:
    call, body = await PoolingCall.begin(request, "embedding")
    return await call.passed_through("/v1/embeddings", body)


async def rerank(request: Request) -> Response:
    call, body = await PoolingCall.begin(request, "reranker")
    if "texts" not in body or "documents" in body:
        return await call.passed_through("/v1/rerank", body)
    # TEI's body and answer.
    if not isinstance(body.get("query"), str):
        raise GatewayError(400, "'query' must be a string.", "invalid_request", param="query")
    texts = _texts(body, "texts")
    status, answer = await call.rerank(body["query"], texts)
    if status >= 400:
        return upstream_error_response(status, answer)  # type: ignore[arg-type]
    ranked = [{"index": result["index"], "score": result["relevance_score"]} for result in answer["results"]]
    ranked.sort(key=lambda entry: entry["score"], reverse=True)
    if body.get("return_text") is True:
        for entry in ranked:
            entry["text"] = texts[entry["index"]]
    return Response(orjson.dumps(ranked), media_type="application/json")


def _score_pairs(body: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """vLLM's pairing: one text_1 against every text_2, or text_1 and text_2 lists of one
    length, pair by pair. Each pair list is one rerank: (query, documents)."""
    firsts, seconds = _texts(body, "text_1"), _texts(body, "text_2")
    if len(firsts) == 1:
        return [(firsts[0], seconds)]
    if len(firsts) == len(seconds):
        return [(first, [second]) for first, second in zip(firsts, seconds, strict=True)]
    raise GatewayError(
        400,
        f"'text_1' has {len(firsts)} texts and 'text_2' {len(seconds)}: give one text_1, or as many as text_2.",
        "invalid_request",
        param="text_1",
    )


async def score(request: Request) -> Response:
    call, body = await PoolingCall.begin(request, "reranker")
    if request.app.state.settings.pooling_engine == "vllm":
        return await call.passed_through("/v1/score", body)
    pairs = _score_pairs(body)
    answers = await asyncio.gather(*(call.rerank(query, documents) for query, documents in pairs))
    scores: list[float] = []
    tokens = 0
    for status, answer in answers:
        if status >= 400:
            return upstream_error_response(status, answer)  # type: ignore[arg-type]
        by_index = {result["index"]: result["relevance_score"] for result in answer["results"]}  # type: ignore[index]
        scores += [by_index[index] for index in range(len(by_index))]
        tokens += answer.get("usage", {}).get("total_tokens", 0)  # type: ignore[union-attr]
    return Response(
        orjson.dumps(
            {
                "id": f"score-{request.scope['state']['request_id']}",
                "object": "list",
                "created": int(time.time()),
                "model": call.route.public,
                "data": [{"index": index, "object": "score", "score": value} for index, value in enumerate(scores)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        ),
        media_type="application/json",
    )


routes = [
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/rerank", rerank, methods=["POST"]),
    Route("/rerank", rerank, methods=["POST"]),
    Route("/v1/score", score, methods=["POST"]),
]
