"""Serves the repository fixture (build_repo.sh) on 127.0.0.1:8765 while the gpu scenario runs.

A test double for NVIDIA's repositories behind a mirror: the container toolkit's part asks for
a user and password (HTTP Basic) and answers 401 without them, as an authenticating mirror
does, so that the nvidia role is seen to give its URLs' credentials to get_url and apt.
"""

import base64
import functools
import http.server
import sys

PROTECTED = "/libnvidia-container/"
CREDENTIALS = ("switchyard-test", "fixture-secret")


class Handler(http.server.SimpleHTTPRequestHandler):
    def _authorized(self) -> bool:
        if not self.path.startswith(PROTECTED):
            return True
        expected = base64.b64encode(":".join(CREDENTIALS).encode()).decode()
        return self.headers.get("Authorization", "") == f"Basic {expected}"

    def send_head(self):
        if self._authorized():
            return super().send_head()
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="fixture"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return None


def main() -> None:
    directory = sys.argv[1]
    handler = functools.partial(Handler, directory=directory)
    http.server.ThreadingHTTPServer(("127.0.0.1", 8765), handler).serve_forever()


if __name__ == "__main__":
    main()
