"""The streamed-chunk fast path (rewrite.StreamRewriter) answers exactly what the full path
(parse, rename, normalize, dump) answers, and is taken for the common chunk."""

from __future__ import annotations

import json

import orjson
import pytest

from switchyard_gateway.metrics import Metrics, Usage
from switchyard_gateway.models import ModelRoute
from switchyard_gateway.rewrite import StreamRewriter

ROUTE = ModelRoute(public="qwen3-8b", upstream="tiny-llama")


def usage(metrics: Metrics | None = None) -> Usage:
    """Where a stream's usage is counted: under the public name and a key's name."""
    return Usage(metrics or Metrics(), ROUTE.public, "key-1")


def counted(metrics: Metrics, key: str = "key-1") -> tuple[float, float]:
    """(prompt, completion) tokens counted for `key` and the public model."""
    return tuple(metrics.tokens.labels(kind, ROUTE.public, key)._value.get() for kind in ("prompt", "completion"))


def chunk(
    delta: dict | None = None, finish: str | None = None, index: int = 0, extra_choices: tuple = (), **extra: object
) -> bytes:
    """A chat chunk as the backends write it: compact JSON, non-ASCII escaped."""
    choices = [{"index": index, "delta": delta or {}, "finish_reason": finish}, *extra_choices]
    return json.dumps(
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "tiny-llama", "choices": choices}
        | extra,
        separators=(",", ":"),
    ).encode()


def usage_chunk(prompt: int, completion: int) -> bytes:
    """The stream's usage chunk (OpenAI's include_usage): no choices, the totals."""
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "tiny-llama", "choices": []}
    return json.dumps(body | {"usage": usage}, separators=(",", ":")).encode()


class FullPathOnly(StreamRewriter):
    def _passes(self, data: bytes) -> bool:
        return False


STREAMS = {
    "plain answer": [
        chunk({"role": "assistant", "content": ""}),
        *(chunk({"content": word}) for word in ["Paris", " is", " the caf\u00e9", " capital"]),
        chunk({}, "stop"),
        usage_chunk(3, 4),
    ],
    "think tags in the content": [
        chunk({"role": "assistant", "content": "<think>"}),
        chunk({"content": "hmm"}),
        chunk({"content": "</thi"}),
        chunk({"content": "nk>\n\nParis"}),
        chunk({"content": " it is"}, "stop"),
    ],
    "reasoning fields (llama.cpp, vLLM)": [
        chunk({"role": "assistant", "reasoning_content": "hmm"}),
        chunk({"reasoning_content": " more"}),
        chunk({"content": "Paris"}),
        chunk({"content": " it is", "reasoning_content": None}),
        chunk({"content": ", yes", "reasoning": None}),
    ],
    "two choices": [
        chunk({"content": "Paris"}, index=0),
        chunk({"content": "<think>"}, index=1),
        chunk({"content": " is"}, index=0),
        chunk({"content": "x</think>y"}, index=1),
    ],
    "two choices in one chunk (n=2)": [
        chunk({"content": "Paris"}),
        chunk({"content": " is"}, extra_choices=[{"index": 1, "delta": {"content": "<think>x</think>y"}}]),
    ],
    "a tool call": [
        chunk({"content": "Calling"}),
        chunk({"tool_calls": [{"index": 0, "id": "t", "function": {"name": "f", "arguments": "{}"}}]}),
        chunk({"content": " done"}),
    ],
    "a model text that looks like JSON": [
        chunk({"content": "a"}),
        chunk({"content": '"index":1, "reasoning": "usage":{'}),
    ],
}


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("name", STREAMS)
def test_the_fast_path_answers_what_the_full_path_answers(name: str, chat: bool):
    fast, full = StreamRewriter(ROUTE, chat, usage()), FullPathOnly(ROUTE, chat, usage())
    for data in STREAMS[name]:
        assert orjson.loads(fast(data)) == orjson.loads(full(data)), data


def test_a_settled_answer_passes_as_bytes_with_the_public_name():
    rewriter = StreamRewriter(ROUTE, True, usage())
    first, settled = chunk({"content": "Paris"}), chunk({"content": " the caf\u00e9"})
    rewriter(first)
    assert rewriter(settled) == settled.replace(b'"model":"tiny-llama"', b'"model":"qwen3-8b"')
    assert b"\\u00e9" in rewriter(settled), "the upstream's own bytes, not parsed and dumped again"


def test_the_usage_chunk_is_counted_when_the_stream_ends():
    metrics = Metrics()
    rewriter = StreamRewriter(ROUTE, True, usage(metrics))
    for data in STREAMS["plain answer"]:
        rewriter(data)
    assert counted(metrics) == (0, 0)
    rewriter.finished()
    assert counted(metrics) == (3, 4)


# vLLM with continuous_usage_stats: running totals on every chunk, then the usage chunk.
CONTINUOUS = [
    chunk({"content": "Paris"}, usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}),
    chunk({"content": " is"}, usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
    chunk({}, "stop", usage={"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}),
    usage_chunk(3, 3),
]


def test_running_totals_are_passed_on_and_the_usage_chunk_counted_once():
    metrics = Metrics()
    rewriter = StreamRewriter(ROUTE, True, usage(metrics))
    out = [rewriter(data) for data in CONTINUOUS]
    rewriter.finished()
    assert counted(metrics) == (3, 3)
    assert [orjson.loads(data)["usage"]["completion_tokens"] for data in out] == [1, 2, 3, 3]


def test_a_usage_chunk_the_client_did_not_ask_for_is_counted_and_dropped():
    metrics = Metrics()
    rewriter = StreamRewriter(ROUTE, True, usage(metrics), hide_usage=True)
    out = [rewriter(data) for data in STREAMS["plain answer"]]
    rewriter.finished()
    assert counted(metrics) == (3, 4)
    assert out[-1] is None and None not in out[:-1]


def test_anthropic_and_responses_streams_count_their_last_figure_of_each_kind():
    """Anthropic: input tokens in message_start, running output tokens in message_delta; the
    Responses API: both in response.completed."""
    metrics = Metrics()
    messages = usage(metrics)
    for event in (
        {"type": "message_start", "message": {"model": "tiny-llama", "usage": {"input_tokens": 9, "output_tokens": 1}}},
        {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 12}},
    ):
        messages.saw_in(event)
    messages.count()
    assert counted(metrics) == (9, 12)
    responses = Usage(metrics, ROUTE.public, "batch")
    responses.saw_in({"type": "response.created", "response": {"usage": None}})
    responses.saw_in({"type": "response.completed", "response": {"usage": {"input_tokens": 5, "output_tokens": 7}}})
    responses.count()
    responses.count()  # once per answer, however often asked
    assert counted(metrics, "batch") == (5, 7)
