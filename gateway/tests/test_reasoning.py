import pytest

from switchyard_gateway.reasoning import StreamNormalizer, adapt_request, normalize_message, split_think_tags


@pytest.mark.parametrize("switch", [{"enable_thinking": False}, {"think": False}, {"reasoning_effort": "none"},
                                    {"chat_template_kwargs": {"enable_thinking": False}}])  # fmt: skip
@pytest.mark.parametrize(
    ("thinking_switch", "expected"),
    [
        ("chat_template_kwargs", {"chat_template_kwargs": {"enable_thinking": False}}),  # vLLM, llama.cpp
        ("reasoning_effort", {"reasoning_effort": "none"}),  # Ollama
    ],
)
def test_one_switch_turns_thinking_off_in_each_backends_own_way(switch: dict, thinking_switch: str, expected: dict):
    body = {"model": "m", **switch}
    adapt_request(body, thinking_switch)
    assert body == {"model": "m", **expected}


def test_other_template_kwargs_are_kept():
    body = {"enable_thinking": False, "chat_template_kwargs": {"tools_in_system": True}}
    adapt_request(body, "chat_template_kwargs")
    assert body["chat_template_kwargs"] == {"tools_in_system": True, "enable_thinking": False}


def test_requests_without_the_switch_are_left_alone():
    body = {"model": "m", "messages": [], "reasoning_effort": "high"}
    adapt_request(body, "reasoning_effort")
    assert body == {"model": "m", "messages": [], "reasoning_effort": "high"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("<think>\nweigh it\n</think>\n\nParis", ("weigh it", "Paris")),
        ("weigh it</think>Paris", ("weigh it", "Paris")),  # <think> opened by the template
        ("<think>still thinking when cut", ("still thinking when cut", "")),
        ("Paris", (None, "Paris")),
    ],
)
def test_think_tags_are_split(content: str, expected: tuple):
    assert split_think_tags(content) == expected


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_a_message_carries_reasoning_under_both_names(field: str):
    message = {"role": "assistant", "content": "Paris", field: "weigh it"}
    normalize_message(message)
    assert (message["reasoning_content"], message["reasoning"], message["content"]) == ("weigh it", "weigh it", "Paris")


def _stream(pieces: list[str], finish_last: bool = True) -> tuple[str, str]:
    normalizer = StreamNormalizer()
    reasoning = content = ""
    for number, piece in enumerate(pieces):
        choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
        if finish_last and number == len(pieces) - 1:
            choice["finish_reason"] = "stop"
        normalizer.delta(choice)
        delta = choice["delta"]
        assert delta.get("reasoning") == delta.get("reasoning_content")
        reasoning += delta.get("reasoning_content") or ""
        content += delta["content"]
    return reasoning, content


@pytest.mark.parametrize(
    "pieces",
    [
        ["<think>", "weigh", " it", "</think>", "\n\nPar", "is"],
        ["<th", "ink>weigh it</th", "ink>Paris"],  # tags cut across chunks
        ["<think>weigh it</think>Paris"],
        ["  <", "think>weigh it<", "/think>", "Paris"],
    ],
)
def test_streamed_think_tags_are_split_across_chunks(pieces: list[str]):
    assert _stream(pieces) == ("weigh it", "Paris")


def test_a_stream_without_tags_passes_content_through_unchanged():
    assert _stream(["Par", "is", " <b>"]) == ("", "Paris <b>")


def test_streamed_reasoning_fields_are_mirrored():
    normalizer = StreamNormalizer()
    choice = {"index": 0, "delta": {"reasoning": "weigh"}}
    normalizer.delta(choice)
    assert choice["delta"] == {"reasoning": "weigh", "reasoning_content": "weigh"}
