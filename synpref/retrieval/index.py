"""A faiss inner-product index over pair embeddings, chosen by pool size.

    up to EXACT_MAX (200k)          IndexFlatIP: exact; a query costs O(pool), 0.1 s per 1,000 at 200k
    up to COMPRESSED_MIN (1M)       HNSW over float32: recall near 1, O(log pool) per query;
                                    1.5 GB of vectors + 0.3 GB of graph at 1M, so it stops there
    from COMPRESSED_MIN             IVF-PQ: COARSE_PER_SQRT * sqrt(n) lists, each vector kept as
                                    PQ_BYTES bytes (40M pairs: 4 GB instead of 61 GB float32);
                                    trained on a sample, then filled chunk by chunk, so that no
                                    more than CHUNK_ROWS float32 vectors are in memory at once

HNSW rather than IVF-Flat in the middle band: it needs no training pass and its recall does not
depend on how well k-means fits the clusters. Every approximate index reports its recall@k
against exact search on RECALL_QUERIES of its own vectors when it is built (`log`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

EXACT_MAX = 200_000  # pools up to this size get exact search by default
COMPRESSED_MIN = 1_000_000  # pools from this size get IVF-PQ: float32 HNSW no longer fits comfortably
HNSW_NEIGHBOURS = 32  # HNSW graph degree M: faiss's usual value for 384-dim vectors
HNSW_EF_SEARCH = 128  # candidates explored per query: higher is slower and more exact
COARSE_PER_SQRT = 1  # IVF lists = this * sqrt(n), rounded to a power of two (1M -> 1024)
TRAIN_PER_LIST = 64  # k-means sample per list (faiss warns under 39); 1M -> 65,536 vectors
PQ_BYTES = 96  # PQ sub-quantizers of 8 bits: 4 dimensions each at 384-d
PQ_TRAIN_PER_CODE = 32  # PQ k-means sample per code (256 codes): 4-dim k-means is slow in faiss
PQ_TRAIN_ITERATIONS = 10  # k-means rounds per sub-quantizer (faiss default 25; recall barely moves)
PROBE_FRACTION = 1 / 16  # lists searched per query (nprobe): 64 of 1,024
CHUNK_ROWS = 100_000  # vectors converted to float32 and added at once (150 MB at 384-d)
RECALL_QUERIES = 200  # vectors of the pool used as queries to measure recall at build time
RECALL_K = 8  # the paper's k_max


def build_index(
    vectors: Any, *, exact_max: int = EXACT_MAX, compressed_min: int = COMPRESSED_MIN,
    log: Callable[[str], None] | None = None,
) -> Any:
    """An inner-product index over L2-normalised vectors (so scores are cosines).

    `vectors` may be float16 (as stored) or float32; at IVF-PQ sizes they are converted one
    chunk at a time.
    """
    import numpy as np

    count = len(vectors)
    if count >= compressed_min:
        dimension = vectors.shape[1]
        return build_compressed_index(lambda: (vectors[s : s + CHUNK_ROWS] for s in range(0, count, CHUNK_ROWS)),
                                      count, dimension, log=log)
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dimension = vectors.shape[1]
    if count <= exact_max:
        index = faiss.IndexFlatIP(dimension)
        index.add(vectors)
        return index
    index = faiss.IndexHNSWFlat(dimension, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = HNSW_EF_SEARCH
    index.add(vectors)
    if log is not None:
        positions = np.random.default_rng(0).choice(count, min(RECALL_QUERIES, count), replace=False)
        recall = recall_at_k(index, vectors, vectors[positions], RECALL_K, query_positions=positions)
        log(f"index: HNSW over {count:,} vectors, recall@{RECALL_K} {recall:.3f} against exact on {len(positions)} queries")
    return index


def build_index_from_shards(
    paths: list[Path], *, exact_max: int = EXACT_MAX, compressed_min: int = COMPRESSED_MIN,
    log: Callable[[str], None] | None = None,
) -> tuple[list[str], Any]:
    """(ids, index) over embedding shards on disk; at IVF-PQ sizes the vectors are never all in memory."""
    import pyarrow.parquet as pq

    from synpref.retrieval.embed import iter_embeddings, read_embeddings

    count = sum(pq.ParquetFile(path).metadata.num_rows for path in paths)
    if count < compressed_min:
        ids, vectors = read_embeddings(paths)
        return ids, build_index(vectors, exact_max=exact_max, compressed_min=compressed_min, log=log)
    ids: list[str] = []
    dimension = next(vectors.shape[1] for _, vectors in iter_embeddings(paths) if len(vectors))

    def chunks() -> Iterator[Any]:
        ids.clear()
        for shard_ids, vectors in iter_embeddings(paths):
            ids.extend(shard_ids)
            yield vectors

    return ids, build_compressed_index(chunks, count, dimension, log=log)


def build_compressed_index(
    chunks: Callable[[], Iterable[Any]], count: int, dimension: int, *,
    pq_bytes: int = PQ_BYTES, queries: Any = None, recall_k: int = RECALL_K, log: Callable[[str], None] | None = None,
) -> Any:
    """IVF-PQ over `count` vectors that `chunks()` yields in order (each call a fresh pass).

    Two passes: the first keeps a uniform sample to train on and RECALL_QUERIES of the vectors
    as recall queries (each leaves itself out), the second adds every chunk and, alongside,
    computes the recall queries' exact neighbours. With `queries` (what the index is built to
    answer), recall is measured on up to RECALL_QUERIES of those instead.
    """
    import faiss
    import numpy as np

    lists = ivf_lists(count)
    # PQ splits each vector into equal parts: the largest part count up to pq_bytes dividing d.
    pq_bytes = next(m for m in range(min(pq_bytes, dimension), 0, -1) if dimension % m == 0)
    rng = np.random.default_rng(0)
    train_positions = np.sort(rng.choice(count, min(count, TRAIN_PER_LIST * lists), replace=False))
    query_positions = np.sort(rng.choice(count, min(count, RECALL_QUERIES), replace=False))
    train, own = _gather(chunks(), [train_positions, query_positions])
    if queries is None:
        queries, measured_on = own, f"{len(own)} of its vectors"
    else:
        sample = np.sort(rng.choice(len(queries), min(len(queries), RECALL_QUERIES), replace=False))
        measured_on, query_positions = f"{len(sample)} of the {len(queries)} queries", None
        queries = np.ascontiguousarray(queries[sample], dtype=np.float32)
    index = faiss.index_factory(dimension, f"IVF{lists},PQ{pq_bytes}", faiss.METRIC_INNER_PRODUCT)
    ivfpq = faiss.downcast_index(index)
    ivfpq.pq.cp.max_points_per_centroid = PQ_TRAIN_PER_CODE
    ivfpq.pq.cp.min_points_per_centroid = PQ_TRAIN_PER_CODE // 2  # faiss warns, once per sub-quantizer, under 39
    ivfpq.pq.cp.niter = PQ_TRAIN_ITERATIONS
    ivfpq.do_polysemous_training = False  # on by default; minutes of training for a Hamming filter we do not use
    index.train(train)
    del train
    faiss.extract_index_ivf(index).nprobe = max(1, round(lists * PROBE_FRACTION))
    exact = _ExactTopK(queries, recall_k + (query_positions is not None))
    for vectors in chunks():
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        exact.add(vectors)
        index.add(vectors)
    if index.ntotal != count:
        raise ValueError(f"chunks held {index.ntotal:,} vectors, expected {count:,}")
    recall = _recall(index, queries, exact.positions(), recall_k, query_positions)
    if log is not None:
        log(f"index: IVF{lists},PQ{pq_bytes} nprobe {faiss.extract_index_ivf(index).nprobe} over {count:,} vectors, "
            f"recall@{recall_k} {recall:.3f} against exact search on {measured_on}")
    return index


def ivf_lists(count: int) -> int:
    """IVF list count: COARSE_PER_SQRT * sqrt(n), a power of two, at least 16."""
    return max(16, 2 ** round(math.log2(max(1.0, COARSE_PER_SQRT * math.sqrt(count)))))


def nearest(index: Any, queries: Any, ids: list[str], count: int) -> list[list[str]]:
    """For each query, the ids of its `count` nearest vectors, nearest first (ties by position)."""
    import numpy as np

    if count <= 0 or index.ntotal == 0:
        return [[] for _ in range(len(queries))]
    _scores, positions = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(count, index.ntotal))
    return [[ids[p] for p in row if p >= 0] for row in positions]


def recall_at_k(index: Any, exact: Any, queries: Any, k: int, *, query_positions: Any = None) -> float:
    """Mean share of each query's k exact nearest neighbours that `index` also returns in its top k.

    `exact` is the indexed vectors (a matrix, searched by brute force) or an exact faiss index.
    With `query_positions` (the queries are indexed vectors), each query's own position is left
    out of both lists: otherwise every query finds itself and recall reads higher than it is.
    """
    import numpy as np

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    extra = 0 if query_positions is None else 1
    if hasattr(exact, "search"):
        _scores, truth = exact.search(queries, k + extra)
    else:
        top = _ExactTopK(queries, k + extra)
        for start in range(0, len(exact), CHUNK_ROWS):
            top.add(np.asarray(exact[start : start + CHUNK_ROWS], dtype=np.float32))
        truth = top.positions()
    return _recall(index, queries, truth, k, query_positions)


def _recall(index: Any, queries: Any, truth: Any, k: int, query_positions: Any) -> float:
    extra = 0 if query_positions is None else 1
    _scores, found = index.search(queries, k + extra)
    hits = 0
    for row, (expected, returned) in enumerate(zip(truth, found)):
        own = {int(query_positions[row])} if query_positions is not None else set()
        expected = [p for p in expected if p not in own][:k]
        returned = [p for p in returned if p not in own and p >= 0][:k]
        hits += len(set(expected) & set(returned))
    return hits / (k * len(queries))


class _ExactTopK:
    """Exact top-k positions of a few queries over vectors that arrive in chunks."""

    def __init__(self, queries: Any, k: int):
        import numpy as np

        self.queries, self.k, self.offset = queries, k, 0
        self.scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        self.found = np.zeros((len(queries), 0), dtype=np.int64)

    def add(self, vectors: Any) -> None:
        import numpy as np

        scores = np.concatenate([self.scores, self.queries @ vectors.T], axis=1)
        found = np.concatenate([self.found, np.broadcast_to(np.arange(len(vectors)) + self.offset, (len(self.queries), len(vectors)))], axis=1)
        self.offset += len(vectors)
        if scores.shape[1] > self.k:
            keep = np.argpartition(-scores, self.k - 1, axis=1)[:, : self.k]
            scores, found = np.take_along_axis(scores, keep, 1), np.take_along_axis(found, keep, 1)
        self.scores, self.found = scores, found

    def positions(self) -> Any:
        import numpy as np

        order = np.argsort(-self.scores, axis=1, kind="stable")
        return np.take_along_axis(self.found, order, 1)


def _gather(chunks: Iterable[Any], wanted: list[Any]) -> list[Any]:
    """The float32 rows at each sorted position array in `wanted`, in one pass over `chunks`."""
    import numpy as np

    taken: list[list[Any]] = [[] for _ in wanted]
    offset = 0
    for vectors in chunks:
        for rows, positions in zip(taken, wanted):
            inside = positions[(positions >= offset) & (positions < offset + len(vectors))] - offset
            if len(inside):
                rows.append(np.asarray(vectors[inside], dtype=np.float32))
        offset += len(vectors)
    return [np.ascontiguousarray(np.concatenate(rows)) for rows in taken]
