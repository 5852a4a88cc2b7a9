"""Run the reward server with uvicorn, plus a deadline for request headers; with `workers`, as
several HTTP worker processes in front of one model owner (`synpref.serve.model`).

uvicorn drops idle keep-alive connections but waits forever for a client that sends its headers
a byte at a time: 50 such connections were held for 30 s, each one a socket and a slot of
uvicorn's connection limit. Here a request's headers must be complete within `read_timeout_s`
of its first byte (of the connection, for the first request); the body then gets the same time
(`limits.BodyLimits`).
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("synpref.serve")

_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def header_deadline_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools or h11, as uvicorn picks) with a header deadline."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderDeadline(AutoHTTPProtocol):
        # Both uvicorn protocols set `self.cycle` to a new request cycle once headers are complete.
        _deadline: asyncio.TimerHandle | None = None
        _cycle_before = None  # the cycle current when the deadline was set

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._start_deadline()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # The first bytes of the next request on a kept-alive connection start its deadline.
            if self._deadline is None and self.cycle is not None and self.cycle.response_complete:
                self._start_deadline()

        def connection_lost(self, exc) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _start_deadline(self) -> None:
            self._cycle_before = self.cycle
            self._deadline = self.loop.call_later(timeout_s, self._expire)

        def _expire(self) -> None:
            self._deadline = None
            if self.cycle is self._cycle_before and not self.transport.is_closing():
                log.info("dropped a connection from %s: no complete request headers within %g s", self.client, timeout_s)
                self.transport.write(_TIMED_OUT)
                self.transport.close()

    return HeaderDeadline


def run(app, *, host: str, port: int, read_timeout_s: float) -> None:
    """Everything in this process: the event loop, the tokenizer thread and the model thread."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", http=header_deadline_protocol(read_timeout_s))


def run_workers(scorer, config, *, host: str, port: int, workers: int, model_name: str) -> None:
    """`workers` HTTP processes share the listening socket; this process owns the model and
    scores what they send over a Unix socket. Stops on SIGTERM or SIGINT, and when a worker dies."""
    import multiprocessing
    import signal
    import tempfile
    from pathlib import Path

    import uvicorn

    from synpref.serve.model import LocalModel, ModelOwner

    listening = uvicorn.Config(app=None, host=host, port=port).bind_socket()
    model = LocalModel(scorer, config)
    with tempfile.TemporaryDirectory(prefix="synpref-serve-") as folder:  # mode 0700: this user only
        path = str(Path(folder) / "model.sock")
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch, no model copied
        options = dict(sockets=[listening], owner=path, formatter=scorer.formatter, token_budget=model.token_budget,
                       config=config, model_name=model_name)  # fmt: skip

        async def own() -> None:
            owner = ModelOwner(model, config.request_timeout_s)
            await owner.start(path)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signal_number in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signal_number, stop.set)
            processes = [spawn.Process(target=_worker, kwargs=options, name=f"synpref-http-{i}") for i in range(workers)]
            for process in processes:
                process.start()
            try:
                while not stop.is_set() and all(p.is_alive() for p in processes):
                    try:
                        await asyncio.wait_for(stop.wait(), 0.5)
                    except asyncio.TimeoutError:
                        pass
                if not stop.is_set():
                    log.error("an HTTP worker died (exit code %s); stopping the server", [p.exitcode for p in processes])
            finally:
                # The workers finish the requests they hold, which needs this loop to answer them.
                for process in processes:
                    process.terminate()
                deadline = loop.time() + config.request_timeout_s
                while any(p.is_alive() for p in processes) and loop.time() < deadline:
                    await asyncio.sleep(0.1)
                for process in processes:
                    process.kill()
                    process.join()
                await owner.close()
                model.close()

        asyncio.run(own())
    listening.close()


def _worker(sockets, owner: str, formatter, token_budget: int | None, config, model_name: str) -> None:
    """One HTTP worker process: parse, check, tokenize; the model owner scores."""
    import logging

    import uvicorn

    from synpref.reward.sandbox import die_with_parent

    die_with_parent()  # a killed owner (SIGKILL, OOM) takes its HTTP workers with it

    from synpref.serve.app import create_app
    from synpref.serve.model import RemoteModel

    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if config.log_dir is not None:  # lines are appended whole, so the processes can share the file
        handlers.append(logging.FileHandler(config.log_dir / "serve.log"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", handlers=handlers)
    spec = None
    if config.reward_spec is not None:
        from synpref.reward.spec import load_spec

        spec = load_spec(config.reward_spec)
    app = create_app(RemoteModel(owner, formatter, token_budget), config, model_name=model_name, reward_spec=spec)
    http = header_deadline_protocol(config.read_timeout_s)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", http=http)).run(sockets=sockets)
