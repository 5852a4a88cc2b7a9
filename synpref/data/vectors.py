"""Vectors by key, computed once and kept on disk: backbone features, embeddings.

    DIRECTORY/part-<first key>-<n>.parquet     columns key, vector (float32 list)

A part is written atomically when its chunk is finished, so a killed run, rerun, recomputes
only the chunk it was in. Missing items are computed in a fixed order (shortest first, then
by key), so the chunks after a resume are the ones a clean run makes, with the same values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHUNK = 512  # items per part: the most a kill can cost


class VectorCache:
    """Vectors by key in atomically written Parquet parts; `get` computes only what is missing."""

    def __init__(self, directory: Path, *, desc: str = "vectors", show_progress: bool | None = None):
        self.directory, self.desc, self.show_progress = Path(directory), desc, show_progress
        self._rows: dict[str, int] = {}
        self._blocks: list[Any] = []
        self._matrix: Any = None
        self.computed = 0  # items this object computed
        self._read_parts()

    def get(self, keys: list[str], items: dict[str, Any], compute):
        """float32 matrix, one row per key, in order; `compute(list of items)` fills the gaps.

        `items` maps each key not yet cached to what `compute` needs; missing ones are computed
        shortest first (then by key) in chunks of `CHUNK`, each chunk saved when done.
        """
        import numpy as np

        missing = {k: items[k] for k in dict.fromkeys(keys) if k not in self._rows}
        if missing:
            self._compute(missing, compute)
        matrix = self._all()
        return matrix[np.asarray([self._rows[k] for k in keys], dtype=np.int64)] if keys else matrix[:0]

    def _compute(self, missing: dict[str, Any], compute) -> None:
        from tqdm.auto import tqdm

        order = sorted(missing, key=lambda k: (_size(missing[k]), k))
        show = self.show_progress if self.show_progress is not None else len(order) >= 256
        self.directory.mkdir(parents=True, exist_ok=True)
        with tqdm(total=len(order), desc=self.desc, disable=not show) as bar:
            for start in range(0, len(order), CHUNK):
                chunk = order[start : start + CHUNK]
                self._write_part(chunk, compute([missing[k] for k in chunk]))
                self.computed += len(chunk)
                bar.update(len(chunk))

    def _write_part(self, keys: list[str], vectors) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"key": keys, "vector": pa.array(list(vectors), pa.list_(pa.float32()))})
        path = self.directory / f"part-{keys[0][:16]}-{len(keys)}.parquet"
        tmp = path.with_name("." + path.name + ".tmp")  # a leading dot: readers skip it
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        self._add(keys, vectors)

    def _read_parts(self) -> None:
        import numpy as np
        import pyarrow.parquet as pq

        for path in sorted(self.directory.glob("part-*.parquet")) if self.directory.is_dir() else []:
            table = pq.read_table(path)
            # Straight from Arrow's buffer: a list of Python floats per row costs ~100x more.
            values = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            vectors = np.asarray(values, dtype=np.float32).reshape(table.num_rows, -1)
            self._add(table.column("key").to_pylist(), vectors)

    def _add(self, keys: list[str], vectors) -> None:
        import numpy as np

        offset = sum(len(block) for block in self._blocks)
        self._blocks.append(np.asarray(vectors, dtype=np.float32))
        self._matrix = None
        for position, key in enumerate(keys):
            self._rows[key] = offset + position

    def _all(self):
        import numpy as np

        if self._matrix is None:
            self._matrix = np.concatenate(self._blocks) if self._blocks else np.zeros((0, 0), np.float32)
            self._blocks = [self._matrix]
        return self._matrix

    def keys(self) -> set[str]:
        return set(self._rows)


def _size(item: Any) -> int:
    return len(item) if isinstance(item, str) else sum(len(t or "") for t in item)


_SHARED: dict[Path, VectorCache] = {}


def shared_cache(directory: Path, **options: Any) -> VectorCache:
    """One `VectorCache` per directory in this process: every model of a run reads it once."""
    key = Path(directory).resolve()
    if key not in _SHARED:
        _SHARED[key] = VectorCache(directory, **options)
    return _SHARED[key]
