"""The OpenAI routes: generation to the active backend, embeddings and rerank to their services."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from . import reasoning
from .auth import require_key
from .errors import GatewayError, upstream_error_response
from .metrics import Metrics
from .models import ModelRoute
from .upstream import UpstreamStreamingResponse, open_stream, raw_response, read_body, relay_events

router = APIRouter(dependencies=[Depends(require_key)])

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, refused early when it is over the size limit."""
    limit = request.app.state.settings.max_body_bytes
    too_large = GatewayError(413, f"Request body is larger than {limit} bytes.", "request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        parsed = json.loads(body)
    except ValueError as error:
        raise GatewayError(400, f"Request body is not valid JSON: {error}.", "invalid_json") from None
    if not isinstance(parsed, dict):
        raise GatewayError(400, "Request body must be a JSON object.", "invalid_json")
    return parsed


def _upstream_headers(request: Request) -> dict[str, str]:
    # The client's API key stays here: upstreams get the request id only.
    return {"content-type": "application/json", "x-request-id": request.state.request_id}


def _rewrite(data: str | bytes, route: ModelRoute, edit: Callable[[dict[str, Any]], None], metrics: Metrics) -> str:
    """A JSON object from the backend, under the public model name and edited; anything else
    is passed on as it came."""
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return data if isinstance(data, str) else data.decode("utf-8", "replace")
    if "model" in body:
        body["model"] = route.public
    edit(body)
    metrics.count_usage(body.get("usage"))
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _stream_edit(normalizer: reasoning.StreamNormalizer | None) -> Callable[[dict[str, Any]], None]:
    def edit(chunk: dict[str, Any]) -> None:
        if normalizer is not None:
            for choice in chunk.get("choices") or ():
                normalizer.delta(choice)

    return edit


def _completion_edit(chat: bool) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        if chat:
            for choice in body.get("choices") or ():
                if isinstance(choice.get("message"), dict):
                    reasoning.normalize_message(choice["message"])

    return edit


async def _generate(request: Request, path: str, chat: bool) -> Response:
    state = request.app.state
    settings, metrics = state.settings, state.metrics
    body = await read_json(request)
    route = state.catalog.chat(body.get("model"))
    request.state.model = route.public
    body["model"] = route.upstream
    if chat:
        reasoning.adapt_request(body, settings.thinking_switch)
    payload = json.dumps(body, ensure_ascii=False).encode()
    upstream = await open_stream(
        state.client, "backend", settings.backend_url + path, payload, _upstream_headers(request), settings, metrics
    )
    if upstream.status_code >= 400:
        return upstream_error_response(upstream.status_code, await read_body(upstream, "backend", settings, metrics))
    if body.get("stream") is True:
        normalizer = reasoning.StreamNormalizer() if chat else None
        rewrite = partial(_rewrite, route=route, edit=_stream_edit(normalizer), metrics=metrics)
        events = relay_events(upstream, "backend", rewrite, metrics)
        return UpstreamStreamingResponse(upstream, events, media_type="text/event-stream", headers=_SSE_HEADERS)
    content = await read_body(upstream, "backend", settings, metrics)
    return Response(_rewrite(content, route, _completion_edit(chat), metrics), media_type="application/json")


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _generate(request, "/v1/chat/completions", chat=True)


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await _generate(request, "/v1/completions", chat=False)


async def _pooling(request: Request, service: str, path: str) -> Response:
    state = request.app.state
    settings = state.settings
    base_url = getattr(settings, f"{service}_url")
    if not base_url:
        raise GatewayError(404, f"No {service} service is configured on this host.", f"{service}_not_configured")
    body = await read_json(request)
    route = getattr(state.catalog, service)(body.get("model"))
    request.state.model = route.public
    body["model"] = route.upstream
    payload = json.dumps(body, ensure_ascii=False).encode()
    upstream = await open_stream(
        state.client, service, base_url + path, payload, _upstream_headers(request), settings, state.metrics
    )
    return raw_response(upstream)


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    return await _pooling(request, "embedding", "/v1/embeddings")


@router.post("/v1/rerank")
@router.post("/rerank")
async def rerank(request: Request) -> Response:
    return await _pooling(request, "reranker", "/v1/rerank")


@router.post("/v1/score")
async def score(request: Request) -> Response:
    return await _pooling(request, "reranker", "/v1/score")
