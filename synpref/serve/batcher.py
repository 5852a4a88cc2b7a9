"""Dynamic micro-batching: concurrent requests merged into batches by one worker thread.

The worker owns the model: request handlers only enqueue token ids and await a future, so no
model work ever runs in the event loop. The worker takes the first waiting job, then keeps
adding jobs until the batch holds `max_batch_tokens` tokens or `max_wait_ms` has passed.

It scores them in chunks of at most `max_batch_tokens` tokens, each chunk one call (which itself
sorts by length into token-budget batches), taking one sequence from each job in turn, so a
request of 512 long inputs cannot hold up a short one behind it: jobs that arrive meanwhile join
at the next chunk. Between chunks, jobs whose request is gone (its deadline passed, or its client
left) are dropped: their work was a 504 nobody reads, and it blocked everyone behind it.

When a chunk fails, its inputs are scored one at a time, so an input the model cannot take fails
its own request (`UnscorableInput`) and every other request of the chunk still gets its scores.
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


@dataclass(eq=False)  # jobs are told apart by identity (they key the chunks)
class _Job:
    sequences: list[list[int]]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.monotonic)
    scores: list[float] = field(default_factory=list)  # of sequences[: len(scores)], scored so far
    error: Exception | None = None
    # Set from the event loop when the awaiting request is cancelled; only read by the worker
    # (a bool is written whole under the GIL, and the asyncio future is not thread-safe).
    cancelled: bool = False

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)

    @property
    def finished(self) -> bool:
        return self.error is not None or len(self.scores) == len(self.sequences)


class MicroBatcher(JobThread):
    def __init__(
        self,
        score_ids: Callable[[list[list[int]]], list[float]],
        *,
        max_batch_tokens: int = 16384,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        on_batch: Callable[[int, int], None] | None = None,  # (sequences, tokens) per model call
        on_drop: Callable[[int], None] | None = None,  # (sequences) of each job dropped unscored
    ):
        self.score_ids = score_ids
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch or (lambda sequences, tokens: None)
        self.on_drop = on_drop or (lambda sequences: None)
        self._pending = 0  # sequences enqueued and not yet scored or dropped
        self._lock = threading.Lock()
        super().__init__("synpref-scorer")

    @property
    def pending(self) -> int:
        return self._pending

    async def score(self, sequences: list[list[int]]) -> list[float]:
        """Rewards of `sequences`, in order; raises `QueueFull` when the queue has no room.
        Cancelling the call (a timeout, a client that left) drops what is not scored yet."""
        with self._lock:
            if self._pending + len(sequences) > self.max_queue:
                raise QueueFull
            self._pending += len(sequences)
        loop = asyncio.get_running_loop()
        job = _Job(sequences, loop.create_future(), loop)
        self._jobs.put(job)
        try:
            return await job.future
        except asyncio.CancelledError:
            job.cancelled = True
            raise

    def _handle(self, batch: list[_Job]) -> None:
        active = batch
        while active:
            active = [job for job in active if not self._dropped(job)]
            if active:
                self._score(self._chunk(active))
            for job in active:
                if job.finished:
                    self._release(job)
                    _settle(job, job.scores, job.error)
            active = [job for job in active if not job.finished] + self._waiting()

    def _chunk(self, jobs: list[_Job]) -> dict[_Job, list[list[int]]]:
        """The next sequences to score: one from each job in turn, up to `max_batch_tokens`
        tokens (one sequence at least)."""
        chunk: dict[_Job, list[list[int]]] = {job: [] for job in jobs}
        tokens = 0
        while True:
            added = False
            for job in jobs:
                start = len(job.scores) + len(chunk[job])
                if start == len(job.sequences):
                    continue
                sequence = job.sequences[start]
                if tokens and tokens + len(sequence) > self.max_batch_tokens:
                    return chunk
                chunk[job].append(sequence)
                tokens += len(sequence)
                added = True
            if not added:
                return chunk

    def _score(self, chunk: dict[_Job, list[list[int]]]) -> None:
        sequences = [s for part in chunk.values() for s in part]
        try:
            scores = self.score_ids(sequences)
        except Exception as error:  # the worker lives on; only the inputs at fault fail
            if len(sequences) == 1:
                job = next(job for job, part in chunk.items() if part)
                job.error = UnscorableInput(len(job.scores), error)
                return
            log.warning("a batch of %d inputs failed (%s); scoring them one at a time", len(sequences), first_line(error))
            for job, part in chunk.items():
                self._score_alone(job, part)
            return
        self.on_batch(len(sequences), sum(len(s) for s in sequences))
        start = 0
        for job, part in chunk.items():
            job.scores += scores[start : start + len(part)]
            start += len(part)

    def _score_alone(self, job: _Job, part: list[list[int]]) -> None:
        """Each of `part` in a batch of its own; the first that fails fails the job."""
        for sequence in part:
            try:
                job.scores += self.score_ids([sequence])
            except Exception as error:
                job.error = UnscorableInput(len(job.scores), error)
                return
            self.on_batch(1, len(sequence))

    def _dropped(self, job: _Job) -> bool:
        """Whether `job`'s request is gone; its unscored sequences are then let go."""
        if not job.cancelled:
            return False
        unscored = len(job.sequences) - len(job.scores)
        log.info("dropped %d of %d sequences: their request timed out or its client left", unscored, len(job.sequences))
        self.on_drop(unscored)
        self._release(job)
        return True

    def _release(self, job: _Job) -> None:
        with self._lock:
            self._pending -= len(job.sequences)

    def _waiting(self) -> list[_Job]:
        """The jobs already queued, taken without waiting (they join the next chunk)."""
        jobs = []
        while (job := self._next()) is not None:
            jobs.append(job)
        return jobs

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
