"""Dynamic micro-batching: concurrent requests merged into batches by one worker thread.

The worker owns the model: request handlers only enqueue token ids and await a future, so no
model work ever runs in the event loop. The worker takes the first waiting job, then keeps
adding jobs until the batch holds `max_batch_tokens` tokens or `max_wait_ms` has passed, and
scores them all in one call (which itself sorts by length into token-budget batches). When that
call fails, its inputs are scored one at a time, so an input the model cannot take fails its own
request (`UnscorableInput`) and every other request of the batch still gets its scores.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from synpref.serve.worker import JobThread

log = logging.getLogger("synpref.serve")


class QueueFull(Exception):
    """More sequences are waiting than the server accepts; the client should retry later."""


class UnscorableInput(Exception):
    """One input of a request made the model fail even when scored on its own."""

    def __init__(self, index: int, error: Exception):
        self.reason = first_line(error)
        super().__init__(f"input {index} could not be scored: {self.reason}")
        self.index = index


@dataclass
class _Job:
    sequences: list[list[int]]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)


class MicroBatcher(JobThread):
    def __init__(
        self,
        score_ids: Callable[[list[list[int]]], list[float]],
        *,
        max_batch_tokens: int = 16384,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        on_batch: Callable[[int, int], None] | None = None,  # (sequences, tokens) per batch
    ):
        self.score_ids = score_ids
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch or (lambda sequences, tokens: None)
        self._pending = 0  # sequences enqueued and not yet scored
        self._lock = threading.Lock()
        super().__init__("synpref-scorer")

    @property
    def pending(self) -> int:
        return self._pending

    async def score(self, sequences: list[list[int]]) -> list[float]:
        """Rewards of `sequences`, in order; raises `QueueFull` when the queue has no room."""
        with self._lock:
            if self._pending + len(sequences) > self.max_queue:
                raise QueueFull
            self._pending += len(sequences)
        loop = asyncio.get_running_loop()
        job = _Job(sequences, loop.create_future(), loop)
        self._jobs.put(job)
        return await job.future

    def _handle(self, batch: list[_Job]) -> None:
        live = [j for j in batch if not j.future.cancelled()]  # timed-out requests are skipped
        try:
            self._score(live)
        finally:
            with self._lock:
                self._pending -= sum(len(j.sequences) for j in batch)

    def _score(self, jobs: list[_Job]) -> None:
        sequences = [s for j in jobs for s in j.sequences]
        if not sequences:
            return
        try:
            scores = self.score_ids(sequences)
        except Exception as error:  # the worker lives on; only the inputs at fault fail
            if len(sequences) == 1:
                _settle(jobs[0], error=UnscorableInput(0, error))
                return
            log.warning("a batch of %d inputs failed (%s); scoring them one at a time", len(sequences), first_line(error))
            for j in jobs:
                self._score_alone(j)
            return
        self.on_batch(len(sequences), sum(j.tokens for j in jobs))
        start = 0
        for j in jobs:
            _settle(j, scores[start : start + len(j.sequences)])
            start += len(j.sequences)

    def _score_alone(self, job: _Job) -> None:
        """Each input of `job` in a batch of its own; the first that fails fails the job."""
        scores = []
        for index, sequence in enumerate(job.sequences):
            try:
                scores += self.score_ids([sequence])
            except Exception as error:
                _settle(job, error=UnscorableInput(index, error))
                return
            self.on_batch(1, len(sequence))
        _settle(job, scores)

    def _gather(self, first: _Job) -> list[_Job]:
        batch, tokens = [first], first.tokens
        deadline = time.monotonic() + self.max_wait
        while tokens < self.max_batch_tokens:
            job = self._next(deadline - time.monotonic())
            if job is None:  # none in time, or closing: this batch is complete
                break
            batch.append(job)
            tokens += job.tokens
        return batch


def first_line(error: Exception) -> str:
    """A short, single-line description of `error` for responses and logs (never a traceback)."""
    lines = str(error).strip().splitlines()
    return (lines[0][:200] if lines else "") or type(error).__name__


def _settle(job: _Job, scores: list[float] | None = None, error: Exception | None = None) -> None:
    """Hand the job's result to its event loop (the worker thread must not touch the future)."""
    job.loop.call_soon_threadsafe(_finish, job.future, scores, error)


def _finish(future: asyncio.Future, scores: list[float] | None, error: Exception | None) -> None:
    if future.done():  # cancelled by a timeout meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(scores)
