"""Embeddings stored as float16, and the index past memory: IVF-PQ from a size, with its recall measured."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from synpref.retrieval.embed import embeddings_table, read_embeddings
from synpref.retrieval.index import build_index, build_index_from_shards, recall_at_k

POINTS, DIMENSION = 50_000, 384


def clustered_unit_vectors(count: int, dimension: int = DIMENSION, topics: int = 100, rank: int = 16, seed: int = 0) -> np.ndarray:
    """Topics, each a centre and a low-rank spread, as text embeddings lie near a low-dimensional
    manifold; float16, as stored. Isotropic noise instead would make every neighbour a coin toss."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(topics, dimension)).astype(np.float32)
    spreads = 0.5 * rng.normal(size=(topics, rank, dimension)).astype(np.float32)
    topic = rng.integers(topics, size=count)
    vectors = centres[topic] + np.einsum("nr,nrd->nd", rng.normal(size=(count, rank)).astype(np.float32), spreads[topic])
    vectors += 0.1 * rng.normal(size=(count, dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float16)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_unit_vectors(POINTS)


def test_embeddings_are_stored_as_float16_and_old_float32_shards_still_read(tmp_path):
    import pyarrow as pa

    vectors = np.array([[0.6, 0.8], [1.0, 0.0]], dtype=np.float32)
    pq.write_table(embeddings_table(["a", "b"], vectors), tmp_path / "new.parquet")
    pq.write_table(pa.table({"id": ["c"], "vector": pa.array([[0.0, 1.0]], pa.list_(pa.float32()))}), tmp_path / "old.parquet")
    assert pq.read_schema(tmp_path / "new.parquet").field("vector").type == pa.list_(pa.float16(), 2)
    ids, matrix = read_embeddings([tmp_path / "new.parquet", tmp_path / "old.parquet"])
    assert ids == ["a", "b", "c"] and matrix.dtype == np.float32
    assert np.allclose(matrix, [[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]], atol=1e-3)


def test_ivf_pq_past_its_threshold_keeps_recall_and_reports_it(vectors):
    logged = []
    index = build_index(vectors, exact_max=10_000, compressed_min=20_000, log=logged.append)
    assert type(index).__name__ == "IndexIVFPQ" and index.ntotal == POINTS
    positions = np.random.default_rng(1).choice(POINTS, 200, replace=False)
    recall = recall_at_k(index, vectors, vectors[positions], 8, query_positions=positions)
    assert recall >= 0.8  # measured 0.863 (IVF256,PQ96, nprobe 16) on the build's own 200 queries
    assert len(logged) == 1 and logged[0].startswith("index: IVF256,PQ96 nprobe 16 over 50,000 vectors, recall@8 0.")
    assert float(logged[0].split("recall@8 ")[1].split()[0]) >= 0.8


def test_exact_search_below_the_threshold_has_recall_one(vectors):
    index = build_index(vectors[:5_000], exact_max=10_000, compressed_min=20_000)
    assert type(index).__name__ == "IndexFlatIP"
    queries = vectors[:50]
    assert recall_at_k(index, vectors[:5_000], queries, 8) == 1.0
    assert recall_at_k(index, vectors[:5_000], queries, 8, query_positions=np.arange(50)) == 1.0


def test_an_index_from_shards_on_disk_matches_ids_to_positions(vectors, tmp_path):
    paths = []
    for shard, start in enumerate(range(0, 30_000, 10_000)):
        paths.append(tmp_path / f"shard-{shard:05d}.parquet")
        pq.write_table(embeddings_table([f"p{i}" for i in range(start, start + 10_000)], vectors[start : start + 10_000]), paths[-1])
    ids, index = build_index_from_shards(paths, exact_max=10_000, compressed_min=20_000)
    assert type(index).__name__ == "IndexIVFPQ" and ids == [f"p{i}" for i in range(30_000)]
    _scores, found = index.search(vectors[[7, 12_345, 29_999]].astype(np.float32), 1)
    assert [ids[p] for p in found[:, 0]] == ["p7", "p12345", "p29999"]
