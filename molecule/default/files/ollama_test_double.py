#!/usr/bin/python3
"""Test double for the Ollama server: no Ollama binary can be had on the test machines.

It stands in for the narrow part of Ollama's HTTP API that Switchyard and its clients rely
on - the version probe, the OpenAI-compatible model list and chat completions (plain and
SSE), the Responses API (plain, as Ollama has had it since 0.13.3), Anthropic's Messages
(plain and SSE, since 0.14.0), and /api/pull - and lists as models the manifests found
under $OLLAMA_MODELS (or ~/.ollama/models), as Ollama does. Like Ollama, it loads a model only for its first request:
a corrupt blob is listed and fails that request with a 500, not the server's start. It
listens on $OLLAMA_HOST. Everything else answers 404.

Pulls come from $OLLAMA_TEST_DOUBLE_REGISTRY (default /registry), a store laid out like
Ollama's (manifests/ and blobs/) that stands in for registry.ollama.ai: a name it lacks fails
with Ollama's own message, as the real registry's 404 does.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODELS = Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")
REGISTRY = MODELS / "manifests" / "registry.ollama.ai"
UPSTREAM = Path(os.environ.get("OLLAMA_TEST_DOUBLE_REGISTRY", "/registry"))


def model_names() -> list[str]:
    names = []
    for manifest in sorted(REGISTRY.glob("*/*/*")):
        namespace, model, tag = manifest.relative_to(REGISTRY).parts
        prefix = "" if namespace == "library" else f"{namespace}/"
        names.append(f"{prefix}{model}:{tag}")
    return names


def manifest_path(name: str) -> Path:
    """Where Ollama keeps the manifest of [host/][namespace/]model[:tag], under manifests/."""
    match = re.fullmatch(r"(.+?)(?::([^/:]+))?", name)
    parts = match.group(1).split("/")
    parts = ["registry.ollama.ai"] * (len(parts) < 3) + ["library"] * (len(parts) < 2) + parts
    return Path("manifests", *parts, match.group(2) or "latest")


def load(name: str) -> None:
    """Check the model's blobs against its manifest, as Ollama's runner does when a first
    request loads the model: a missing or corrupt blob fails that request, not the start."""
    manifest = json.loads((MODELS / manifest_path(name)).read_text())
    for layer in [manifest["config"], *manifest["layers"]]:
        blob = MODELS / "blobs" / layer["digest"].replace(":", "-")
        if not blob.is_file() or "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() != layer["digest"]:
            raise ValueError(f"llama runner process has terminated: error loading model: {blob.name} is corrupt")


def _put(source: Path, target: Path) -> None:
    """As Ollama writes a blob or a manifest: into a -partial file, then renamed, so that a
    request reading the store meanwhile sees the whole file or none."""
    partial = target.with_name(target.name + "-partial")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def pull(name: str):
    """Copy a model from the stand-in registry into the store (a blob already there whole is
    kept, as Ollama keeps it); yield Ollama's progress events."""
    yield {"status": "pulling manifest"}
    source = UPSTREAM / manifest_path(name)
    if not source.is_file():
        raise FileNotFoundError("pull model manifest: file does not exist")
    manifest = json.loads(source.read_text())
    for layer in [manifest["config"], *manifest["layers"]]:
        blob = "blobs/" + layer["digest"].replace(":", "-")
        (MODELS / "blobs").mkdir(parents=True, exist_ok=True)
        present = MODELS / blob
        if not (present.is_file() and "sha256:" + hashlib.sha256(present.read_bytes()).hexdigest() == layer["digest"]):
            _put(UPSTREAM / blob, present)
        status = f"pulling {layer['digest'][7:19]}"
        yield {"status": status, "digest": layer["digest"], "total": layer["size"], "completed": layer["size"]}
    yield {"status": "verifying sha256 digest"}
    yield {"status": "writing manifest"}
    target = MODELS / manifest_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    _put(source, target)
    yield {"status": "success"}


# Every answer's words, whatever was asked.
WORDS = ("hello", " from", " the", " Ollama", " test", " double")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def send_json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/api/version":
            self.send_json(200, {"version": "0.0.0-test-double"})
        elif self.path == "/v1/models":
            models = [{"id": name, "object": "model", "owned_by": "library"} for name in model_names()]
            self.send_json(200, {"object": "list", "data": models})
        else:
            self.send_json(404, {"error": "not found"})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if self.path == "/api/pull":
            self.pull(request.get("model") or request.get("name", ""), request.get("stream", True))
            return
        answer = {"/v1/chat/completions": self.chat, "/v1/responses": self.respond, "/v1/messages": self.message}
        if self.path not in answer or (self.path == "/v1/responses" and request.get("stream")):
            self.send_json(404, {"error": "not found"})
            return
        if request.get("model") not in model_names():
            self.send_json(404, {"error": {"message": f"model '{request.get('model')}' not found"}})
            return
        try:
            load(request["model"])
        except ValueError as error:
            self.send_json(500, {"error": {"message": str(error), "type": "api_error"}})
            return
        answer[self.path](request["model"], bool(request.get("stream")))

    def chat(self, model: str, stream: bool) -> None:
        reply = {"id": "chatcmpl-test-double", "created": int(time.time()), "model": model}
        if not stream:
            message = {"role": "assistant", "content": "".join(WORDS)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            self.send_json(200, reply | {"object": "chat.completion", "choices": [choice]})
            return
        self.start_events()
        for word in (*WORDS, None):
            delta = {"content": word} if word else {}
            choice = {"index": 0, "delta": delta, "finish_reason": None if word else "stop"}
            chunk = reply | {"object": "chat.completion.chunk", "choices": [choice]}
            self.write_chunk(f"data: {json.dumps(chunk)}\n\n")
        self.write_chunk("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def respond(self, model: str, _stream: bool) -> None:
        text = {"type": "output_text", "text": "".join(WORDS), "annotations": []}
        output = {"type": "message", "id": "msg_test_double", "status": "completed", "role": "assistant"}
        self.send_json(
            200,
            {
                "id": "resp_test_double", "object": "response", "created_at": int(time.time()), "model": model,
                "status": "completed", "output": [output | {"content": [text]}],
                "usage": {"input_tokens": 1, "output_tokens": len(WORDS), "total_tokens": 1 + len(WORDS)},
            },
        )  # fmt: skip

    def message(self, model: str, stream: bool) -> None:
        message = {
            "id": "msg_test_double", "type": "message", "role": "assistant", "model": model,
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 0},
        }  # fmt: skip
        if not stream:
            done = {"content": [{"type": "text", "text": "".join(WORDS)}], "stop_reason": "end_turn"}
            self.send_json(200, message | done | {"usage": {"input_tokens": 1, "output_tokens": len(WORDS)}})
            return
        self.start_events()
        events = [
            {"type": "message_start", "message": message | {"content": []}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}} for w in WORDS),
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
             "usage": {"output_tokens": len(WORDS)}},
            {"type": "message_stop"},
        ]  # fmt: skip
        for event in events:
            self.write_chunk(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def start_events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def pull(self, name: str, stream: bool) -> None:
        """As Ollama answers: JSON lines when streamed, else the last event (an error as 500)."""
        events = []
        try:
            events.extend(pull(name))
        except FileNotFoundError as error:
            events.append({"error": str(error)})
        if not stream:
            self.send_json(500 if "error" in events[-1] else 200, events[-1])
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            self.write_chunk(json.dumps(event) + "\n")
        self.wfile.write(b"0\r\n\r\n")

    def write_chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def main() -> None:
    # As PID 1 in its container, Python would ignore SIGTERM; Ollama exits on it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    host, _, port = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434").rpartition(":")
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()
