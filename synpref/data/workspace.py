"""A workspace: one project's state on disk, so that every step can stop and resume.

    DIR/synpref.yaml   validated config (unknown keys are errors)
    DIR/pairs/         Parquet shards of normalized pairs, immutable once written
    DIR/quarantine/    rejected input records with their location and reason (JSONL)
    DIR/ingest/        one manifest per ingest run: what it read, kept and wrote

Only shards named in a manifest belong to the workspace: a shard left behind by an
interrupted run is not visible, and the next ingest removes it.

A pair id is in one split. Ingest never stores an id twice, but the gold export of the label
app (synpref/label/export.py) appends a judged pool pair again under its new split: the copy
in the later shard wins, and `pair_table` and `iter_pairs` show only that one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from synpref.config import load_yaml, validated
from synpref.data.stage0 import PrepareConfig
from synpref.errors import SynprefError

CONFIG_FILE = "synpref.yaml"


class WorkspaceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    name: str
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write by rename, so a reader (or a resumed run) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    os.replace(tmp, path)


class Workspace:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        config_path = self.root / CONFIG_FILE
        if not config_path.is_file():
            raise SynprefError(f"{self.root} is not a workspace (no {CONFIG_FILE}); run `synpref init {root}`")
        self.config = load_config(config_path)

    @classmethod
    def init(cls, root: str | Path, name: str | None = None) -> Workspace:
        root = Path(root)
        if (root / CONFIG_FILE).exists():
            raise SynprefError(f"{root / CONFIG_FILE} already exists")
        root.mkdir(parents=True, exist_ok=True)
        config = WorkspaceConfig(name=name or root.resolve().name)
        text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        (root / CONFIG_FILE).write_text(text)
        return cls(root)

    @property
    def pairs_dir(self) -> Path:
        return self._dir("pairs")

    @property
    def quarantine_dir(self) -> Path:
        return self._dir("quarantine")

    @property
    def ingest_dir(self) -> Path:
        return self._dir("ingest")

    def run_dir(self, step: str) -> Path:
        """runs/<step>/: what one step writes (stage1, stage2, judge-gate, ablation, eval, demo, ...)."""
        return self.root / "runs" / step

    @property
    def decisions_file(self) -> Path:
        """Stage 2's decision on each pool pair, with its reason (synpref/curate/stage2.py)."""
        return self.run_dir("stage2") / "decisions.parquet"

    @property
    def llm_cache_dir(self) -> Path:
        """LLM responses by request hash (synpref/annotate/cache.py)."""
        return self.root / "cache" / "llm"

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path

    def manifests(self) -> list[dict[str, Any]]:
        """Ingest manifests, oldest first."""
        return [json.loads(p.read_text()) for p in sorted(self.ingest_dir.glob("*.json"))]

    def shards(self) -> list[Path]:
        return [self.pairs_dir / name for m in self.manifests() for name in m["shards"]]

    def quarantine_files(self) -> list[Path]:
        return [self.quarantine_dir / name for m in self.manifests() for name in m["quarantine"]]

    def pair_table(self, columns: list[str] | None = None):
        """All pairs as one Arrow table (the `PAIR_SCHEMA` columns, or the ones asked for)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from synpref.data.stage0 import PAIR_SCHEMA

        shards = self.shards()
        tables = [pq.read_table(path, columns=columns) for path in shards]
        if not tables:
            schema = PAIR_SCHEMA if columns is None else pa.schema([PAIR_SCHEMA.field(c) for c in columns])
            return schema.empty_table()
        table = pa.concat_tables(tables)
        latest = _latest_copies(shards)
        return table if latest is None else table.filter(latest)

    def iter_pairs(self, split: str | None = None) -> Iterator[tuple[str, Any]]:
        """(split, PreferencePair) for every stored pair, shard by shard, each id once."""
        import pyarrow.parquet as pq

        from synpref.data.models import Message, PreferencePair

        shards = self.shards()
        latest = _latest_copies(shards)
        position = -1
        for path in shards:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
                for row in batch.to_pylist():
                    position += 1
                    if latest is not None and not latest[position]:
                        continue  # an older copy: the pair has moved to another split since
                    if split is not None and row["split"] != split:
                        continue
                    yield row["split"], PreferencePair.model_construct(
                        id=row["id"],
                        conversation=[Message(**m) for m in row["conversation"]],
                        chosen=Message(**row["chosen"]),
                        rejected=Message(**row["rejected"]),
                        source=row["source"],
                        meta=json.loads(row["meta"]),
                    )

    def existing_ids(self) -> set[str]:
        return set(self.pair_table(columns=["id"]).column("id").to_pylist())


def _latest_copies(shards: list[Path]):
    """A mask over the rows of `shards` read in order, true for the last copy of each pair id;
    None when no id repeats (the usual case, so nothing needs filtering)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not shards:
        return None
    ids = pa.concat_tables([pq.read_table(path, columns=["id"]) for path in shards]).column("id")
    rows = pa.table({"id": ids, "row": pa.array(np.arange(len(ids)))})
    last = rows.group_by("id").aggregate([("row", "max")]).column("row_max").to_numpy()
    if len(last) == len(ids):
        return None
    mask = np.zeros(len(ids), dtype=bool)
    mask[last] = True
    return mask


def load_config(path: Path) -> WorkspaceConfig:
    return validated(WorkspaceConfig, load_yaml(path, f"{path}: not valid YAML") or {}, str(path))
