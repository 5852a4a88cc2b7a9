"""The pool as Parquet shards, and the executors that run a per-shard function over them.

A shard job reads one input shard and writes one output shard atomically (write, then
rename). An output that exists is finished work: a killed run, rerun, skips it. The same job
object runs in this process (default) or as `ray.data` `map_batches` tasks, one shard per
batch, on a local Ray runtime or the cluster named by RAY_ADDRESS. On a cluster the
workspace must be on storage every node sees (NFS, a mounted bucket).

On Ray each actor asks for one CPU and, when its job's model runs on CUDA, a GPU or a fraction
of one (`shard_gpus`); the actor lives across shards, so a job that loads its model on first
use loads it once per actor, not once per shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synpref.errors import SynprefError

MANIFEST = "manifest.json"


def write_shards(source: Any, directory: Path, shard_size: int) -> list[Path]:
    """Cut pair rows into shards of the pair schema, once: a finished manifest wins.

    `source`: a function of the columns it should read (None: all) returning record batches of
    pair rows, e.g. `lambda columns: workspace.batches("pool", columns=columns)`, read as a
    stream (one shard in memory at a time); or a list of (split, PreferencePair). With a
    finished manifest only the ids are read again, to check the shards hold the same pairs;
    `source=None` takes the finished shards as they are.
    """
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / MANIFEST
    batches = _pair_batches(source)
    if manifest.is_file():
        written = json.loads(manifest.read_text())
        if source is not None and (_fingerprint(batches(["id"])), shard_size) != (written["fingerprint"], written["shard_size"]):
            raise SynprefError(f"{directory} holds shards of other pairs or another shard size; remove the run folder to start over")
        return [directory / name for name in written["shards"]]
    if source is None:
        raise SynprefError(f"{directory}: no shards written yet and no pairs to write")
    names, digest, count = [], hashlib.blake2b(digest_size=16), 0
    for table in _rechunk(batches(None), shard_size):
        digest.update("".join(table.column("id").to_pylist()).encode())
        name = f"shard-{len(names):05d}.parquet"
        write_table_atomic(pq, table, directory / name)
        names.append(name)
        count += table.num_rows
    tmp = manifest.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"shards": names, "shard_size": shard_size, "pairs": count, "fingerprint": digest.hexdigest()}))
    os.replace(tmp, manifest)
    return [directory / name for name in names]


def _pair_batches(source: Any) -> Callable[[list[str] | None], Any]:
    if source is None or callable(source):
        return source

    def batches(columns):
        from synpref.data.stage0 import pairs_to_batch

        for start in range(0, len(source), 4096):
            chunk = source[start : start + 4096]
            batch = pairs_to_batch([p for _, p in chunk], [s for s, _ in chunk], [json.dumps(p.stored_meta()) for _, p in chunk])
            yield batch if columns is None else batch.select(columns)

    return batches


def _fingerprint(batches) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for batch in batches:
        digest.update("".join(batch.column("id").to_pylist()).encode())
    return digest.hexdigest()


def _rechunk(batches, rows: int):
    """Tables of exactly `rows` rows (the last one shorter) from a stream of record batches."""
    import pyarrow as pa

    buffered, size = [], 0
    for batch in batches:
        buffered.append(batch)
        size += batch.num_rows
        while size >= rows:
            table = pa.Table.from_batches(buffered)
            yield table.slice(0, rows).combine_chunks()
            rest = table.slice(rows)
            buffered, size = rest.to_batches(), rest.num_rows
    if size:
        yield pa.Table.from_batches(buffered).combine_chunks()


def write_table_atomic(pq: Any, table: Any, path: Path, **options: Any) -> None:
    """`pq.write_table(table, path, **options)` by rename: a file that exists is complete."""
    import pyarrow as pa

    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, **options)
    os.replace(tmp, path)


def pending(inputs: list[Path], output_dir: Path) -> list[tuple[Path, Path]]:
    """(input, output) of the shards whose output is not written yet."""
    output_dir.mkdir(parents=True, exist_ok=True)
    pairs = [(path, output_dir / path.name) for path in inputs]
    return [(source, target) for source, target in pairs if not target.is_file()]


def run_shards(
    job: Callable[[Path, Path], None], inputs: list[Path], output_dir: Path, *,
    executor: str = "local", workers: int = 2, gpus_per_shard: float | None = None,
) -> int:
    """Run `job(input, output)` for every unfinished shard; returns how many ran.

    `gpus_per_shard` (Ray only) overrides what `shard_gpus(job)` would ask for.
    """
    todo = pending(inputs, output_dir)
    if not todo:
        return 0
    if executor == "ray":
        gpus = shard_gpus(job) if gpus_per_shard is None else gpus_per_shard
        _run_on_ray(job, todo, workers, gpus)
    else:
        from tqdm.auto import tqdm

        for source, target in tqdm(todo, desc=getattr(job, "name", "shards"), disable=len(todo) < 4):
            job(source, target)
    return len(todo)


def shard_gpus(job: Any) -> float:
    """GPUs one Ray actor of `job` asks for: the job's `gpus` attribute when it has one, else 1
    when its `device` is CUDA, else 0.

    A fraction (0.5) puts two actors on one GPU: worth it when a model fills half its memory.
    """
    gpus = getattr(job, "gpus", None)
    if gpus is not None:
        return float(gpus)
    return 1.0 if str(getattr(job, "device", "") or "").startswith("cuda") else 0.0


class _RayShardTask:
    """A Ray actor around a shard job: the job (and the models it loads) lives across shards."""

    def __init__(self, job: Callable[[Path, Path], None]):
        self.job = job

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        for source, target in zip(batch["input"], batch["output"]):
            self.job(Path(source), Path(target))
        return {"output": list(batch["output"])}


def _run_on_ray(job: Callable[[Path, Path], None], todo: list[tuple[Path, Path]], workers: int, gpus: float) -> None:
    import ray

    if not ray.is_initialized():
        # RAY_ADDRESS=ray://head:10001 (or auto) connects to a cluster; unset starts a local runtime.
        ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True, log_to_driver=False)
    items = [{"input": str(source), "output": str(target)} for source, target in todo]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    results = dataset.map_batches(
        _RayShardTask, fn_constructor_args=(job,), batch_size=1, batch_format="numpy",
        concurrency=min(workers, len(items)), num_cpus=1, num_gpus=gpus,
    ).take_all()
    missing = [target for _, target in todo if not target.is_file()]
    if len(results) != len(todo) or missing:
        raise RuntimeError(f"ray: {len(missing)} shard outputs missing, e.g. {missing[:1]}")
