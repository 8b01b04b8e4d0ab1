"""What the gateway knows about itself and its upstreams: health, deep health, models, config."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import __version__, hold
from .auth import require_key, require_key_for_status
from .metrics import CONTENT_TYPE
from .settings import Settings


def upstreams(settings: Settings) -> dict[str, tuple[str, str]]:
    """Each configured upstream: (base URL, the model it must serve; "" for any)."""
    found = {"backend": (settings.backend_url, settings.backend_model)}
    if settings.embedding_url:
        found["embedding"] = (settings.embedding_url, settings.embedding_model)
    if settings.reranker_url:
        found["reranker"] = (settings.reranker_url, settings.reranker_model)
    return found


async def _get_json(client: aiohttp.ClientSession, url: str, timeout: float) -> tuple[int, Any]:
    """(status, parsed JSON body or None)."""
    async with client.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
        content = await response.read()
        try:
            return response.status, json.loads(content)
        except ValueError:
            return response.status, None


async def probe(client: aiohttp.ClientSession, base: str, model: str, timeout: float) -> dict[str, Any]:
    """Whether an upstream serves: its /v1/models answers and lists the model it should serve
    (a server that is up with another model, or none loaded yet, is not serving)."""
    started = time.perf_counter()
    try:
        status, body = await _get_json(client, base + "/v1/models", timeout)
        served = [entry.get("id") for entry in body.get("data", [])] if status == 200 else []
    except (aiohttp.ClientError, TimeoutError) as error:
        outcome: dict[str, Any] = {"status": "down", "error": type(error).__name__}
    except (AttributeError, TypeError):
        outcome = {"status": "unhealthy", "error": "/v1/models is not an OpenAI model list"}
    else:
        if status != 200:
            outcome = {"status": "unhealthy", "http_status": status}
        elif model and model not in served:
            outcome = {"status": "unhealthy", "error": f"serves {served}, not {model!r}"}
        else:
            outcome = {"status": "ok"}
    outcome["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return outcome


async def health(request: Request) -> JSONResponse:
    """The gateway answers: open to anyone, so it says nothing more (a switch in progress
    and what it waits for are /switch's, behind a key)."""
    return JSONResponse({"status": "ok"})


async def switch(request: Request) -> JSONResponse:
    """The backend a switch in progress goes to (null when there is none), how many forwarded
    requests are still running, and the backend routed to now: the llm role waits for no
    request forwarded before it stops the backend, and for the new one routed to before it
    lets the held requests go."""
    require_key_for_status(request)
    state = request.app.state
    return JSONResponse(
        {
            "to": hold.switching_to(state.settings),
            "forwarding": state.metrics.forwarding_now(),
            "backend": state.settings.backend,
        }
    )


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


def stalled(state: Any, backend: dict[str, Any]) -> dict[str, Any]:
    """The backend's probe, `stalled` when it lists its model but has kept a generation waiting
    stall_timeout_s while sending nothing to anyone (read from the requests the gateway
    forwards: a check never generates)."""
    stalled_s = state.metrics.backend_stalled_for()
    if backend["status"] != "ok" or stalled_s < state.settings.stall_timeout_s:
        return backend
    waited = f"a generation has waited {stalled_s:.0f} s for the backend, which has sent nothing meanwhile"
    return {**backend, "status": "stalled", "error": waited}


async def ready(request: Request) -> JSONResponse:
    """Whether a generation can succeed here now: the backend lists its model and is not
    stalled. Open to anyone, so that a router's health checks carry no key, and so it says
    only `ok` or `unavailable` (503), as /health says only `ok`."""
    state = request.app.state
    settings = state.settings
    backend = stalled(
        state, await probe(state.client, settings.backend_url, settings.backend_model, settings.health_timeout)
    )
    if backend["status"] == "ok":
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "unavailable"}, 503, headers={"Retry-After": str(settings.retry_after)})


async def health_deep(request: Request) -> JSONResponse:
    """Every upstream probed at once; 503 when the backend is not serving, since then no
    generation can succeed: down, not listing its model, or stalled. A down embedding or
    reranker, or a GPU check that fails, makes the answer `degraded`."""
    require_key_for_status(request)
    state = request.app.state
    settings = state.settings
    targets = upstreams(settings)
    results = await asyncio.gather(
        *(probe(state.client, base, model, settings.health_timeout) for base, model in targets.values())
    )
    services = dict(zip(targets, results, strict=True))
    services["backend"] = stalled(state, services["backend"])
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


async def metrics(request: Request) -> Response:
    require_key_for_status(request)
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)


async def list_models(request: Request) -> JSONResponse:
    require_key(request)
    created = request.app.state.started
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "switchyard"}
                for name in request.app.state.catalog.public_names
            ],
        }
    )


async def retrieve_model(request: Request) -> JSONResponse:
    """One model of /v1/models by its public name (or any name the catalog knows it by)."""
    require_key(request)
    catalog = request.app.state.catalog
    name = request.path_params["model"]
    route = catalog.find(name)
    model = {"id": route.public, "object": "model", "created": request.app.state.started, "owned_by": "switchyard"}
    return JSONResponse(model)


async def backend_version(client: aiohttp.ClientSession, settings: Settings) -> str | None:
    try:
        _status, body = await _get_json(
            client, settings.backend_url + settings.backend_version_path, settings.health_timeout
        )
        return str(body[settings.backend_version_field])
    except (aiohttp.ClientError, TimeoutError, KeyError, TypeError):
        return None


async def config(request: Request) -> JSONResponse:
    """The active set-up; keys are never part of it (their names and limits are)."""
    require_key_for_status(request)
    settings: Settings = request.app.state.settings
    return JSONResponse(
        {
            "backend": settings.backend,
            "models": {
                "chat": settings.model,
                "backend_name": settings.backend_model,
                "aliases": list(settings.model_aliases),
                "embedding": settings.embedding_model or None,
                "reranker": settings.reranker_model or None,
            },
            "pooling_engine": settings.pooling_engine if settings.embedding_url or settings.reranker_url else None,
            "upstreams": {name: base for name, (base, _model) in upstreams(settings).items()},
            "versions": {"gateway": __version__, "backend": await backend_version(request.app.state.client, settings)},
            "auth": {
                "enabled": settings.auth,
                # Names and limits only: never a key.
                "keys": [
                    {"name": key.name, "max_in_flight": key.max_in_flight or None, "priority": key.priority}
                    for key in settings.api_keys
                ],
                "status_requires_key": settings.status_requires_key,
            },
            "workers": settings.workers,
            "limits": {
                "max_body_bytes": settings.max_body_bytes,
                "connect_timeout_s": settings.connect_timeout,
                "read_timeout_s": settings.read_timeout,
            },
        }
    )


# For the operator's monitors; API keys' limits of requests in flight do not count them.
status_routes = [
    Route("/health", health, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
    Route("/health/deep", health_deep, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/config", config, methods=["GET"]),
    Route("/switch", switch, methods=["GET"]),
]
routes = [
    *status_routes,
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
]
