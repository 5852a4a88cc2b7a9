"""The pool pairs nearest to a few queries, read from the pool's embedding shards on disk.

The pool is read in record batches and never held whole: not its ids (a needed id is read
back from its shard at the end) and not its vectors, beyond what the search keeps:

    kept pairs <= exact_max     the kept vectors as one float32 matrix, searched exactly as
                                `build_index` + `nearest` search it (same faiss call, same
                                neighbours, ties included): exact_max * dimension * 4 bytes
    more                        IVF-PQ (`build_compressed_index`): PQ_BYTES + 8 bytes a vector
                                and a float32 training sample, filled batch by batch; its
                                recall@k against exact search, on up to RECALL_QUERIES of
                                these queries, is logged

Excluded pairs (already labelled, discarded) are left out as today's path leaves them out:
the positions searched are those of the kept pairs in shard order.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from synpref.retrieval.index import EXACT_MAX, build_compressed_index

BATCH_ROWS = 4_096  # vectors read and handed on at once: 4 MB of float32 at 256 dimensions


def retrieve_neighbours(
    shard_paths: list[Path], excluded: Collection[str], queries: Any, k: int, *,
    exact_max: int = EXACT_MAX, log: Callable[[str], None] | None = None,
) -> list[list[str]]:
    """For each query, the ids of the `k` kept pool pairs nearest to it, nearest first.

    `shard_paths` are embedding shards (id, vector), `excluded` ids to leave out (a set or a
    pyarrow string array), `queries` L2-normalised vectors (one row each). Fewer than `k`
    kept pairs: each query gets all of them.
    """
    import numpy as np

    pool = PoolShards(shard_paths, excluded)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, pool.count)
    if k <= 0 or len(queries) == 0:
        return [[] for _ in range(len(queries))]
    if pool.count <= exact_max:
        return pool.ids(_exact_search(pool, queries, k))
    index = build_compressed_index(pool.chunks, pool.count, pool.dimension, queries=queries, recall_k=k, log=log)
    _scores, positions = index.search(queries, k)
    return pool.ids(positions)


def _exact_search(pool: PoolShards, queries: Any, k: int) -> Any:
    """Kept positions of each query's k nearest: IndexFlatIP's search, without its copy of the vectors."""
    import faiss
    import numpy as np

    matrix = np.empty((pool.count, pool.dimension), dtype=np.float32)
    filled = 0
    for vectors in pool.chunks():
        matrix[filled : filled + len(vectors)] = vectors
        filled += len(vectors)
    _scores, positions = faiss.knn(queries, matrix, k, metric=faiss.METRIC_INNER_PRODUCT)
    return positions


class PoolShards:
    """Embedding shards minus excluded ids, addressed by position among the kept rows.

    Only the excluded rows are held (their global row numbers, sorted), not a row number per
    kept position: kept position p is global row p + the number of excluded rows before that
    row, found by one binary search.
    """

    def __init__(self, paths: list[Path], excluded: Collection[str] = ()):
        import numpy as np
        import pyarrow.parquet as pq

        self.paths = [Path(p) for p in paths]
        rows = [pq.ParquetFile(p).metadata.num_rows for p in self.paths]
        self.starts = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)])  # global row of each shard's first row
        self.excluded_rows = self._excluded_rows(excluded)
        self.count = int(self.starts[-1]) - len(self.excluded_rows)

    def _excluded_rows(self, excluded: Collection[str]) -> Any:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if len(excluded) == 0:
            return np.zeros(0, dtype=np.int64)
        values = excluded if isinstance(excluded, pa.Array | pa.ChunkedArray) else pa.array(list(excluded), pa.string())
        found = []
        for start, path in zip(self.starts, self.paths):
            hit = pc.is_in(pq.read_table(path, columns=["id"]).column("id"), value_set=values)
            found.append(np.flatnonzero(hit.to_numpy(zero_copy_only=False)) + start)
        return np.concatenate(found)

    @cached_property
    def dimension(self) -> int:
        import pyarrow.parquet as pq

        for path, start, end in zip(self.paths, self.starts, self.starts[1:]):
            if end > start:
                batch = next(pq.ParquetFile(path).iter_batches(batch_size=1, columns=["vector"]))
                return len(batch.column("vector")[0])
        return 0

    def chunks(self) -> Iterator[Any]:
        """The kept vectors, in order, as float32 (faiss's type), about BATCH_ROWS at a time
        whatever the shard size: faiss adds and searches small batches slowly."""
        import numpy as np

        pending, held = [], 0
        for vectors in self._kept_batches():
            pending.append(vectors)
            held += len(vectors)
            if held >= BATCH_ROWS:
                yield np.concatenate(pending)
                pending, held = [], 0
        if pending:
            yield np.concatenate(pending)

    def _kept_batches(self) -> Iterator[Any]:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        from synpref.retrieval.embed import vectors_of

        for path, first in zip(self.paths, self.starts):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=["vector"]):
                vectors = vectors_of(pa.Table.from_batches([batch]))
                low, high = np.searchsorted(self.excluded_rows, [first, first + len(batch)])
                excluded = self.excluded_rows[low:high] - first
                first += len(batch)
                vectors = np.delete(vectors, excluded, axis=0) if len(excluded) else vectors
                if len(vectors):
                    yield vectors

    def rows(self, positions: Any) -> Any:
        """Global row numbers of kept positions."""
        import numpy as np

        # The kept position at which each excluded row sits: rows before it that are kept.
        shifted = self.excluded_rows - np.arange(len(self.excluded_rows))
        return positions + np.searchsorted(shifted, positions, side="right")

    def ids(self, positions: Any) -> list[list[str]]:
        """The ids at a matrix of kept positions (-1: none), row by row, read from only the shards that hold them."""
        import numpy as np
        import pyarrow.parquet as pq

        positions = np.asarray(positions, dtype=np.int64)
        wanted = np.unique(self.rows(positions[positions >= 0]))
        shard_of = np.searchsorted(self.starts, wanted, side="right") - 1
        found: dict[int, str] = {}
        for shard in np.unique(shard_of):
            rows = wanted[shard_of == shard]
            column = pq.read_table(self.paths[shard], columns=["id"]).column("id")
            found.update(zip(rows.tolist(), column.take(rows - self.starts[shard]).to_pylist()))
        return [[found[r] for r in self.rows(row[row >= 0]).tolist()] for row in positions]
