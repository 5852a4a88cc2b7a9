"""Verifiers run where a hostile reply cannot reach the caller: worker processes with a wall-time
limit per item and a memory limit.

In RL the policy writes what the verifiers read, and it searches for whatever pays. Regexes,
sympy and jsonschema run C code that never yields, so a thread cannot be stopped and a hang in
one would hold the reward server; a process can be killed. `VerifierPool` keeps `workers`
processes (`python -m synpref.reward.sandbox`: a fresh interpreter, so nothing of the caller's
state, threads or `__main__` comes along). A call hands its whole batch to one idle worker,
which records in a shared 16-byte page which item it is on and since when, and sends its
verdicts back in a few messages: the normal path costs one round trip per batch, not one per
item. The caller watches that clock: an item past `time_s` gets its worker killed, the verdict
"unparseable: time limit", and the rest of the batch goes on in a fresh worker (one is always
started ahead, so the replacement is ready). A worker may hold `memory_mb` of address space
(RLIMIT_AS): past it the item fails with MemoryError inside the worker, is answered "unparseable:
memory limit", and the worker is replaced. Messages are JSON both ways: nothing the worker says
is unpickled.
"""

from __future__ import annotations

import logging
import mmap
import os
import queue
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import orjson

from synpref.reward.spec import RewardSpec, VerifierLimits
from synpref.reward.verifiers import BadReference, Outcome, Verdict

log = logging.getLogger("synpref.reward")

_POLL_S = 0.02  # how often the caller looks at a busy worker's clock
_FLUSH_S = 0.05  # a worker sends what it has when this long has passed since its last message
_CLOCK = struct.Struct("dq")  # (start of the current item on CLOCK_MONOTONIC, its index)
_MEMORY_LIMIT = "memory limit"
_NICENESS = 10  # added to a worker's scheduling niceness (lower priority)


class Cancelled(Exception):
    """The caller gave up on a batch (its deadline passed or its client left)."""


# ------------------------------------------------------------------------------ worker process


def _limit_memory(megabytes: int) -> None:
    import resource

    limit = megabytes * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def die_with_parent() -> None:
    """Linux: the kernel kills this process when the thread that started it ends, even while it is
    stuck in C code (a stuck worker would otherwise spin on after a crash of the server). So a
    process that calls this must be started from a thread that lives as long as its parent
    (`_spawn`), never from a pool thread that may end when idle."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _verify_one(verifiers: dict, task: str, response: str, reference: Any) -> list:
    try:
        verdict = verifiers[task].verify(response, reference)
        return ["verdict", verdict.outcome.value, verdict.reason, verdict.answer]
    except BadReference as error:
        return ["bad", str(error)]
    except MemoryError:
        return ["verdict", Outcome.UNPARSEABLE.value, _MEMORY_LIMIT, None]
    except RecursionError:
        return ["verdict", Outcome.UNPARSEABLE.value, "nested too deeply to verify", None]
    except Exception as error:  # a verifier bug must cost one item, not the request
        return ["verdict", Outcome.UNPARSEABLE.value, f"verifier failed: {type(error).__name__}", None]


def _worker_main(requests: Connection, results: Connection, clock: mmap.mmap, memory_mb: int) -> None:
    """Verify batches until the requests pipe closes; the first message is the reward spec."""
    from synpref.reward.verifiers import get_verifier

    die_with_parent()
    # Below the server's priority: replies spinning a worker for its whole time limit must not
    # slow the event loop, the tokenizer or the model that every other request needs.
    os.nice(_NICENESS)
    spec = RewardSpec.model_validate_json(requests.recv_bytes())
    verifiers = {name: get_verifier(task.verifier, task.options) for name, task in spec.tasks.items() if task.verifier}
    _limit_memory(memory_mb)
    results.send_bytes(b"[]")  # ready
    while True:
        try:
            batch = _loads(requests.recv_bytes())
        except EOFError:
            return
        done: list[list] = []
        flushed = time.monotonic()
        for index, (task, response, reference) in enumerate(batch):
            _CLOCK.pack_into(clock, 0, time.monotonic(), index)
            done.append(_verify_one(verifiers, task, response, reference))
            if time.monotonic() - flushed >= _FLUSH_S:
                results.send_bytes(orjson.dumps(done))
                done, flushed = [], time.monotonic()
        results.send_bytes(orjson.dumps(done))
        if any(result[0] == "verdict" and result[2] == _MEMORY_LIMIT for result in done):
            return  # a worker that ran out of memory may be left fragmented: start afresh


_SPAWNER = None  # one thread that starts every worker and lives as long as this process
_SPAWNER_LOCK = threading.Lock()


def _spawn(command: list[str], fds: tuple[int, ...]) -> subprocess.Popen:
    global _SPAWNER
    from concurrent.futures import ThreadPoolExecutor

    with _SPAWNER_LOCK:
        if _SPAWNER is None:
            _SPAWNER = ThreadPoolExecutor(1, thread_name_prefix="synpref-verifier-spawner")
    # Its own session: a Ctrl-C in the terminal reaches the server, which stops its workers.
    return _SPAWNER.submit(subprocess.Popen, command, pass_fds=fds, stdin=subprocess.DEVNULL, start_new_session=True).result()


class _Worker:
    """One verifier process, its two pipes and its clock page."""

    def __init__(self, spec_json: bytes, memory_mb: int):
        self._clock_file = tempfile.TemporaryFile()
        self._clock_file.write(bytes(_CLOCK.size))
        self._clock_file.flush()
        self.clock = mmap.mmap(self._clock_file.fileno(), _CLOCK.size)
        request_read, request_write = os.pipe()
        result_read, result_write = os.pipe()
        fds = (request_read, result_write, self._clock_file.fileno())
        command = [sys.executable, "-m", "synpref.reward.sandbox", *map(str, fds), str(memory_mb)]
        self.process = _spawn(command, fds)
        os.close(request_read)
        os.close(result_write)
        self.requests = Connection(request_write, readable=False)
        self.results = Connection(result_read, writable=False)
        self.requests.send_bytes(spec_json)
        self.ready = False

    def wait_ready(self, timeout: float) -> bool:
        if not self.ready and self.results.poll(timeout):
            self.ready = self.results.recv_bytes() == b"[]"
        return self.ready

    def start_clock(self) -> None:
        _CLOCK.pack_into(self.clock, 0, time.monotonic(), 0)

    def position(self) -> tuple[int, float]:
        """(index, start) of the item the worker is on; read until two reads agree, since the
        worker may be writing the page at that moment."""
        while True:
            first, second = _CLOCK.unpack_from(self.clock, 0), _CLOCK.unpack_from(self.clock, 0)
            if first == second:
                return int(first[1]), first[0]

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for closable in (self.requests, self.results, self.clock, self._clock_file):
            closable.close()


# ------------------------------------------------------------------------------------ the pool

_STARTUP_S = 60.0  # a fresh interpreter importing sympy: about a second, more on a loaded machine


class VerifierPool:
    """`limits.workers` verifier processes for one reward spec, plus one spare started ahead to
    replace a killed one; all started on first use (or by `start()`).

    `verify` is blocking and thread-safe: each call takes an idle worker (waiting for one when
    all are busy) and gives it back afterwards."""

    def __init__(self, spec: RewardSpec, limits: VerifierLimits | None = None):
        self.limits = limits or spec.limits
        self._spec_json = spec.model_dump_json().encode()
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        for _ in range(self.limits.workers):
            self._idle.put(None)  # a slot whose worker has not started yet
        self._lock = threading.Lock()
        self._workers: set[_Worker] = set()
        self._spare: _Worker | None = None
        self._closed = False
        self.replaced = 0  # workers killed for a time limit or lost, for logs and tests

    def start(self) -> None:
        """Start every worker now rather than on the first call (a server does it at startup)."""
        slots = [self._idle.get() for _ in range(self.limits.workers)]
        for worker in slots:
            self._idle.put(worker or self._fresh())

    def verify(
        self, items: Sequence[tuple[str, str, Any]], deadline: float | None = None, cancel: threading.Event | None = None
    ) -> list[Verdict | BadReference]:
        """Verdicts of (task, response, reference) items in order; an unusable reference is a
        `BadReference` in its place. Raises `Cancelled` when `cancel` is set or the monotonic
        `deadline` passes first (the worker doing the batch is killed: its work is dropped)."""
        if not items:
            return []
        payload = [list(item) for item in items]
        worker = self._acquire(deadline, cancel)
        done: dict[int, Verdict | BadReference] = {}
        pending = list(range(len(items)))
        try:
            while pending:
                worker, pending = self._run(worker, payload, done, pending, deadline, cancel)
        except BaseException:
            self._discard(worker)
            worker = None
            raise
        finally:
            self._idle.put(worker)
        return [done[i] for i in range(len(items))]

    def close(self) -> None:
        """Stop every worker (busy ones are killed: nothing they do is awaited)."""
        with self._lock:
            self._closed = True
            workers, self._workers = [*self._workers, *([self._spare] if self._spare else [])], set()
            self._spare = None
        for worker in workers:
            worker.kill()

    def _acquire(self, deadline: float | None, cancel: threading.Event | None) -> _Worker | None:
        while True:
            _check(self._closed, deadline, cancel)
            try:
                return self._idle.get(timeout=_POLL_S * 5)
            except queue.Empty:
                continue

    def _fresh(self) -> _Worker:
        """The spare worker (started ahead, so usually ready), and a new spare behind it."""
        with self._lock:
            if self._closed:
                raise Cancelled("the verifier pool is closed")
            worker = self._spare or _Worker(self._spec_json, self.limits.memory_mb)
            self._spare = _Worker(self._spec_json, self.limits.memory_mb)
            self._workers.add(worker)
        return worker

    def _discard(self, worker: _Worker | None) -> None:
        if worker is None:
            return
        with self._lock:
            self._workers.discard(worker)
        worker.kill()

    def _run(self, worker, items, done, pending, deadline, cancel):
        """Send the `pending` items to `worker` and collect verdicts into `done` until they are all
        in or one fails its worker; returns the worker to go on with and what is still pending."""
        if worker is None or not worker.alive():
            self._discard(worker)
            worker = self._fresh()
        started = time.monotonic()
        while not worker.wait_ready(_POLL_S):
            _check(self._closed, deadline, cancel)
            if not worker.alive() or time.monotonic() - started > _STARTUP_S:
                raise RuntimeError(f"a verifier process did not start (exit code {worker.process.poll()})")
        worker.start_clock()  # the previous batch's clock must not count against this one
        worker.requests.send_bytes(_dumps([items[i] for i in pending]))
        received = 0
        while received < len(pending):
            try:
                if worker.results.poll(_POLL_S):
                    for message in orjson.loads(worker.results.recv_bytes()):
                        done[pending[received]] = _decode(message)
                        received += 1
                    continue
                alive = worker.alive()
            except (EOFError, OSError):
                alive = False  # the worker died (killed by the kernel, or crashed in C code)
            _check(self._closed, deadline, cancel)
            position, since = worker.position()
            overdue = time.monotonic() - since > self.limits.time_s
            if alive and not overdue:
                continue
            # The item the worker is on costs its verdict; what it finished since its last
            # message is lost with it and done again by the next worker (milliseconds' worth).
            position = max(position, received)
            done[pending[position]] = _failed(overdue=alive, time_s=self.limits.time_s)
            self._lost(worker, pending[position], overdue=alive)
            return None, pending[received:position] + pending[position + 1 :]
        return worker, []

    def _lost(self, worker: _Worker, index: int, overdue: bool) -> None:
        self.replaced += 1
        cause = "over its time limit" if overdue else f"lost (exit code {worker.process.poll()})"
        log.warning("verifier process %d killed: item %d %s", worker.process.pid, index, cause)
        self._discard(worker)


def _check(closed: bool, deadline: float | None, cancel: threading.Event | None) -> None:
    if closed:
        raise Cancelled("the verifier pool is closed")
    if cancel is not None and cancel.is_set():
        raise Cancelled("the caller gave up")
    if deadline is not None and time.monotonic() >= deadline:
        raise Cancelled("the deadline passed")


def _failed(overdue: bool, time_s: float) -> Verdict:
    if overdue:
        return Verdict(Outcome.UNPARSEABLE, f"time limit ({time_s:g} s)")
    return Verdict(Outcome.UNPARSEABLE, "the verifier process died")


def _dumps(batch: list) -> bytes:
    """orjson refuses NaN and numbers past 64 bits, which JSON bodies can hold in a reference."""
    try:
        return orjson.dumps(batch)
    except TypeError:
        import json

        return json.dumps(batch).encode()


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # what only `_dumps`' fallback writes: NaN, a lone surrogate
        import json

        return json.loads(data)


def _decode(message: list) -> Verdict | BadReference:
    if message[0] == "bad":
        return BadReference(message[1])
    _, outcome, reason, answer = message
    return Verdict(Outcome(outcome), reason, answer)


if __name__ == "__main__":  # a worker: python -m synpref.reward.sandbox REQUESTS RESULTS CLOCK MEMORY_MB
    _requests, _results, _clock, _memory = map(int, sys.argv[1:5])
    _worker_main(Connection(_requests, writable=False), Connection(_results, readable=False),
                 mmap.mmap(_clock, _CLOCK.size), _memory)  # fmt: skip
