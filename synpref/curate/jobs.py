"""The per-shard functions: each reads one input shard and writes one output shard.

They are small picklable objects so the same job runs in this process or in a Ray actor;
models are loaded on first use and kept for the next shards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synpref.curate.executors import write_table_atomic
from synpref.data.models import PreferencePair


def read_shard_pairs(path: Path) -> list[PreferencePair]:
    import pyarrow.parquet as pq

    from synpref.data.workspace import pair_from_row

    return [pair_from_row(row) for row in pq.read_table(path).to_pylist()]


@dataclass
class EmbedJob:
    """(id, vector) of each pair's (conversation, attributes) text."""

    embedder: str
    workspace_root: str
    dtype: str = "float16"  # of the stored vectors
    name: str = "embed"
    _state: dict = field(default_factory=dict, repr=False)

    def __call__(self, source: Path, target: Path) -> None:
        import pyarrow.parquet as pq

        from synpref.annotate.runner import load_attributes
        from synpref.retrieval.embed import Embedder, embedding_text, embeddings_table

        if not self._state:
            self._state["embedder"] = Embedder(self.embedder, cache_dir=Path(self.workspace_root) / "cache" / "embeddings")
            self._state["attributes"] = load_attributes(Path(self.workspace_root))
        pairs = read_shard_pairs(source)
        texts = [embedding_text([m.model_dump() for m in p.conversation], self._state["attributes"].get(p.id)) for p in pairs]
        vectors = self._state["embedder"].encode(texts)
        # No dictionary encoding: vectors never repeat a value often enough to gain, and a
        # dictionary-encoded float16 column reads back ~4x slower.
        write_table_atomic(pq, embeddings_table([p.id for p in pairs], vectors, self.dtype), target, use_dictionary=False)


@dataclass
class ScoreJob:
    """Rewards of both responses under the best RM and the gold RM, and each RM's p."""

    best_model: str
    gold_model: str
    max_length: int = 512
    token_budget: int = 8192
    workspace_root: str | None = None  # where head-only RMs find cached features
    name: str = "score"
    _state: dict = field(default_factory=dict, repr=False)

    def __call__(self, source: Path, target: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from synpref.retrieval.adaptive import preference_probability

        pairs = read_shard_pairs(source)
        columns: dict[str, Any] = {"id": [p.id for p in pairs]}
        for role, model in (("best", self.best_model), ("gold", self.gold_model)):
            chosen, rejected = self._scorer(model).score_pairs(pairs)
            columns[f"{role}_chosen"], columns[f"{role}_rejected"] = chosen, rejected
            columns[f"{role}_p"] = [preference_probability(c, r) for c, r in zip(chosen, rejected)]
        write_table_atomic(pq, pa.table(columns), target)

    def _scorer(self, model: str):
        if model not in self._state:
            from synpref.curate.config import CurateConfig
            from synpref.curate.training import load_scorer

            root = Path(self.workspace_root) if self.workspace_root else None
            self._state[model] = load_scorer(model, CurateConfig(), root, max_length=self.max_length, token_budget=self.token_budget)
        return self._state[model]


@dataclass
class JudgeJob:
    """The judges' verdicts for the shard's pairs in `selected` (those below the band, within
    budget), with which kind decided each (verifier | llm | "")."""

    workspace_root: str
    job: dict[str, Any]
    selected: frozenset
    gold: list  # the gold pairs: the judges' examples
    judge_dir: str
    name: str = "judge"

    def __call__(self, source: Path, target: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from synpref.curate.judging import judge_pairs

        pairs = [p for p in read_shard_pairs(source) if p.id in self.selected]
        verdicts = judge_pairs(Path(self.workspace_root), pairs, self.gold, self.job, Path(self.judge_dir) / source.stem)
        ids = [p.id for p in pairs]
        table = pa.table({
            "id": pa.array(ids, pa.string()),
            "llm_verdict": pa.array([verdicts.get(i, ("unsure", 0.0))[0] for i in ids], pa.string()),
            "llm_agreement": pa.array([verdicts.get(i, ("unsure", 0.0))[1] for i in ids], pa.float64()),
            "decided_by": pa.array([verdicts[i].decided_by if i in verdicts else "" for i in ids], pa.string()),
        })
        write_table_atomic(pq, table, target)
