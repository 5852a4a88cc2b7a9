"""`synpref ingest`: read sources into the workspace through Stage 0, resumably.

Records stream through worker processes in chunks (parse, convert, validate, decontaminate,
see `prepare.py`); this process deduplicates against everything kept so far and writes
Parquet shards. At every checkpoint the finished shard, the quarantine part and the run's
manifest are committed in that order, so an interrupted run resumes from its last checkpoint
without redoing committed work, and every count balances:
read = kept + duplicates + contaminated + quarantined, per source.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from synpref.data.readers import READERS, detect_format
from synpref.data.sources import Source, open_source, sample_records
from synpref.data.stage0 import (
    PAIR_SCHEMA,
    ChunkResult,
    ChunkTask,
    Decontaminator,
    init_worker,
    prepare_chunk,
)
from synpref.data.workspace import IngestRun, SourceCounts, Workspace, write_json_atomic
from synpref.errors import SynprefError
from synpref.text import printable

CHUNK_ITEMS = 1000
CHUNK_BYTES = 64 * 1024 * 1024  # a chunk of long lines is sent on before it has CHUNK_ITEMS
CHECKPOINT_ITEMS = 200_000  # at most this much work is redone after an interruption


@dataclass
class IngestOptions:
    sources: list[str]
    format: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)  # field -> column
    split: str | None = None  # None: the record's own `split`, else pool
    source_name: str | None = None  # overrides the default `source` of pairs
    decontaminate_against: list[str] = field(default_factory=list)  # files or benchmark names
    bench_dir: Path | None = None  # where benchmark names find their files
    workers: int = max(1, min(os.cpu_count() or 1, 8))


def load_benchmark_prompts(specs: list[str], bench_dir: Path | None = None, benchmark_prompts=None) -> dict[str, list[str]]:
    """First-turn prompts to decontaminate against, by name.

    A spec is a file (any supported format; named by its stem) or, when `benchmark_prompts` is
    given, a name it knows: `benchmark_prompts(name, bench_dir)` returns that benchmark's prompts,
    or None for a name it does not know (`synpref.eval.registry.benchmark_prompts` reads a
    registered benchmark's native files in `bench_dir/<name>/`).
    """
    from synpref.data.stage0 import parse_record
    from synpref.errors import RecordError

    prompts: dict[str, list[str]] = {}
    for spec in specs:
        if not Path(spec).exists() and benchmark_prompts is not None:
            found = benchmark_prompts(spec, bench_dir)
            if found is not None:
                prompts[spec] = found
                continue
        source = open_source(spec)
        found = []
        for _, payload in source.items():
            try:
                prompt = first_user_prompt(parse_record(payload))
            except RecordError:
                prompt = None
            if prompt:
                found.append(prompt)
        if not found:
            raise SynprefError(f"{printable(spec)}: found no first-turn prompts to decontaminate against")
        prompts[source.name] = found
    return prompts


def first_user_prompt(record: dict[str, Any]) -> str | None:
    """The first user message of a record in any supported format, or a bare prompt field."""
    for key in ("conversation", "conversations", "messages", "prompt", "chosen"):
        value = record.get(key)
        if isinstance(value, list):
            for message in value:
                if isinstance(message, dict) and message.get("role", message.get("from")) in ("user", "human"):
                    content = message.get("content", message.get("value"))
                    return content if isinstance(content, str) else None
        elif isinstance(value, str) and key == "prompt":
            return value
        elif isinstance(value, str) and key == "chosen" and "Human:" in value:
            return value.split("Human:", 1)[1].split("\n\nAssistant:", 1)[0].strip()
    for key in ("question", "instruction", "input"):
        if isinstance(record.get(key), str):
            return record[key]
    return None


def ingest(
    workspace: Workspace,
    options: IngestOptions,
    config=None,
    console=None,
    benchmark_prompts=None,
) -> IngestRun:
    """Ingest `options.sources` into `workspace`; returns the committed run.

    `benchmark_prompts` resolves benchmark names in `options.decontaminate_against` (see
    `load_benchmark_prompts`); data never imports the benchmarks itself."""
    config = config or workspace.config.prepare
    sources = [open_source(spec) for spec in options.sources]
    formats = [_format_of(source, options) for source in sources]
    prompts = load_benchmark_prompts(options.decontaminate_against, options.bench_dir, benchmark_prompts)
    decontaminator = Decontaminator(prompts, config.ngram) if prompts else None
    fingerprint = _fingerprint(options, sources, formats, config)
    run = _resume_or_start(workspace, fingerprint, sources, formats, console)
    if decontaminator is not None:
        run.decontamination = {
            name: {"prompts": len(found), "shorter_than_n": decontaminator.too_short[name]}
            for name, found in prompts.items()
        }
    writer = _RunWriter(workspace, run)
    seen = workspace.existing_ids() | writer.contaminated_ids()
    with _executor(options.workers, config, decontaminator) as execute:
        progress = _progress(console)
        with progress:
            for source, counts in zip(sources, run.sources):
                if counts.done:
                    continue
                task = progress.add_task(_markup(source), total=source.size())
                chunks = _chunks(source, counts, options, partial(progress.advance, task), config.max_record_bytes)
                for result in execute(chunks):
                    _account(result, counts, seen, writer)
                    progress.update(task, description=_describe(source, counts))
                    if writer.due():
                        writer.checkpoint()
                counts.done = True
                writer.checkpoint()
    run.status = "done"
    run.finished_at = _now()
    writer.checkpoint()
    return run


def _format_of(source: Source, options: IngestOptions) -> str:
    if options.format:
        if options.format not in READERS:
            raise SynprefError(f"unknown format {options.format!r}; known: {', '.join(sorted(READERS))}")
        return options.format
    sample = sample_records(source)
    for target, column in options.mapping.items():
        for record in sample:
            if column in record:
                record[target] = record.pop(column)
    return detect_format(sample, source.shown)


def _fingerprint(options, sources, formats, config) -> str:
    data = {
        "sources": [source.fingerprint() for source in sources],
        "formats": formats,
        "mapping": options.mapping,
        "split": options.split,
        "source_name": options.source_name,
        "decontaminate": [_decontamination_fingerprint(spec, options.bench_dir) for spec in options.decontaminate_against],
        "config": config.model_dump(),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _decontamination_fingerprint(spec: str, bench_dir: Path | None) -> list:
    if Path(spec).exists():
        return open_source(spec).fingerprint()
    files = sorted(p for p in (bench_dir / spec).rglob("*") if p.is_file())
    return [spec] + [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _resume_or_start(workspace, fingerprint, sources, formats, console) -> IngestRun:
    unfinished = [m for m in workspace.manifests() if m["status"] != "done"]
    for manifest in unfinished:
        if manifest["fingerprint"] == fingerprint:
            run = IngestRun.model_validate(manifest)
            if console:
                done = sum(s.position for s in run.sources)
                console.print(f"resuming ingest run {run.run_id} after {done:,} committed records")
            _remove_orphans(workspace)
            return run
        # Different arguments: the interrupted run is abandoned and its partial output removed.
        if console:
            console.print(f"discarding interrupted ingest run {manifest['run_id']} (other arguments)")
        (workspace.ingest_dir / f"{manifest['run_id']}.json").unlink()
    _remove_orphans(workspace)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + fingerprint[:6]
    return IngestRun(
        run_id=run_id,
        sequence=workspace.next_sequence(),
        fingerprint=fingerprint,
        started_at=_now(),
        sources=[SourceCounts(spec=s.spec, format=f) for s, f in zip(sources, formats)],
    )


def _remove_orphans(workspace: Workspace) -> None:
    """Delete shard and quarantine files that no manifest names (left by an interruption)."""
    known = {p.name for p in workspace.shards()} | {p.name for p in workspace.quarantine_files()}
    for directory in (workspace.pairs_dir, workspace.quarantine_dir):
        for path in directory.iterdir():
            if path.name not in known:
                path.unlink()


def _chunks(source: Source, counts: SourceCounts, options: IngestOptions, advance, max_record_bytes: int) -> Iterator[ChunkTask]:
    items: list = []
    size = 0
    for item in source.items(skip=counts.position, progress=advance, max_record_bytes=max_record_bytes):
        items.append(item)
        size += len(item[1]) if isinstance(item[1], bytes) else 0
        if len(items) == CHUNK_ITEMS or size >= CHUNK_BYTES:
            yield _task(source, counts, options, items)
            items, size = [], 0
    if items:
        yield _task(source, counts, options, items)


def _task(source, counts, options, items) -> ChunkTask:
    return ChunkTask(
        source_spec=source.spec,
        source_name=options.source_name or source.name,
        unit=source.unit,
        reader=counts.format,
        mapping=options.mapping,
        split=options.split,
        items=items,
    )


def _account(result: ChunkResult, counts: SourceCounts, seen: set[str], writer: _RunWriter) -> None:
    """Deduplicate one chunk's valid pairs against everything seen, and count every record."""
    ids = result.batch.column("id").to_pylist()
    keep = []
    for row, (pair_id, benchmarks) in enumerate(zip(ids, result.contaminated)):
        if pair_id in seen:
            counts.duplicates += 1
            keep.append(False)
            continue
        seen.add(pair_id)
        if benchmarks:
            counts.contaminated += 1
            for name in benchmarks:
                counts.contaminated_by[name] = counts.contaminated_by.get(name, 0) + 1
            writer.quarantine(_contaminated_entry(result.batch.slice(row, 1), benchmarks, counts.spec))
            keep.append(False)
            continue
        keep.append(True)
    kept = result.batch.filter(pa.array(keep, pa.bool_()))
    counts.kept += kept.num_rows
    counts.quarantined += len(result.quarantined)
    counts.read += result.read
    counts.position = result.last_number
    writer.write(kept)
    for entry in result.quarantined:
        writer.quarantine(entry)


def _contaminated_entry(row: pa.RecordBatch, benchmarks: list[str], spec: str) -> dict[str, Any]:
    pair = row.to_pylist()[0]
    return {
        "kind": "contaminated",
        "source": spec,
        "pair_id": pair["id"],
        "field": "conversation",
        "reason": "shares a 13-gram with a first-turn prompt of " + ", ".join(benchmarks),
        "raw": json.dumps(pair, ensure_ascii=False),
    }


class _RunWriter:
    """Owns the run's open shard and quarantine buffer; `checkpoint` commits both."""

    def __init__(self, workspace: Workspace, run: IngestRun):
        self.workspace = workspace
        self.run = run
        self.shard_rows = workspace.config.prepare.shard_rows
        self._writer: pq.ParquetWriter | None = None
        self._rows = 0
        self._entries: list[bytes] = []
        self._items_since = 0
        self._sequence = len(run.shards) + len(run.quarantine)
        self.manifest_path = workspace.ingest_dir / f"{run.run_id}.json"
        write_json_atomic(self.manifest_path, run.model_dump())

    def contaminated_ids(self) -> set[str]:
        ids = set()
        for name in self.run.quarantine:
            for line in (self.workspace.quarantine_dir / name).read_bytes().splitlines():
                entry = orjson.loads(line)
                if entry.get("kind") == "contaminated":
                    ids.add(entry["pair_id"])
        return ids

    def write(self, batch: pa.RecordBatch) -> None:
        self._items_since += 1
        if batch.num_rows == 0:
            return
        if self._writer is None:
            self._shard = f"{self.run.run_id}-{self._next()}.parquet"
            self._writer = pq.ParquetWriter(self._draft(), PAIR_SCHEMA, compression="zstd")
        self._writer.write_batch(batch)
        self._rows += batch.num_rows

    def quarantine(self, entry: dict[str, Any]) -> None:
        entry.setdefault("kind", "invalid")
        self._entries.append(orjson.dumps(entry, default=str))

    def due(self) -> bool:
        return self._rows >= self.shard_rows or self._items_since * CHUNK_ITEMS >= CHECKPOINT_ITEMS

    def checkpoint(self) -> None:
        if self._writer is not None:
            self._writer.close()
            os.replace(self._draft(), self.workspace.pairs_dir / self._shard)
            self.run.shards.append(self._shard)
            self._writer, self._rows = None, 0
        if self._entries:
            name = f"{self.run.run_id}-{self._next()}.jsonl"
            path = self.workspace.quarantine_dir / name
            path.with_name(name + ".tmp").write_bytes(b"\n".join(self._entries) + b"\n")
            os.replace(path.with_name(name + ".tmp"), path)
            self.run.quarantine.append(name)
            self._entries = []
        self._items_since = 0
        write_json_atomic(self.manifest_path, self.run.model_dump())

    def _draft(self) -> Path:
        """The open shard's name until it is committed. The leading dot makes pyarrow.dataset
        (and other readers of pairs/) skip it, so a killed run leaves nothing that breaks
        them; the next ingest removes it with the other orphans."""
        return self.workspace.pairs_dir / f".{self._shard}.tmp"

    def _next(self) -> str:
        self._sequence += 1
        return f"{self._sequence:05d}"


class _executor:
    """Runs `prepare_chunk` in order: in-process for one worker, else in a process pool with
    a bounded number of chunks in flight (so memory stays flat however big the input)."""

    def __init__(self, workers: int, config, decontaminator):
        self.workers = workers
        self.args = (config, decontaminator)
        self.pool = None

    def __enter__(self) -> Callable[[Iterator[ChunkTask]], Iterator[ChunkResult]]:
        if self.workers > 1:
            context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
            self.pool = context.Pool(self.workers, initializer=init_worker, initargs=(*self.args, True))
        else:
            init_worker(*self.args)
        return self._run

    def _run(self, tasks: Iterator[ChunkTask]) -> Iterator[ChunkResult]:
        if self.pool is None:
            for task in tasks:
                yield prepare_chunk(task)
            return
        pending: deque = deque()
        for task in tasks:
            pending.append(self.pool.apply_async(prepare_chunk, (task,)))
            if len(pending) >= 2 * self.workers + 2:
                result = pending.popleft()
                yield result.get()
        while pending:
            result = pending.popleft()
            yield result.get()

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.terminate() if exc[0] else self.pool.close()
            self.pool.join()


def _progress(console):
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=console is None,
        transient=False,
    )


def _markup(source: Source) -> str:
    """The source as rich markup: a "[" in a file name would otherwise start a style."""
    from rich.markup import escape

    return escape(source.shown)


def _describe(source: Source, counts: SourceCounts) -> str:
    return (
        f"{_markup(source)}: {counts.read:,} read, {counts.kept:,} kept, "
        f"{counts.duplicates:,} dup, {counts.quarantined:,} quarantined"
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
