"""Nearest-neighbour retrieval at pool scale: synthetic float16 embeddings on disk.

    python bench/retrieval.py [--sizes 100000 1000000] [--dir /tmp/synpref-retrieval]
    python bench/retrieval.py --neighbours [--sizes 1000 100000 1000000] [--dimension 256]
                              [--shard-rows 4096] [--queries 200] [--exact-max 200000]

Index (the default): for each size, write 384-d embeddings as Parquet shards of SHARD_ROWS
rows, build the index from the shards (`build_index_from_shards`: exact below
200k, IVF-PQ from 1M), and report build time, peak RSS of the process that built it, disk
size, query time per 1,000 queries and recall@8 against exact search on 200 sampled pool
vectors (each query's own vector left out).

--neighbours: what Stage 1 does with the shards: `retrieve_neighbours` of --queries query
vectors (new points of the pool's topics), k = 8, none excluded; reports its time, its peak RSS
and the RSS after imports, and recall@8 against exact search as it logs it (exact search:
1 by construction). Shards of --shard-rows rows, written by this process.

Each size runs in its own process, so peak RSS is that size's alone.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import time
from pathlib import Path

import numpy as np

DIMENSION = 384  # all-MiniLM-L6-v2
SHARD_ROWS = 100_000  # rows per shard of the index benchmark
BLOCK = 10_000  # vectors generated at once: the topic spreads they gather are BLOCK * RANK * dimension floats
TOPICS, RANK = 1_000, 16  # topics, each a centre and a low-rank spread (see tests/retrieval/test_scale.py)
K = 8  # the paper's k_max


class Topics:
    """Unit vectors near a low-dimensional manifold, as text embeddings lie: a topic's centre
    plus a low-rank spread plus a little noise."""

    def __init__(self, dimension: int):
        self.rng = np.random.default_rng(0)
        self.centres = self.rng.normal(size=(TOPICS, dimension)).astype(np.float32)
        self.spreads = 0.5 * self.rng.normal(size=(TOPICS, RANK, dimension)).astype(np.float32)

    def sample(self, rows: int) -> np.ndarray:
        return np.concatenate([self._block(min(BLOCK, rows - start)) for start in range(0, rows, BLOCK)])

    def _block(self, rows: int) -> np.ndarray:
        topic = self.rng.integers(TOPICS, size=rows)
        vectors = self.centres[topic] + np.einsum("nr,nrd->nd", self.rng.normal(size=(rows, RANK)).astype(np.float32), self.spreads[topic])
        vectors += 0.1 * self.rng.normal(size=vectors.shape).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_embeddings(directory: Path, count: int, topics: Topics | None = None, shard_rows: int = SHARD_ROWS) -> list[Path]:
    """Shards as an EmbedJob writes them (`embeddings_table`, pyarrow's default writer options)."""
    import pyarrow.parquet as pq

    from synpref.retrieval.embed import embeddings_table

    directory.mkdir(parents=True, exist_ok=True)
    topics = topics or Topics(DIMENSION)
    paths = []
    for start in range(0, count, shard_rows):
        vectors = topics.sample(min(shard_rows, count - start))
        paths.append(directory / f"shard-{len(paths):05d}.parquet")
        pq.write_table(embeddings_table([f"p{i}" for i in range(start, start + len(vectors))], vectors), paths[-1])
    return paths


def measure(count: int, root: str, results) -> None:
    """In a fresh process: write `count` 384-d vectors, build their index, measure it."""
    import faiss

    from synpref.retrieval.embed import read_embeddings
    from synpref.retrieval.index import build_index_from_shards, recall_at_k

    paths = write_embeddings(Path(root) / f"{count}", count)
    disk = sum(path.stat().st_size for path in paths)
    started = time.perf_counter()
    ids, index = build_index_from_shards(paths, log=print)
    build = time.perf_counter() - started
    peak_rss = _memory("VmHWM")  # before the exact search below
    _ids, vectors = read_embeddings(paths[:1], dtype="float16")
    queries = vectors[np.random.default_rng(2).choice(len(vectors), 1_000, replace=False)].astype(np.float32)
    started = time.perf_counter()
    index.search(queries, 8)
    query = time.perf_counter() - started
    _ids, vectors = read_embeddings(paths, dtype="float16")
    positions = np.random.default_rng(3).choice(count, 200, replace=False)
    recall = recall_at_k(index, vectors, vectors[positions], 8, query_positions=positions)
    results.put((count, type(index).__name__, build, peak_rss, disk, faiss.serialize_index(index).nbytes, query, recall))


def measure_neighbours(directory: str, exact_max: int, results) -> None:
    """In a fresh process: retrieve_neighbours over the shards in `directory`, its peak RSS included."""
    import faiss  # noqa: F401  imported before the baseline RSS, as a real run would have
    import pyarrow.parquet  # noqa: F401

    import synpref.retrieval.embed  # noqa: F401  (pydantic, through the data contract)
    from synpref.retrieval.neighbours import retrieve_neighbours

    baseline = _memory("VmRSS")
    paths = sorted(Path(directory).glob("shard-*.parquet"))
    queries = np.load(Path(directory) / "queries.npy")
    logged = []
    started = time.perf_counter()
    neighbours = retrieve_neighbours(paths, set(), queries, K, exact_max=exact_max, log=logged.append)
    seconds = time.perf_counter() - started
    recalls = [float(line.split(f"recall@{K} ")[1].split()[0]) for line in logged if line.endswith("queries")]
    assert all(len(row) == K for row in neighbours)
    results.put((seconds, baseline, _memory("VmHWM"), recalls[0] if recalls else 1.0))


def _memory(field: str) -> int:
    """Bytes of a /proc/self/status memory line. Peak RSS is VmHWM, not getrusage: a spawned
    child's ru_maxrss starts from the parent's RSS when it forked, kept across exec."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field + ":"))


def in_child(target, *args):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=target, args=(*args, results))
    process.start()
    result = results.get()
    process.join()
    return result


def index_table(args) -> None:
    rows = []
    for count in args.sizes:
        rows.append(in_child(measure, count, args.dir))
        shutil.rmtree(Path(args.dir) / f"{count}", ignore_errors=True)
    print(f"{'vectors':>10} {'index':>12} {'build s':>8} {'peak RSS MB':>11} {'disk MB':>8} {'index MB':>8} "
          f"{'ms/1k queries':>13} {'recall@8':>8}")
    for count, kind, build, peak_rss, disk, index_bytes, query, recall in rows:
        print(f"{count:>10,} {kind:>12} {build:>8.1f} {peak_rss / 2**20:>11.0f} {disk / 2**20:>8.0f} "
              f"{index_bytes / 2**20:>8.0f} {query * 1000:>13.1f} {recall:>8.3f}")


def neighbours_table(args) -> None:
    print(f"{args.dimension}-d float16, shards of {args.shard_rows:,} rows, {args.queries} queries, k = {K}, "
          f"exact up to {args.exact_max:,}")
    print(f"{'vectors':>10} {'search':>7} {'seconds':>8} {'RSS after imports MB':>20} {'peak RSS MB':>11} {'recall@8':>8}")
    for count in args.sizes:
        directory = Path(args.dir) / f"neighbours-{count}"
        topics = Topics(args.dimension)
        write_embeddings(directory, count, topics, args.shard_rows)
        np.save(directory / "queries.npy", topics.sample(args.queries))
        seconds, baseline, peak, recall = in_child(measure_neighbours, str(directory), args.exact_max)
        shutil.rmtree(directory, ignore_errors=True)
        search = "exact" if count <= args.exact_max else "IVF-PQ"
        print(f"{count:>10,} {search:>7} {seconds:>8.1f} {baseline / 2**20:>20.0f} {peak / 2**20:>11.0f} {recall:>8.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="pool sizes (default 100000 1000000; --neighbours adds 1000)")
    parser.add_argument("--dir", default="/tmp/synpref-retrieval")
    parser.add_argument("--neighbours", action="store_true", help="measure retrieve_neighbours instead of the index build")
    parser.add_argument("--dimension", type=int, default=256, help="--neighbours: vector size (hashing-256's)")
    parser.add_argument("--shard-rows", type=int, default=4096, help="--neighbours: rows per embedding shard")
    parser.add_argument("--queries", type=int, default=200, help="--neighbours: query vectors (gold pairs)")
    parser.add_argument("--exact-max", type=int, default=200_000, help="--neighbours: exact search up to this many vectors")
    args = parser.parse_args()
    if args.neighbours:
        args.sizes = args.sizes or [1_000, 100_000, 1_000_000]
        neighbours_table(args)
    else:
        args.sizes = args.sizes or [100_000, 1_000_000]
        index_table(args)


if __name__ == "__main__":
    main()
