"""The tests' SDK clients (scripts/clients.py), against a small HTTP server that fails as a
dying router does: what the official SDKs retry before an answer begins ends well, and a
stream cut after its status and headers is counted as cut mid-answer, which the fleet's
router-kill test allows and nothing else."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scripts import clients


class DyingRouter(BaseHTTPRequestHandler):
    """Answers 503 to the first `refusals` requests, then cuts every stream after its
    headers when `cut_streams`, and answers the rest with one word."""

    protocol_version = "HTTP/1.1"
    refusals = 0
    cut_streams = False
    seen = 0

    def log_message(self, *_args: object) -> None:
        pass

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen += 1
        if type(self).seen <= self.refusals:
            self.answer(503, {"error": {"message": "no server is available"}})
        elif request.get("stream"):
            # Cut: the headers promise a chunked body that never comes. Else: an empty stream.
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header(*(("Transfer-Encoding", "chunked") if self.cut_streams else ("Content-Length", "0")))
            self.end_headers()
            self.close_connection = self.cut_streams
        elif self.path == "/v1/responses":
            self.answer(200, {"id": "r", "object": "response", "created_at": 0, "model": "m", "output": []})
        elif self.path == "/v1/chat/completions":
            self.answer(200, {"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": []})
        else:
            self.answer(404, {"error": {"message": "not found"}})

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def router() -> Iterator[type[DyingRouter]]:
    handler = type("Router", (DyingRouter,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield handler
    finally:
        server.shutdown()
        thread.join()


def one_request_each(url: str, retries: int) -> list[clients.Outcome]:
    """One request from each SDK client kind, one after another, in SDK_CLIENTS' order."""
    outcomes = []
    for kind in clients.SDK_CLIENTS:
        client, ask = kind(url, "key", True, 5, retries)
        with client:
            outcomes.append(clients.sdk_outcome(ask))
    return outcomes


def test_what_the_sdks_retry_before_an_answer_begins_ends_well(router):
    router.refusals = 2
    outcomes = one_request_each(router.url, retries=2)
    assert clients.failures(outcomes[:1]) == [], "a 503 twice, then an answer: the SDK retried"
    assert router.seen >= 3


def test_without_retries_a_refusal_fails_and_is_not_cut(router):
    router.refusals = 1
    (first,) = one_request_each(router.url, retries=0)[:1]
    assert not first[0]
    assert not first[2].startswith(clients.CUT_MID_ANSWER), first


def test_only_a_stream_cut_after_its_headers_counts_as_cut_mid_answer(router):
    router.cut_streams = True
    outcomes = one_request_each(router.url, retries=2)
    kinds = [ask.__name__ for ask in clients.SDK_CLIENTS]
    failed = {kinds[index]: problem for index, (ok, _s, problem, _t) in enumerate(outcomes) if not ok}
    assert set(failed) == {"chat_streamed", "messages_streamed"}, failed
    assert all(problem.startswith(clients.CUT_MID_ANSWER) for problem in failed.values()), failed
