#!/usr/bin/python3
"""Test double for the Ollama server: no Ollama binary can be had on the test machines.

It stands in for the narrow part of Ollama's HTTP API that Switchyard relies on - the
version probe, the OpenAI-compatible model list and chat completions (plain and SSE), and
/api/pull - and lists as models the manifests found under $OLLAMA_MODELS (or
~/.ollama/models), as Ollama does. Like Ollama, it loads a model only for its first request:
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

MODELS = Path(os.environ.get("OLLAMA_MODELS", "/root/.ollama/models"))
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
        if self.path != "/v1/chat/completions":
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
        reply = {"id": "chatcmpl-test-double", "created": int(time.time()), "model": request["model"]}
        if not request.get("stream"):
            message = {"role": "assistant", "content": "hello from the Ollama test double"}
            self.send_json(
                200,
                reply
                | {"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]},
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for word in ("hello", " from", " the", " test", " double", None):
            delta = {"content": word} if word else {}
            chunk = reply | {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": None if word else "stop"}],
            }
            self.write_chunk(f"data: {json.dumps(chunk)}\n\n")
        self.write_chunk("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

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
