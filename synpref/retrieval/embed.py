"""Embeddings of (conversation, attributes) text, stored in the workspace by pair id.

    WORKSPACE/embeddings/<model>/<shard>.parquet   columns id, vector (float16 fixed-size list)

Vectors are L2-normalised, so inner product is cosine similarity. A shard that exists is
never recomputed: embedding resumes after an interruption. They are stored as float16: half
the disk and memory of float32 (40M x 384 pairs: 31 GB instead of 61 GB), and a unit vector's
components lose under 1e-3 of precision, far below the gaps that order neighbours; they are
read back as float32, which faiss wants. Shards written as float32 lists read back the same.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from synpref.data.models import Attributes

DEFAULT_EMBEDDER = "minilm-l6"  # the bundled all-MiniLM-L6-v2
MAX_TEXT_CHARS = 2000  # MiniLM reads 256 tokens; more text only costs tokenization time
HASHING = re.compile(r"hashing(?:-(\d+))?")  # "hashing" or "hashing-<dimension>": see Embedder
HASHING_DIMENSION = 256  # dense columns of "hashing": 512 bytes a vector as float16


def embedding_text(conversation: list[dict[str, str]], attributes: Attributes | None) -> str:
    """What a pair is found by: its history and, when known, its attributes (the paper's (x, a))."""
    history = "\n".join(f"{m['role']}: {m['content']}" for m in conversation)
    if attributes is None:
        return history[-MAX_TEXT_CHARS:]
    described = (
        f"[{attributes.task_category.value}; {attributes.objectivity}; "
        f"controversiality {attributes.controversiality}; wants {', '.join(attributes.desired_attributes)}]"
    )
    # The end of the history is the question being answered: keep it when cutting.
    return (described + "\n" + history[-(MAX_TEXT_CHARS - len(described)):])


def model_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


class Embedder:
    """A sentence-transformers model by embedded name (minilm-l6), local path or Hub id, or
    "hashing" / "hashing-<dimension>".

    "hashing" is for measuring the machinery (embedding jobs, shards, indexes at 1M pairs), not
    for finding similar pairs: word unigram and bigram counts hashed into HASHING_DIMENSION
    signed columns (scikit-learn's HashingVectorizer), L2-normalised. It needs no download, is
    the same on every machine, and costs about 0.4 ms for a 150-word text on one core (1M pool
    texts: minutes, where MiniLM on a CPU takes hours); two texts are near only when they share
    words of two letters or more. An empty text is the zero vector.

    With `cache_dir`, each distinct text is embedded once, ever (a pool holds many pairs per
    prompt: 19,713 shared-data pairs have 3,169 distinct histories). "hashing" skips the cache:
    it would hold every vector in memory to save that 0.4 ms.
    """

    def __init__(self, name: str = DEFAULT_EMBEDDER, batch_size: int = 64, cache_dir: Path | None = None):
        self.name, self.batch_size = name, batch_size
        self._model: Any = None
        self._cache = None
        hashing = HASHING.fullmatch(name)
        self.hashing_dimension = int(hashing.group(1) or HASHING_DIMENSION) if hashing else None
        if cache_dir is not None and hashing is None:
            from synpref.data.vectors import shared_cache

            self._cache = shared_cache(Path(cache_dir) / model_slug(name), desc=f"embedding ({name})")

    def encode(self, texts: list[str]):
        """float32 array (len(texts), dim), L2-normalised."""
        if self._cache is None:
            return self._encode(texts)
        keys = [hashlib.blake2b(text.encode(), digest_size=16).hexdigest() for text in texts]
        return self._cache.get(keys, dict(zip(keys, texts)), self._encode)

    def _encode(self, texts: list[str]):
        import numpy as np

        if self.hashing_dimension is not None:
            return self._hash(texts)
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            from synpref.rm.models import resolve_model_path

            self._model = SentenceTransformer(resolve_model_path(self.name), device="cpu")
        if not texts:
            return np.zeros((0, self._model.get_sentence_embedding_dimension()), dtype=np.float32)
        vectors = self._model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return vectors.astype(np.float32)

    def _hash(self, texts: list[str]):
        import numpy as np

        if self._model is None:
            from sklearn.feature_extraction.text import HashingVectorizer

            # Signed columns, so colliding words cancel on average instead of adding up.
            self._model = HashingVectorizer(n_features=self.hashing_dimension, ngram_range=(1, 2), alternate_sign=True, norm="l2")
        return self._model.transform(texts).toarray().astype(np.float32)


def embeddings_dir(workspace_root: Path, model: str) -> Path:
    return Path(workspace_root) / "embeddings" / model_slug(model)


def embeddings_table(ids: list[str], vectors: Any, dtype: str = "float16"):
    """The Arrow table of one embedding shard: id, vector as a fixed-size list of `dtype`
    (float16: half the disk and reads of float32; a neighbour whose score ties to within
    float16's rounding may change places)."""
    import numpy as np
    import pyarrow as pa

    vectors = np.asarray(vectors, dtype=dtype)
    dimension = vectors.shape[1] if vectors.ndim == 2 else 0
    values = pa.array(np.ascontiguousarray(vectors).reshape(-1), pa.from_numpy_dtype(vectors.dtype))
    return pa.table({"id": pa.array(ids, pa.string()), "vector": pa.FixedSizeListArray.from_arrays(values, dimension)})


def vectors_of(table: Any, dtype: str = "float32"):
    """The vector column of an embedding shard (float16 fixed-size or float32 list) as a matrix."""
    import numpy as np

    column = table.column("vector").combine_chunks()
    if len(column) == 0:
        return np.zeros((0, 0), dtype=dtype)
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(column), -1).astype(dtype, copy=False)


def iter_embeddings(paths: list[Path], dtype: str = "float16"):
    """(ids, matrix) per shard, in order: a pool larger than memory is read one shard at a time."""
    import pyarrow.parquet as pq

    for path in paths:
        table = pq.read_table(path)
        yield table.column("id").to_pylist(), vectors_of(table, dtype)


def read_embeddings(paths: list[Path], dtype: str = "float32"):
    """(ids, matrix) from embedding shards, in shard order (float32 for faiss by default)."""
    import numpy as np

    ids, blocks = [], []
    for shard_ids, vectors in iter_embeddings(paths, dtype):
        ids += shard_ids
        if len(vectors):
            blocks.append(vectors)
    matrix = np.concatenate(blocks) if blocks else np.zeros((0, 0), dtype=dtype)
    return ids, matrix
