"""retrieve_neighbours: the pool's nearest pairs read from its embedding shards, never held whole."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synpref.retrieval.embed import Embedder, embeddings_table, read_embeddings
from synpref.retrieval.index import build_index, nearest
from synpref.retrieval.neighbours import PoolShards, retrieve_neighbours


def write_shards(directory, ids: list[str], vectors: np.ndarray, sizes: list[int], *, float32_lists: bool = False) -> list:
    """Shards of the given sizes (0: an empty shard), float16 as EmbedJob writes them, or float32 lists as it used to."""
    paths, start = [], 0
    for number, size in enumerate(sizes):
        rows = slice(start, start + size)
        if float32_lists:
            table = pa.table({"id": pa.array(ids[rows], pa.string()), "vector": pa.array(list(vectors[rows]), pa.list_(pa.float32()))})
        else:
            table = embeddings_table(ids[rows], vectors[rows].reshape(size, vectors.shape[1]))
        paths.append(directory / f"shard-{number:05d}.parquet")
        pq.write_table(table, paths[-1])
        start += size
    assert start == len(ids)
    return paths


def todays_neighbours(paths, excluded: set[str], queries, k: int) -> list[list[str]]:
    """Stage 1's path before retrieve_neighbours: every id and vector in memory, an exact index over the kept ones."""
    ids, vectors = read_embeddings(paths)
    keep = [i for i, pair_id in enumerate(ids) if pair_id not in excluded]
    return nearest(build_index(vectors[keep]), queries, [ids[i] for i in keep], k)


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def hand_worked_pool():
    angles = {"a": 0, "b": 10, "c": 20, "d": 30, "e": 90, "f": 180}  # degrees on the unit circle
    vectors = np.array([[math.cos(math.radians(t)), math.sin(math.radians(t))] for t in angles.values()])
    query = np.array([[1.0, 0.0]])
    return list(angles), vectors, query


def test_nearest_ids_of_a_hand_worked_pool_across_shards(tmp_path):
    ids, vectors, query = hand_worked_pool()
    paths = write_shards(tmp_path, ids, vectors, [2, 0, 3, 1])
    assert retrieve_neighbours(paths, {"b"}, query, 3) == [["a", "c", "d"]]
    assert retrieve_neighbours(paths, {"a", "c"}, -query, 2) == [["f", "e"]]  # from 180 degrees
    assert retrieve_neighbours(paths, set(), np.vstack([query, -query]), 1) == [["a"], ["f"]]
    assert retrieve_neighbours(paths, {"a", "b", "c", "d"}, query, 8) == [["e", "f"]]  # fewer kept than asked
    assert retrieve_neighbours(paths, set(ids), query, 8) == [[]]
    assert retrieve_neighbours(paths, pa.array(["b", "zz"]), query, 3) == [["a", "c", "d"]]  # an Arrow array of ids


def test_kept_positions_map_to_rows_around_the_excluded_ones(tmp_path, monkeypatch):
    monkeypatch.setattr("synpref.retrieval.neighbours.BATCH_ROWS", 3)
    ids = [f"p{i}" for i in range(10)]
    paths = write_shards(tmp_path, ids, np.eye(10, dtype=np.float32), [4, 6])
    pool = PoolShards(paths, {"p0", "p3", "p4", "p9", "not in the pool"})
    assert pool.count == 6 and pool.dimension == 10
    assert pool.rows(np.arange(6)).tolist() == [1, 2, 5, 6, 7, 8]
    # Read 3 rows at a time (1, 2 | - | 5, 6 | 7, 8), handed on once 3 are kept.
    assert [len(chunk) for chunk in pool.chunks()] == [4, 2]
    assert np.array_equal(np.concatenate(list(pool.chunks())), np.eye(10, dtype=np.float32)[[1, 2, 5, 6, 7, 8]])
    assert pool.ids(np.array([[5, 0, -1], [3, 2, 1]])) == [["p8", "p1"], ["p6", "p5", "p2"]]


@pytest.mark.parametrize("float32_lists", [False, True], ids=["float16", "float32 lists"])
@pytest.mark.parametrize("query_count", [7, 60], ids=["few queries", "many queries"])  # faiss searches under / over 20 queries differently
def test_the_exact_path_finds_what_todays_path_finds_ties_included(tmp_path, float32_lists, query_count):
    rng = np.random.default_rng(0)
    distinct = unit(rng.normal(size=(400, 24)))
    # Pairs that share a prompt share its embedding: duplicated vectors, so equal scores.
    vectors = np.concatenate([distinct, distinct[rng.integers(400, size=1_600)]])[rng.permutation(2_000)]
    ids = [f"pair-{i}" for i in rng.permutation(2_000)]
    paths = write_shards(tmp_path, ids, vectors, [700, 0, 1, 299, 1_000], float32_lists=float32_lists)
    excluded = set(rng.choice(ids, 150, replace=False).tolist()) | {ids[0], ids[699], ids[700], ids[-1]}
    queries = unit(distinct[rng.integers(400, size=query_count)] + 0.05 * rng.normal(size=(query_count, 24)))
    found = retrieve_neighbours(paths, excluded, queries, 8, exact_max=2_000)
    assert found == todays_neighbours(paths, excluded, queries, 8)
    assert all(len(row) == 8 and not excluded & set(row) for row in found)


def test_past_exact_max_the_compressed_index_reports_its_recall_on_the_queries(tmp_path):
    rng = np.random.default_rng(1)
    centres = unit(rng.normal(size=(50, 8)))  # 8 dimensions: PQ trains one k-means per byte, slowly
    vectors = unit(centres[rng.integers(50, size=12_000)] + 0.15 * rng.normal(size=(12_000, 8)))
    ids = [f"p{i}" for i in range(12_000)]
    paths = write_shards(tmp_path, ids, vectors, [5_000, 5_000, 2_000])
    excluded = {f"p{i}" for i in range(0, 12_000, 3)}
    queries = unit(centres[rng.integers(50, size=40)] + 0.15 * rng.normal(size=(40, 8)))
    logged: list[str] = []
    found = retrieve_neighbours(paths, excluded, queries, 8, exact_max=1_000, log=logged.append)
    assert all(len(row) == 8 and not excluded & set(row) for row in found)
    exact = retrieve_neighbours(paths, excluded, queries, 8, exact_max=8_000)
    recall = sum(len(set(f) & set(e)) for f, e in zip(found, exact)) / (8 * 40)
    assert recall >= 0.9  # measured 0.969
    assert logged == [f"index: IVF64,PQ8 nprobe 4 over 8,000 vectors, recall@8 {recall:.3f} against exact search on 40 of the 40 queries"]


def test_hashing_embeddings_count_shared_words_and_bigrams(tmp_path):
    embedder = Embedder("hashing", cache_dir=tmp_path / "cache")
    vectors = embedder.encode(["the cat sat", "the cat ran", "bread needs yeast", ""])
    assert vectors.shape == (4, 256) and vectors.dtype == np.float32
    # "the cat sat": the, cat, sat, "the cat", "cat sat": five features of one count each.
    assert np.count_nonzero(vectors[0]) == 5 and np.allclose(np.abs(vectors[0][vectors[0] != 0]), 1 / math.sqrt(5))
    assert vectors[0] @ vectors[1] == pytest.approx(3 / 5)  # the, cat, "the cat" shared
    assert vectors[0] @ vectors[2] == 0.0  # no word shared (and, in 256 columns, none collides)
    assert not vectors[3].any()  # no words: the zero vector
    assert np.array_equal(Embedder("hashing-256").encode(["the cat sat"])[0], vectors[0])
    assert Embedder("hashing-64").encode(["the cat sat"]).shape == (1, 64)
    assert not (tmp_path / "cache").exists()  # hashing is cheaper than a cache lookup
