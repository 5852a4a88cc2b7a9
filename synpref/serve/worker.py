"""`JobThread`: one daemon thread that takes jobs from a queue in batches until closed.

The micro-batcher (the model's thread) and the tokenizer stage are both one: a job is taken,
`_gather` adds whatever else should join it, `_handle` runs the batch. `close()` enqueues the
sentinel None, which ends the thread once the batch in hand is done.
"""

from __future__ import annotations

import queue
import threading
from typing import Any


class JobThread:
    def __init__(self, name: str):
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self._handle(self._gather(job))

    def _next(self, timeout: float = 0.0) -> Any:
        """The next waiting job within `timeout` seconds (0: only one already waiting), or None.
        A closing queue also gives None, and keeps its sentinel for `_run`."""
        try:
            job = self._jobs.get(timeout=timeout) if timeout > 0 else self._jobs.get_nowait()
        except queue.Empty:
            return None
        if job is None:
            self._jobs.put(None)
        return job

    def _gather(self, first: Any) -> list[Any]:
        raise NotImplementedError

    def _handle(self, batch: list[Any]) -> None:
        raise NotImplementedError
