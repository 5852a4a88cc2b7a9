"""Tokenization for the server: the inputs of all waiting requests in one batched tokenizer call.

Each request becomes an `EncodeJob`: its inputs as the texts the tokenizer takes (the chat
template rendered, an encoder's text pair split), then, once tokenized, the checks and cuts of
`limits.RequestEncoder` applied per input. `EncodeStage` is one thread per server process that
takes every job waiting, tokenizes all their texts in one call per kind of input (the fast
tokenizer's batch call runs in Rust without the GIL, so the event loop keeps serving), and hands
each job its ids or its error. An item that fails (too long, not a conversation) fails only its
own request, with the same message as when items were tokenized one at a time; the first failing
item of a request, in input order, is the one reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from synpref.serve.worker import JobThread

# What one input needs from the tokenizer: (text, text_pair or None, add_special_tokens), or None
# for token ids sent as such.
Texts = tuple[str, "str | None", bool] | None


@dataclass
class EncodeJob:
    """One request's inputs. `prepare(item)` gives the texts of an item (or raises ValueError for
    a bad one); `finish(item, ids)` checks and cuts its ids (`ids` None where prepare gave None)."""

    items: Sequence[Any]
    prepare: Callable[[Any], Texts]
    finish: Callable[[Any, list[int] | None], list[int]]
    future: asyncio.Future | None = None
    loop: asyncio.AbstractEventLoop | None = None
    texts: list[Texts | Exception] = field(default_factory=list)


def encode_jobs(tokenizer: Any, jobs: Sequence[EncodeJob], *, batched: bool = True) -> list[list[list[int]] | Exception]:
    """Each job's token ids (or the error of its first failing item), tokenizing all jobs' texts
    together: one tokenizer call per (text pair or not, special tokens or not); `batched=False`
    tokenizes each text on its own (the reference the batched call must equal)."""
    groups: dict[tuple[bool, bool], list[tuple[int, int]]] = {}
    for j, job in enumerate(jobs):
        job.texts = []
        for i, item in enumerate(job.items):
            try:
                texts = job.prepare(item)
            except Exception as error:  # noqa: BLE001 - this request's answer (422 for a ValueError)
                job.texts.append(error)
                break  # the items after the first bad one are never looked at, as one at a time
            job.texts.append(texts)
            if texts is not None:
                groups.setdefault((texts[1] is not None, texts[2]), []).append((j, i))
    ids: dict[tuple[int, int], list[int]] = {}
    for (paired, special), refs in groups.items():
        texts = [jobs[j].texts[i][0] for j, i in refs]
        pairs = [jobs[j].texts[i][1] for j, i in refs] if paired else None
        if batched:
            encoded = tokenizer(texts, pairs, add_special_tokens=special)["input_ids"]
        else:
            encoded = [tokenizer(t, p, add_special_tokens=special)["input_ids"] for t, p in zip(texts, pairs or [None] * len(texts))]
        ids.update(zip(refs, encoded))
    return [_finish(j, job, ids) for j, job in enumerate(jobs)]


def _finish(j: int, job: EncodeJob, ids: dict) -> list[list[int]] | Exception:
    sequences = []
    for i, texts in enumerate(job.texts):
        if isinstance(texts, Exception):
            return texts
        try:
            sequences.append(job.finish(job.items[i], ids.get((j, i))))
        except Exception as error:  # noqa: BLE001 - this request's answer (422 for a ValueError)
            return error
    return sequences


class EncodeStage(JobThread):
    """One tokenizer thread per process; requests await `encode(job)` from the event loop."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        super().__init__("synpref-tokenizer")

    async def encode(self, job: EncodeJob) -> list[list[int]]:
        job.loop = asyncio.get_running_loop()
        job.future = job.loop.create_future()
        self._jobs.put(job)
        return await job.future

    def _gather(self, first: EncodeJob) -> list[EncodeJob]:
        jobs = [first]
        while (following := self._next()) is not None:  # everything waiting joins the same call
            jobs.append(following)
        return jobs

    def _handle(self, jobs: list[EncodeJob]) -> None:
        for each, result in zip(jobs, self._encode(jobs)):
            each.loop.call_soon_threadsafe(_settle, each.future, result)

    def _encode(self, jobs: list[EncodeJob]) -> list[list[list[int]] | Exception]:
        try:
            return encode_jobs(self.tokenizer, jobs)
        except Exception:  # the tokenizer refused the batch: each request alone, so only the culprit fails
            results = []
            for job in jobs:
                try:
                    results += encode_jobs(self.tokenizer, [job])
                except Exception as error:  # noqa: BLE001
                    results.append(error)
            return results


def _settle(future: asyncio.Future, result: list[list[int]] | Exception) -> None:
    if future.done():
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
