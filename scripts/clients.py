"""Clients that drive the service and record what each request got: the Molecule tests'
traffic through a switch, and the benchmarks'. A request counts as ok when it answers 200 and,
streamed, ends in [DONE] with no error event.

Two kinds: plain HTTP clients that never retry (what a gateway's hold must carry with no help),
and clients of the official SDKs (`openai`, `anthropic`) with their own retries, the way
applications call the service: what the SDK retries before an answer begins is its business; an
answer cut after it began fails."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import anthropic
import httpx
import httpx2  # the official SDKs' HTTP client: what a stream cut mid-answer raises
import openai

# (ok, seconds, what went wrong, when it started: time.monotonic())
Outcome = tuple[bool, float, str, float]
# How a failure reads when the answer had begun (the SDKs cannot retry it).
CUT_MID_ANSWER = "cut after its answer began: "
MODEL = "tiny-llama"
HELLO = [{"role": "user", "content": "hi"}]


def drive_client(
    url: str,
    key: str,
    stop: threading.Event,
    stream: bool,
    outcomes: list[Outcome],
    pause_s: float = 0,
    verify: str | bool = True,
    timeout_s: float = 300,
) -> None:
    """One client of `url` (a gateway, or the router in front of gateways), in a loop until
    `stop`, `pause_s` between requests; `verify`: the CA file of an https URL's certificate;
    `timeout_s`: how long a request may wait for its next bytes."""
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 8, "stream": stream}
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=timeout_s, verify=verify) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    text = response.read().decode()
                events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
                if stream:
                    ok = response.status_code == 200 and events[-1:] == ["[DONE]"] and '"error"' not in text
                else:
                    ok = response.status_code == 200
                problem = "" if ok else f"{response.status_code} {text[-200:]}"
            except httpx.HTTPError as error:
                ok, problem = False, repr(error)
            outcomes.append((ok, time.monotonic() - started, problem, started))
            stop.wait(pause_s)


# An SDK client of the service, and one ask of it, which returns once the answer has begun
# (a stream's status and headers, which the SDK does not retry after) or ended: what the
# answer brings, item by item.
SdkClient = tuple[openai.OpenAI | anthropic.Anthropic, Callable[[], Iterable[object]]]


def openai_client(url: str, key: str, verify: str | bool, timeout_s: float, retries: int) -> openai.OpenAI:
    http = openai.DefaultHttpxClient(verify=verify)
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, http_client=http, timeout=timeout_s, max_retries=retries)


def chat_streamed(url: str, key: str, verify: str | bool, timeout_s: float, retries: int) -> SdkClient:
    client = openai_client(url, key, verify, timeout_s, retries)
    return client, lambda: client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, stream=True)


def responses_whole(url: str, key: str, verify: str | bool, timeout_s: float, retries: int) -> SdkClient:
    client = openai_client(url, key, verify, timeout_s, retries)
    return client, lambda: [client.responses.create(model=MODEL, input="hi", max_output_tokens=16)]


def messages_streamed(url: str, key: str, verify: str | bool, timeout_s: float, retries: int) -> SdkClient:
    http = anthropic.DefaultHttpxClient(verify=verify)
    client = anthropic.Anthropic(base_url=url, api_key=key, http_client=http, timeout=timeout_s, max_retries=retries)
    return client, lambda: client.messages.create(model=MODEL, messages=HELLO, max_tokens=8, stream=True)


def chat_whole(url: str, key: str, verify: str | bool, timeout_s: float, retries: int) -> SdkClient:
    client = openai_client(url, key, verify, timeout_s, retries)
    return client, lambda: [client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)]


# The SDK clients' kinds, one per client in turn.
SDK_CLIENTS = (chat_streamed, responses_whole, messages_streamed, chat_whole)


def sdk_outcome(ask: Callable[[], Iterable[object]]) -> Outcome:
    """One ask of an SDK client, read to its end: a failure after the answer began is marked
    CUT_MID_ANSWER."""
    started = time.monotonic()
    began = False
    try:
        answer = ask()
        began = True
        for _item in answer:
            pass
        ok, problem = True, ""
    except (openai.APIError, anthropic.APIError, httpx2.HTTPError) as error:
        ok, problem = False, (CUT_MID_ANSWER if began else "") + repr(error)
    return ok, time.monotonic() - started, problem, started


def drive_sdk_client(
    url: str,
    key: str,
    stop: threading.Event,
    index: int,
    outcomes: list[Outcome],
    pause_s: float,
    verify: str | bool,
    timeout_s: float,
    retries: int,
) -> None:
    """One client of `url` through an official SDK (SDK_CLIENTS[index % 4]) with `retries`
    retries, in a loop until `stop`, `pause_s` between requests."""
    client, ask = SDK_CLIENTS[index % len(SDK_CLIENTS)](url, key, verify, timeout_s, retries)
    with client:
        while not stop.is_set():
            outcomes.append(sdk_outcome(ask))
            stop.wait(pause_s)


@contextmanager
def traffic(
    url: str,
    key: str,
    clients: int = 4,
    pause_s: float = 0,
    verify: str | bool = True,
    timeout_s: float = 300,
    sdk_retries: int | None = None,
) -> Iterator[list[Outcome]]:
    """`clients` clients of `url`, every other one streaming, for as long as the block runs;
    yields their outcomes as they come. With `pause_s`, each waits that long between requests
    (steady traffic rather than all the machine can take). With `sdk_retries`, the clients are
    the official SDKs' (SDK_CLIENTS in turn), each retrying that many times."""
    stop = threading.Event()
    outcomes: list[Outcome] = []
    threads = [
        threading.Thread(
            target=drive_client, args=(url, key, stop, index % 2 == 0, outcomes, pause_s, verify, timeout_s)
        )
        if sdk_retries is None
        else threading.Thread(
            target=drive_sdk_client, args=(url, key, stop, index, outcomes, pause_s, verify, timeout_s, sdk_retries)
        )
        for index in range(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        yield outcomes
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def failures(outcomes: list[Outcome]) -> list[str]:
    return [problem for ok, _seconds, problem, _started in outcomes if not ok]
