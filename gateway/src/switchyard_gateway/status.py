"""What the gateway knows about itself and its upstreams: health, deep health, models, config."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from . import __version__, hold
from .auth import require_key, require_key_for_status
from .metrics import CONTENT_TYPE
from .settings import Settings

health_router = APIRouter()
status_router = APIRouter(dependencies=[Depends(require_key_for_status)])
api_router = APIRouter(dependencies=[Depends(require_key)])


def upstreams(settings: Settings) -> dict[str, tuple[str, str]]:
    """Each configured upstream: (base URL, the model it must serve; "" for any)."""
    found = {"backend": (settings.backend_url, settings.backend_model)}
    if settings.embedding_url:
        found["embedding"] = (settings.embedding_url, settings.embedding_model)
    if settings.reranker_url:
        found["reranker"] = (settings.reranker_url, settings.reranker_model)
    return found


async def probe(client: httpx.AsyncClient, base: str, model: str, timeout: float) -> dict[str, Any]:
    """Whether an upstream serves: its /v1/models answers and lists the model it should serve
    (a server that is up with another model, or none loaded yet, is not serving)."""
    started = time.perf_counter()
    try:
        response = await client.get(base + "/v1/models", timeout=timeout)
        served = [entry.get("id") for entry in response.json().get("data", [])] if response.status_code == 200 else []
    except httpx.HTTPError as error:
        outcome: dict[str, Any] = {"status": "down", "error": type(error).__name__}
    except (ValueError, AttributeError, TypeError):
        outcome = {"status": "unhealthy", "error": "/v1/models is not an OpenAI model list"}
    else:
        if response.status_code != 200:
            outcome = {"status": "unhealthy", "http_status": response.status_code}
        elif model and model not in served:
            outcome = {"status": "unhealthy", "error": f"serves {served}, not {model!r}"}
        else:
            outcome = {"status": "ok"}
    outcome["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return outcome


@health_router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """Up, or switching: then also the target and how many forwarded requests are still
    running (the llm role waits for none before it stops the backend)."""
    state = request.app.state
    target = hold.switching_to(state.settings)
    if target is None:
        return {"status": "ok"}
    return {"status": "switching", "to": target, "forwarding": state.switch.forwarding}


def gpu_status(path: str) -> dict[str, Any]:
    """What the host's GPU conformance check (switchyard-gpu-check.timer) found last: its
    status, when, the driver's version and each problem with its fix."""
    try:
        found = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {"status": "unknown", "error": f"{path} is missing: the GPU check has not run yet"}
    except (OSError, ValueError) as error:
        return {"status": "unknown", "error": f"{path} cannot be read: {error}"}
    if not isinstance(found, dict):
        return {"status": "unknown", "error": f"{path} is not a GPU check status"}
    return {key: found.get(key) for key in ("status", "checked_at", "driver_version", "problems")}


@status_router.get("/health/deep")
async def health_deep(request: Request) -> JSONResponse:
    """Every upstream probed at once; 503 when the backend is not serving, since then no
    generation can succeed. A down embedding or reranker, or a GPU check that fails, makes
    the answer `degraded`."""
    state = request.app.state
    settings = state.settings
    targets = upstreams(settings)
    results = await asyncio.gather(
        *(probe(state.client, base, model, settings.health_timeout) for base, model in targets.values())
    )
    services = dict(zip(targets, results, strict=True))
    body: dict[str, Any] = {"backend": settings.backend, "services": services}
    if settings.gpu_status_file:
        body["gpu"] = gpu_status(settings.gpu_status_file)
    parts = [*services.values(), *([body["gpu"]] if "gpu" in body else [])]
    if services["backend"]["status"] != "ok":
        overall, status_code = "down", 503
    elif any(part["status"] != "ok" for part in parts):
        overall, status_code = "degraded", 200
    else:
        overall, status_code = "ok", 200
    headers = {"Retry-After": str(settings.retry_after)} if status_code == 503 else None
    return JSONResponse({"status": overall, **body}, status_code, headers=headers)


@status_router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)


@api_router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    created = request.app.state.started
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "switchyard"}
            for name in request.app.state.catalog.public_names
        ],
    }


async def backend_version(client: httpx.AsyncClient, settings: Settings) -> str | None:
    try:
        response = await client.get(
            settings.backend_url + settings.backend_version_path, timeout=settings.health_timeout
        )
        return str(response.json()[settings.backend_version_field])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


@status_router.get("/config")
async def config(request: Request) -> dict[str, Any]:
    """The active set-up; keys are never part of it (only whether auth is on)."""
    settings: Settings = request.app.state.settings
    return {
        "backend": settings.backend,
        "models": {
            "chat": settings.model,
            "backend_name": settings.backend_model,
            "aliases": list(settings.model_aliases),
            "embedding": settings.embedding_model or None,
            "reranker": settings.reranker_model or None,
        },
        "upstreams": {name: base for name, (base, _model) in upstreams(settings).items()},
        "versions": {"gateway": __version__, "backend": await backend_version(request.app.state.client, settings)},
        "auth": {
            "enabled": settings.auth,
            "keys": len(settings.api_keys),
            "status_requires_key": settings.status_requires_key,
        },
        "limits": {
            "max_body_bytes": settings.max_body_bytes,
            "connect_timeout_s": settings.connect_timeout,
            "read_timeout_s": settings.read_timeout,
        },
    }
