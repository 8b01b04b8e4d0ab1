"""Qwen3 reasoning, the same on every backend.

Responses: the thinking is in `reasoning_content` and `reasoning` (both, same text), the answer
in `content` -- whether the backend separated them itself (vLLM's `reasoning`, llama.cpp's
`reasoning_content`, Ollama's `reasoning`) or left `<think>...</think>` in the text.

Requests: one switch, `"enable_thinking": false`, turns thinking off in each backend's own way.
The same switch is understood when a client sends it as vLLM's
`chat_template_kwargs.enable_thinking`, Ollama's `think` or `reasoning_effort: "none"`.
"""

from __future__ import annotations

from typing import Any

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


def thinking_requested(body: dict[str, Any]) -> bool | None:
    """The client's switch, from whichever spelling it used; None when it said nothing."""
    if isinstance(body.get("enable_thinking"), bool):
        return body["enable_thinking"]
    kwargs = body.get("chat_template_kwargs")
    if isinstance(kwargs, dict) and isinstance(kwargs.get("enable_thinking"), bool):
        return kwargs["enable_thinking"]
    if isinstance(body.get("think"), bool):
        return body["think"]
    if body.get("reasoning_effort") == "none":
        return False
    return None


def adapt_request(body: dict[str, Any], thinking_switch: str) -> None:
    """Rewrite the thinking switch in place the way the active backend takes it
    (settings.THINKING_SWITCHES)."""
    thinking = thinking_requested(body)
    body.pop("enable_thinking", None)
    if thinking is None:
        return
    body.pop("think", None)
    if thinking_switch == "reasoning_effort":
        # Ollama's OpenAI endpoint turns thinking off only through reasoning_effort "none".
        body.pop("chat_template_kwargs", None)
        if thinking:
            body.pop("reasoning_effort", None)
        else:
            body["reasoning_effort"] = "none"
        return
    # vLLM and llama-server pass chat_template_kwargs to Qwen3's template.
    if body.get("reasoning_effort") == "none":
        del body["reasoning_effort"]
    kwargs = body.get("chat_template_kwargs")
    body["chat_template_kwargs"] = {**(kwargs if isinstance(kwargs, dict) else {}), "enable_thinking": thinking}


def split_think_tags(content: str) -> tuple[str | None, str]:
    """(reasoning, answer) from text that may hold `<think>...</think>`.

    Qwen3's template may open the block in the prompt, so a lone `</think>` also ends one.
    """
    if CLOSE_TAG not in content:
        if content.lstrip().startswith(OPEN_TAG):  # cut off while still thinking
            return content.lstrip()[len(OPEN_TAG) :].strip(), ""
        return None, content
    thinking, _, answer = content.partition(CLOSE_TAG)
    thinking = thinking.lstrip()
    if thinking.startswith(OPEN_TAG):
        thinking = thinking[len(OPEN_TAG) :]
    return thinking.strip(), answer.lstrip()


def _set_reasoning(target: dict[str, Any], reasoning: str | None) -> None:
    target["reasoning_content"] = reasoning
    target["reasoning"] = reasoning


def normalize_message(message: dict[str, Any]) -> None:
    """A non-streamed `choices[].message`, in place."""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    content = message.get("content")
    if not reasoning and isinstance(content, str):
        reasoning, message["content"] = split_think_tags(content)
    _set_reasoning(message, reasoning or None)


class ThinkTagSplitter:
    """Splits streamed content that carries `<think>` tags, one instance per choice.

    Text is passed on as soon as it cannot be part of a tag; only a possible partial tag
    (at most 7 characters) waits for the next chunk.
    """

    def __init__(self) -> None:
        self.state = "start"  # start -> thinking -> after_think -> answer, or start -> answer
        self.pending = ""

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning, content) to send now for this piece of content."""
        self.pending += text
        reasoning = content = ""
        if self.state == "start":
            stripped = self.pending.lstrip()
            if OPEN_TAG.startswith(stripped):
                return "", ""  # empty so far, or a partial "<think"
            if stripped.startswith(OPEN_TAG):
                self.state, self.pending = "thinking", stripped[len(OPEN_TAG) :].lstrip()
            else:
                self.state = "answer"
        if self.state == "thinking":
            before, found, after = self.pending.partition(CLOSE_TAG)
            if not found:
                cut = len(self.pending) - _partial_tag_length(self.pending, CLOSE_TAG)
                reasoning, self.pending = self.pending[:cut], self.pending[cut:]
                return reasoning, ""
            reasoning, self.state, self.pending = before, "after_think", after
        if self.state == "after_think":
            # The blank lines between </think> and the answer belong to neither.
            self.pending = self.pending.lstrip()
            if not self.pending:
                return reasoning, ""
            self.state = "answer"
        content, self.pending = self.pending, ""
        return reasoning, content

    def settled(self) -> bool:
        return self.state == "answer" and not self.pending

    def flush(self) -> tuple[str, str]:
        pending, self.pending = self.pending, ""
        return (pending, "") if self.state == "thinking" else ("", pending)


def _partial_tag_length(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a start of `tag`."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0


class StreamNormalizer:
    """Normalizes the `choices[].delta` of streamed chunks, keeping per-choice state."""

    def __init__(self) -> None:
        self._splitters: dict[int, ThinkTagSplitter] = {}

    def settled(self) -> bool:
        """Whether the one choice so far is in its answer with nothing held back: from then on
        a chunk without reasoning fields passes unchanged."""
        splitter = self._splitters.get(0)
        return len(self._splitters) == 1 and splitter is not None and splitter.settled()

    def delta(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            _set_reasoning(delta, reasoning)
            return
        splitter = self._splitters.setdefault(choice.get("index", 0), ThinkTagSplitter())
        content = delta.get("content")
        thought, answer = splitter.feed(content) if isinstance(content, str) else ("", "")
        if choice.get("finish_reason"):
            rest_thought, rest_answer = splitter.flush()
            thought, answer = thought + rest_thought, answer + rest_answer
        if isinstance(content, str) or thought or answer:
            delta["content"] = answer
        if thought:
            _set_reasoning(delta, thought)
        else:
            delta.pop("reasoning_content", None)
            delta.pop("reasoning", None)
