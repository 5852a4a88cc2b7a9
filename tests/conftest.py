from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from synpref.data.workspace import Workspace

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace.init(tmp_path / "ws", name="test")


def write_jsonl(path: Path, records: list, gzipped: bool = False) -> Path:
    """Records are dicts (dumped as JSON) or bytes (written as the raw line)."""
    lines = b"".join(
        (r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records
    )
    path.write_bytes(gzip.compress(lines) if gzipped else lines)
    return path


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def record(prompt: str, chosen: str, rejected: str, **extra) -> dict:
    """One record in our own schema."""
    return {"conversation": [user(prompt)], "chosen": assistant(chosen), "rejected": assistant(rejected), **extra}


@contextmanager
def live_server(app):
    """Serve `app` with uvicorn on a free loopback port in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", limit_concurrency=200, backlog=256))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@contextmanager
def serve_process(options: list[str], log_path: Path):
    """`synpref serve OPTIONS` in its own process on a free loopback port; yields its base URL.

    Output goes to `log_path`; the process is stopped on exit.
    """
    with served_process(options, log_path) as (base, _process):
        yield base


@contextmanager
def served_process(options: list[str], log_path: Path):
    """`serve_process`, yielding (base URL, the `subprocess.Popen`) for tests that signal it."""
    import subprocess
    import sys

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "synpref", "serve", "--port", str(port), *options],
                                  stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "synpref serve did not come up"
            try:
                httpx.get(f"{base}/health", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield base, server
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=30)
