"""Nearest-neighbour retrieval at pool scale: synthetic 384-d float16 embeddings on disk.

    python bench/retrieval.py [--sizes 100000 1000000] [--dir /tmp/synpref-retrieval]

For each size: write the embeddings as Parquet shards (one chunk of CHUNK rows at a time),
build the index from the shards as Stage 1 would (exact below 200k, IVF-PQ from 1M), and report
build time, peak RSS of the process that built it, disk size, query time per 1,000 queries and
recall@8 against exact search on 200 sampled pool vectors (each query's own vector left out).
Each size runs in its own process, so peak RSS is that size's alone.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import time
from pathlib import Path

import numpy as np

DIMENSION = 384  # all-MiniLM-L6-v2
CHUNK = 100_000  # rows per shard, generated and written at once
TOPICS, RANK = 1_000, 16  # topics, each a centre and a low-rank spread (see tests/retrieval/test_scale.py)


def write_embeddings(directory: Path, count: int) -> list[Path]:
    import pyarrow.parquet as pq

    from synpref.retrieval.embed import embeddings_table

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(TOPICS, DIMENSION)).astype(np.float32)
    spreads = 0.5 * rng.normal(size=(TOPICS, RANK, DIMENSION)).astype(np.float32)
    paths = []
    for shard, start in enumerate(range(0, count, CHUNK)):
        rows = min(CHUNK, count - start)
        topic = rng.integers(TOPICS, size=rows)
        vectors = centres[topic] + np.einsum("nr,nrd->nd", rng.normal(size=(rows, RANK)).astype(np.float32), spreads[topic])
        vectors += 0.1 * rng.normal(size=(rows, DIMENSION)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        paths.append(directory / f"shard-{shard:05d}.parquet")
        pq.write_table(embeddings_table([f"p{i}" for i in range(start, start + rows)], vectors), paths[-1])
    return paths


def measure(count: int, root: str, results) -> None:
    import faiss

    from synpref.retrieval.embed import read_embeddings
    from synpref.retrieval.index import build_index_from_shards, recall_at_k

    paths = write_embeddings(Path(root) / f"{count}", count)
    disk = sum(path.stat().st_size for path in paths)
    started = time.perf_counter()
    ids, index = build_index_from_shards(paths, log=print)
    build = time.perf_counter() - started
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before the exact search below
    _ids, vectors = read_embeddings(paths[:1], dtype="float16")
    queries = vectors[np.random.default_rng(2).choice(len(vectors), 1_000, replace=False)].astype(np.float32)
    started = time.perf_counter()
    index.search(queries, 8)
    query = time.perf_counter() - started
    _ids, vectors = read_embeddings(paths, dtype="float16")
    positions = np.random.default_rng(3).choice(count, 200, replace=False)
    recall = recall_at_k(index, vectors, vectors[positions], 8, query_positions=positions)
    results.put((count, type(index).__name__, build, peak_rss, disk, faiss.serialize_index(index).nbytes, query, recall))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dir", default="/tmp/synpref-retrieval")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    rows = []
    for count in args.sizes:
        results = context.Queue()
        process = context.Process(target=measure, args=(count, args.dir, results))
        process.start()
        rows.append(results.get())
        process.join()
        shutil.rmtree(Path(args.dir) / f"{count}", ignore_errors=True)
    print(f"{'vectors':>10} {'index':>12} {'build s':>8} {'peak RSS MB':>11} {'disk MB':>8} {'index MB':>8} "
          f"{'ms/1k queries':>13} {'recall@8':>8}")
    for count, kind, build, peak_rss, disk, index_bytes, query, recall in rows:
        print(f"{count:>10,} {kind:>12} {build:>8.1f} {peak_rss / 2**20:>11.0f} {disk / 2**20:>8.0f} "
              f"{index_bytes / 2**20:>8.0f} {query * 1000:>13.1f} {recall:>8.3f}")


if __name__ == "__main__":
    main()
