"""A benchmark upstream that answers OpenAI chat requests as fast as a socket allows.

Not a model server: it exists so that scripts/bench/gateway.py measures the proxies in front
of it, not a model. Every streamed chunk carries the moment it was written
(`"content": "t=<CLOCK_MONOTONIC ns>"`; the clock is shared by all processes on the machine),
so the client can tell how long each chunk spent in a proxy.

    python fast_upstream.py PORT CHUNKS INTERVAL_MS
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import uvloop

# Compact, as vLLM, llama-server and Ollama write their JSON.
COMPACT = (",", ":")
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok " * 16}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 16, "total_tokens": 24},
    },
    separators=COMPACT,
).encode()


def chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def event(content: str | None, finish: str | None) -> bytes:
    delta = {"content": content} if content is not None else {}
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "bench-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body, separators=COMPACT).encode() + b"\n\n"


class Upstream(asyncio.Protocol):
    def __init__(self, chunks: int, interval: float) -> None:
        self.chunks = chunks
        self.interval = interval
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.streams: set[asyncio.Task] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            if head.startswith(b"GET"):
                self.reply(b'{"status":"ok"}')
            elif b'"stream":true' in body.replace(b" ", b""):
                task = asyncio.ensure_future(self.stream())
                self.streams.add(task)
                task.add_done_callback(self.streams.discard)
            else:
                self.reply(COMPLETION)

    def reply(self, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )

    async def stream(self) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        for number in range(self.chunks):
            if self.transport.is_closing():
                return
            finish = "length" if number == self.chunks - 1 else None
            self.transport.write(chunk(event(f"t={time.monotonic_ns()}", finish)))
            await asyncio.sleep(self.interval)
        self.transport.write(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")


async def main(port: int, chunks: int, interval_ms: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Upstream(chunks, interval_ms / 1000), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
