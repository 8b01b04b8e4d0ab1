"""What forwarding changes, API by API: OpenAI's chat and completions are read and rewritten
(reasoning, usage, the model name); the Responses API, Anthropic's Messages and the tokenizer
routes pass as the backend sends them, with the public model name in place of the backend's,
event by event and line by line, and fail the way their protocol does."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from starlette.responses import Response

from . import reasoning, rewrite
from .errors import upstream_error_body, upstream_error_response
from .keys import ApiKey
from .metrics import Metrics, Usage
from .models import ModelRoute
from .settings import Settings
from .upstream import ErrorEvent, error_event, relay_events, relay_lines


@dataclass(frozen=True)
class Api:
    # The request as the backend gets it (the model name is set already), from the caller's
    # key (None: auth off) and the settings.
    adapt: Callable[[dict[str, Any], ApiKey | None, Settings], None]
    # A whole answer, as the client gets it; its usage counted.
    answer: Callable[[bytes, ModelRoute, Usage], bytes]
    # A stream's events, as the client gets them: (upstream, route, the client's request,
    # its usage, metrics, keepalive_s).
    relay: Callable[[aiohttp.ClientResponse, ModelRoute, dict[str, Any], Usage, Metrics, float], AsyncIterator[bytes]]
    # How a stream whose status line has gone says that it failed.
    error_event: ErrorEvent
    # An upstream error body, as (message, code) for error_event.
    error_text: Callable[[int, bytes], tuple[str, str]]
    # An upstream error, as the client gets it: (status, body, content type, extra headers).
    error_response: Callable[[int, bytes, str, dict[str, str]], Response]


def _openai_error_text(status: int, content: bytes) -> tuple[str, str]:
    error = upstream_error_body(status, content)["error"]
    return str(error["message"]), str(error.get("code") or "upstream_error")


def _openai_error_response(status: int, content: bytes, _type: str, headers: dict[str, str]) -> Response:
    return upstream_error_response(status, content, headers)


def scheduled(body: dict[str, Any], key: ApiKey | None, settings: Settings) -> None:
    """vLLM's scheduling priority from the caller's key, where the operator gave keys one (vLLM
    then runs with --scheduling-policy priority): the client's own is replaced, so that no
    client moves itself up the queue; a key without one gets vLLM's default, 0."""
    if settings.backend == "vllm" and settings.key_priorities:
        body["priority"] = key.priority if key is not None and key.priority is not None else 0


def _openai(chat: bool) -> Api:
    def adapt(body: dict[str, Any], key: ApiKey | None, settings: Settings) -> None:
        if chat:
            reasoning.adapt_request(body, settings.thinking_switch)
        if body.get("stream") is True:
            # Every stream's usage, to count it (StreamRewriter drops it where unasked).
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        scheduled(body, key, settings)

    def answer(content: bytes, route: ModelRoute, usage: Usage) -> bytes:
        return rewrite.completion(content, route, chat, usage)

    def relay(
        upstream: aiohttp.ClientResponse,
        route: ModelRoute,
        asked: dict[str, Any],
        usage: Usage,
        metrics: Metrics,
        keepalive_s: float,
    ) -> AsyncIterator[bytes]:
        options = asked.get("stream_options")
        hide_usage = not (isinstance(options, dict) and options.get("include_usage") is True)
        rewriter = rewrite.StreamRewriter(route, chat, usage, hide_usage)
        return relay_events(upstream, "backend", rewriter, metrics, keepalive_s, rewriter.finished)

    return Api(adapt, answer, relay, error_event, _openai_error_text, _openai_error_response)


def _unchanged(_body: dict[str, Any], _key: ApiKey | None, _settings: Settings) -> None:
    return None


def renamer(route: ModelRoute) -> Callable[[bytes], bytes]:
    """Replaces the backend's model name with the public one wherever JSON names a model, in
    compact or spaced JSON. Inside a JSON string quotes are escaped: a model's text cannot
    fake the pattern."""
    if route.upstream == route.public:
        return lambda data: data
    upstream, public = orjson.dumps(route.upstream), orjson.dumps(route.public)
    pairs = [(b'"model":' + upstream, b'"model":' + public), (b'"model": ' + upstream, b'"model": ' + public)]

    def rename(data: bytes) -> bytes:
        for old, new in pairs:
            data = data.replace(old, new)
        return data

    return rename


def _passed_answer(content: bytes, route: ModelRoute, usage: Usage) -> bytes:
    if _USAGE in content:
        with contextlib.suppress(ValueError):
            usage.saw_in(orjson.loads(content))
        usage.count()
    return renamer(route)(content)


# Only the lines that hold usage are parsed, once per answer or two per stream.
_USAGE = b'"usage"'


def _passed_error_text(status: int, content: bytes) -> tuple[str, str]:
    """The message of an error body in any of the shapes backends use."""
    try:
        body = orjson.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace") or f"upstream answered {status}", "upstream_error"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or f"upstream answered {status}"), str(error.get("type") or "upstream_error")
    return str(error or f"upstream answered {status}"), "upstream_error"


def _passed_error_response(status: int, content: bytes, content_type: str, headers: dict[str, str]) -> Response:
    return Response(content, status_code=status, media_type=content_type or None, headers=headers)


def _passed(failure: ErrorEvent, adapt: Callable[[dict[str, Any], ApiKey | None, Settings], None]) -> Api:
    def relay(
        upstream: aiohttp.ClientResponse,
        route: ModelRoute,
        _asked: dict[str, Any],
        usage: Usage,
        metrics: Metrics,
        keepalive_s: float,
    ) -> AsyncIterator[bytes]:
        rename = renamer(route)

        def rewrite_line(line: bytes) -> bytes:
            if _USAGE in line and line.startswith(b"data:"):
                with contextlib.suppress(ValueError):
                    usage.saw_in(orjson.loads(line[5:]))
            return rename(line)

        return relay_lines(upstream, "backend", rewrite_line, failure, metrics, keepalive_s, usage.count)

    return Api(adapt, _passed_answer, relay, failure, _passed_error_text, _passed_error_response)


# Anthropic's error types by status (https://docs.anthropic.com/en/api/errors).
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                    413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error"}  # fmt: skip


def anthropic_error_event(status: int, message: str, _code: str) -> bytes:
    error = {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
    return b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"


def responses_error_event(_status: int, message: str, code: str) -> bytes:
    error = {"type": "error", "code": code, "message": message, "param": None}
    return b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"


CHAT = _openai(chat=True)
COMPLETIONS = _openai(chat=False)
RESPONSES = _passed(responses_error_event, scheduled)
MESSAGES = _passed(anthropic_error_event, _unchanged)
# /tokenize and /detokenize: never streamed.
TOKENIZER = _passed(error_event, _unchanged)
