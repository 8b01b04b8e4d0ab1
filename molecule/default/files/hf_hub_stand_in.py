#!/usr/bin/env python3
"""Stand-in for the Hugging Face Hub's download API: the Hub cannot be reached from the test machines.

It serves the repos found under --root (ORG/NAME/<files>, all at revision "main") the narrow
way huggingface-hub 1.x asks for them, and nothing else:
  GET       /api/models/ORG/NAME/revision/main     repo info: {"id", "sha"}
  GET       /api/models/ORG/NAME/tree/SHA          the file list (recursive)
  HEAD, GET /ORG/NAME/resolve/REV/PATH             X-Repo-Commit, ETag, Content-Length; Range on GET
A repo, revision or file it lacks answers 404 with the Hub's X-Error-Code, which is what makes
huggingface-hub name the missing part. Every request is appended as a JSON line to --log
(method, path, Range, whether a token came) for the tests to read. --drop-once PATH sends
only the first half of that file on its first GET and closes the connection: an interrupted
download. --pace KIB_PER_S slows every file body down, so a download lasts long enough for
progress to be reported.
"""

import argparse
import hashlib
import json
import re
import time
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHUNK = 16384


class Hub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __init__(self, *args, options: argparse.Namespace, dropped: set[str], **kwargs) -> None:
        self.options, self.dropped = options, dropped
        super().__init__(*args, **kwargs)

    def log_message(self, *args) -> None:
        """Requests go to --log as JSON instead."""

    def record(self) -> None:
        entry = {
            "method": self.command,
            "path": unquote(urlsplit(self.path).path),
            "range": self.headers.get("Range"),
            "token": self.headers.get("Authorization", "").removeprefix("Bearer ") or None,
        }
        with Path(self.options.log).open("a") as log:
            log.write(json.dumps(entry) + "\n")

    def do_HEAD(self) -> None:
        self.record()
        self.resolve(send_body=False)

    def do_GET(self) -> None:
        self.record()
        path = unquote(urlsplit(self.path).path)
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path):
            if self.repo(match[1], match[2]):
                self.send_json({"id": match[1], "sha": commit(match[1]), "private": False})
        elif match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/.*)?", path):
            if root := self.repo(match[1], "main"):
                files = sorted(p for p in root.rglob("*") if p.is_file())
                self.send_json(
                    [
                        {"type": "file", "path": str(p.relative_to(root)), "size": p.stat().st_size, "oid": etag(p)}
                        for p in files
                    ]
                )
        else:
            self.resolve(send_body=True)

    def repo(self, repo_id: str, revision: str) -> Path | None:
        root = Path(self.options.root) / repo_id
        if not root.is_dir():
            self.send_error_code(404, "RepoNotFound", f"Repository Not Found for url: {self.path}.")
            return None
        if revision not in ("main", commit(repo_id)):
            self.send_error_code(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return root

    def resolve(self, send_body: bool) -> None:
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", unquote(urlsplit(self.path).path))
        if not match:
            self.send_error_code(404, "NotFound", "Not Found")
            return
        root = self.repo(match[1], match[2])
        if root is None:
            return
        file = root / match[3]
        if not file.is_file():
            self.send_error_code(404, "EntryNotFound", f"Entry Not Found for url: {self.path}.")
            return
        data = file.read_bytes()
        start = int(re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "bytes=0-"))[1])
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", commit(match[1]))
        self.send_header("ETag", f'"{etag(file)}"')
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not send_body:
            return
        body = data[start:]
        if match[3] == self.options.drop_once and match[3] not in self.dropped:
            self.dropped.add(match[3])
            body = body[: len(body) // 2]
            self.close_connection = True
        for offset in range(0, len(body), CHUNK):
            self.wfile.write(body[offset : offset + CHUNK])
            if self.options.pace:
                time.sleep(CHUNK / 1024 / self.options.pace)

    def send_json(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_error_code(self, status: int, code: str, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def commit(repo_id: str) -> str:
    return hashlib.sha1(repo_id.encode()).hexdigest()


def etag(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--drop-once", default="")
    parser.add_argument("--pace", type=float, default=0.0)
    options = parser.parse_args()
    handler = partial(Hub, options=options, dropped=set())
    ThreadingHTTPServer(("127.0.0.1", options.port), handler).serve_forever()


if __name__ == "__main__":
    main()
