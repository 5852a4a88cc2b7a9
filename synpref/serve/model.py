"""Where the model runs, as the HTTP side sees it: in this process, or in a model-owner process.

`LocalModel` wraps the scorer in a `MicroBatcher` (one worker thread owns the model). With
`--workers N`, `synpref serve` runs N HTTP worker processes in front of one model owner: the
owner's `ModelOwner` answers `RemoteModel` clients over a Unix socket, so the workers parse,
validate and tokenize in parallel while the model thread runs in a process of its own, never
waiting for the GIL behind an event loop. Both sides offer the same calls: `score(sequences)`,
`status()` and `metrics()`, raising `QueueFull` and `UnscorableInput` alike. Cancelling a
`score` call (a request past its deadline, a client that left) drops its unscored work on both:
a remote one tells the owner, which cancels its own call.

The socket carries length-prefixed pickles between processes of the same server, in a folder
only this user can open.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import struct
from typing import Any

from synpref.serve.batcher import MicroBatcher, QueueFull, UnscorableInput, first_line
from synpref.serve.config import ServeConfig

log = logging.getLogger("synpref.serve")


class LocalModel:
    """The scorer behind a micro-batcher in this process, with its batch metrics."""

    def __init__(self, scorer, config: ServeConfig):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.formatter = scorer.formatter
        self.token_budget = getattr(scorer, "token_budget", None)
        self.registry = CollectorRegistry()
        self.batch_sequences = Histogram(
            "synpref_batch_sequences", "sequences per model batch", registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )  # fmt: skip
        self.batch_tokens = Histogram(
            "synpref_batch_tokens", "tokens per model batch", registry=self.registry,
            buckets=(64, 256, 1024, 4096, 16384, 65536),
        )  # fmt: skip
        queue_depth = Gauge("synpref_queue_depth", "sequences waiting to be scored", registry=self.registry)
        dropped = Counter(
            "synpref_dropped_sequences", "sequences left unscored because their request timed out or its client left",
            registry=self.registry,
        )  # fmt: skip
        self.batcher = MicroBatcher(
            scorer.score_ids,
            max_batch_tokens=config.max_batch_tokens,
            max_wait_ms=config.max_wait_ms,
            max_queue=config.max_queue,
            on_batch=self._observe_batch,
            on_drop=dropped.inc,
        )
        queue_depth.set_function(lambda: self.batcher.pending)

    async def score(self, sequences: list[list[int]]) -> list[float]:
        return await self.batcher.score(sequences)

    async def status(self) -> dict[str, Any]:
        return {"queue": self.batcher.pending}

    async def metrics(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()

    def close(self) -> None:
        self.batcher.close()

    def _observe_batch(self, sequences: int, tokens: int) -> None:
        self.batch_sequences.observe(sequences)
        self.batch_tokens.observe(tokens)


_LENGTH = struct.Struct("!I")


def _send(writer: asyncio.StreamWriter, message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(_LENGTH.pack(len(payload)) + payload)


async def _receive(reader: asyncio.StreamReader) -> Any:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(length))


class ModelOwner:
    """Serves a `LocalModel` to the HTTP workers: messages (id, call, argument) in, (id,
    outcome, value) out, answered as they finish, so one connection carries many requests.
    (id, "cancel", None) cancels call id: its worker gave up on it, and gets no answer."""

    def __init__(self, model: LocalModel, request_timeout_s: float):
        self.model = model
        self.request_timeout_s = request_timeout_s
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, path: str) -> None:
        self._server = await asyncio.start_unix_server(self._connection, path)

    async def close(self) -> None:
        """Stop listening and hang up on the workers (they are gone by now)."""
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        running: dict[int, asyncio.Task] = {}  # this connection's calls by id
        try:
            while True:
                message = await _receive(reader)
                ident, call, _ = message
                if call == "cancel":
                    if ident in running:
                        running[ident].cancel()
                    continue
                task = asyncio.create_task(self._answer(message, writer))
                running[ident] = task
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                task.add_done_callback(lambda _, ident=ident: running.pop(ident, None))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
        finally:
            self._writers.discard(writer)

    async def _answer(self, message: tuple, writer: asyncio.StreamWriter) -> None:
        ident, call, argument = message
        try:
            if call == "score":
                # the worker gives up at its timeout; the owner then skips the job, not scores it
                outcome = ("ok", await asyncio.wait_for(self.model.score(argument), self.request_timeout_s))
            elif call == "status":
                outcome = ("ok", await self.model.status())
            else:
                outcome = ("ok", await self.model.metrics())
        except QueueFull:
            outcome = ("queue_full", None)
        except UnscorableInput as error:
            outcome = ("unscorable", (error.index, error.reason))
        except asyncio.TimeoutError:
            outcome = ("timeout", None)
        except Exception as error:  # noqa: BLE001 - reported to the worker, which answers 500
            log.exception("model owner failed on a %s call", call)
            outcome = ("error", first_line(error))
        if not writer.is_closing():
            _send(writer, (ident, *outcome))


class RemoteModel:
    """A worker's handle on the model owner: one Unix-socket connection per worker process."""

    def __init__(self, path: str, formatter, token_budget: int | None):
        self.path = path
        self.formatter = formatter
        self.token_budget = token_budget
        self._writer: asyncio.StreamWriter | None = None
        self._connecting: asyncio.Lock | None = None
        self._waiting: dict[int, asyncio.Future] = {}
        self._ids = itertools.count()

    async def score(self, sequences: list[list[int]]) -> list[float]:
        outcome, value = await self._call("score", sequences)
        if outcome == "ok":
            return value
        if outcome == "queue_full":
            raise QueueFull
        if outcome == "unscorable":
            index, reason = value
            raise UnscorableInput(index, RuntimeError(reason))
        if outcome == "timeout":
            raise asyncio.TimeoutError
        raise RuntimeError(f"model owner: {value}")

    async def status(self) -> dict[str, Any]:
        return (await self._call("status", None))[1]

    async def metrics(self) -> str:
        return (await self._call("metrics", None))[1]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    async def _call(self, call: str, argument: Any) -> tuple[str, Any]:
        writer = self._writer if self._writer is not None and not self._writer.is_closing() else await self._connect()
        ident = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        try:
            _send(writer, (ident, call, argument))
            return await future
        except asyncio.CancelledError:
            if not writer.is_closing():  # the owner would score it for nobody
                _send(writer, (ident, "cancel", None))
            raise
        finally:
            self._waiting.pop(ident, None)

    async def _connect(self) -> asyncio.StreamWriter:
        self._connecting = self._connecting or asyncio.Lock()
        async with self._connecting:
            if self._writer is None or self._writer.is_closing():
                reader, self._writer = await asyncio.open_unix_connection(self.path)
                self._reader = asyncio.get_running_loop().create_task(self._read(reader))
        return self._writer

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                ident, outcome, value = await _receive(reader)
                future = self._waiting.get(ident)
                if future is not None and not future.done():
                    future.set_result((outcome, value))
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"lost the model owner: {first_line(error)}"))
