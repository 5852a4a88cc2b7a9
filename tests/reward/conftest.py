"""A local HTTP server to name in JSON-schema `$ref` labels: it records every request it gets,
and a verifier must send it none."""

from __future__ import annotations

import http.server
import threading

import pytest


class Counting(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        Counting.hits.append(self.path)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"type": "string"}')

    def log_message(self, *args):
        pass


@pytest.fixture
def ref_target():
    """The server's base URL; `Counting.hits` lists the paths asked of it (cleared first)."""
    Counting.hits.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
