"""A workspace: one project's state on disk, so that every step can stop and resume.

    DIR/synpref.yaml   validated config (unknown keys are errors)
    DIR/pairs/         Parquet shards of normalized pairs, immutable once written
    DIR/quarantine/    rejected input records with their location and reason (JSONL)
    DIR/ingest/        one manifest per ingest run: what it read, kept and wrote

Only shards named in a manifest belong to the workspace: a shard left behind by an
interrupted run is not visible, and the next ingest removes it.

A pair id is in one split. Ingest never stores an id twice; `add_pairs` (the label app's gold
export) moves a pair to another split by storing it again: the copy in the later shard wins,
and `pair_table` and `iter_pairs` show only that one.

The store owns the row format (`PAIR_SCHEMA` rows <-> `pair_from_row`), the manifests, and every
path a step writes under the workspace (`run_dir`, `decisions_file`, `llm_cache_dir`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime, timezone
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


# An ingest manifest: what one run read, kept and wrote. Only shards a manifest names are visible.
class SourceCounts(BaseModel):
    spec: str
    format: str
    read: int = 0
    kept: int = 0
    duplicates: int = 0
    contaminated: int = 0
    quarantined: int = 0
    contaminated_by: dict[str, int] = Field(default_factory=dict)
    position: int = 0  # number of the last item committed
    done: bool = False

    def balances(self) -> bool:
        return self.read == self.kept + self.duplicates + self.contaminated + self.quarantined


class IngestRun(BaseModel):
    run_id: str
    # Runs are read in this order (then by manifest name). The run id starts with the second
    # the run began and ends in hex from its arguments, so two runs in one second would
    # otherwise be read in an order that changes with file paths and times, and so would
    # everything trained on the pairs. 0: a manifest written before runs were numbered.
    sequence: int = 0
    fingerprint: str
    status: str = "running"
    started_at: str
    finished_at: str | None = None
    sources: list[SourceCounts]
    decontamination: dict[str, dict[str, int]] = Field(default_factory=dict)
    shards: list[str] = Field(default_factory=list)
    quarantine: list[str] = Field(default_factory=list)


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
    def label_requests_dir(self) -> Path:
        """Pairs a step asks humans to label: one JSON file per request, loaded into the annotation
        app's queue (synpref/label/work_queue.py); the labels come back by `synpref label export`."""
        return self.root / "label" / "requests"

    @property
    def llm_cache_dir(self) -> Path:
        """LLM responses by request hash (synpref/annotate/cache.py)."""
        return self.root / "cache" / "llm"

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path

    def manifests(self) -> list[dict[str, Any]]:
        """Ingest manifests in the order their runs started (`IngestRun.sequence`)."""
        named = [(p.name, json.loads(p.read_text())) for p in self.ingest_dir.glob("*.json")]
        return [manifest for _name, manifest in sorted(named, key=lambda item: (item[1].get("sequence", 0), item[0]))]

    def next_sequence(self) -> int:
        """The `IngestRun.sequence` of a run starting now."""
        return 1 + max((manifest.get("sequence", 0) for manifest in self.manifests()), default=0)

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
                    yield row["split"], pair_from_row(row)

    def add_pairs(self, rows: list[tuple[str, Any]], run_id: str, spec: str, format: str) -> int:
        """Append (split, PreferencePair) rows as one shard with its manifest (shard first, then the
        manifest that makes it visible). A pair already stored under another split moves: the
        later copy wins in `pair_table` and `iter_pairs`."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from synpref.data.stage0 import PAIR_SCHEMA

        if not rows:
            return 0
        table = [{**pair.model_dump(mode="json"), "split": split, "meta": json.dumps(pair.stored_meta(), ensure_ascii=False)}
                 for split, pair in rows]
        shard = f"{run_id}-00001.parquet"
        # Under a dot name until complete: pyarrow.dataset skips such files, so an interrupted
        # write never leaves a half-written shard in pairs/ (the next ingest removes it).
        draft = self.pairs_dir / f".{shard}.tmp"
        pq.write_table(pa.Table.from_pylist(table, schema=PAIR_SCHEMA), draft, compression="zstd")
        os.replace(draft, self.pairs_dir / shard)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        counts = SourceCounts(spec=spec, format=format, read=len(rows), kept=len(rows), done=True)
        run = IngestRun(run_id=run_id, sequence=self.next_sequence(), fingerprint=run_id, status="done",
                        started_at=now, finished_at=now, sources=[counts], shards=[shard])
        write_json_atomic(self.ingest_dir / f"{run_id}.json", run.model_dump())
        return len(rows)

    def existing_ids(self) -> set[str]:
        return set(self.pair_table(columns=["id"]).column("id").to_pylist())


def pair_from_row(row: dict[str, Any]):
    """The `PreferencePair` of a stored row (`PAIR_SCHEMA`), trusted: it was validated on the way in."""
    from synpref.data.models import REFERENCE_META_KEY, Message, PreferencePair, Reference

    meta = json.loads(row["meta"])
    reference = meta.pop(REFERENCE_META_KEY, None)
    return PreferencePair.model_construct(
        id=row["id"],
        conversation=[Message(**m) for m in row["conversation"]],
        chosen=Message(**row["chosen"]),
        rejected=Message(**row["rejected"]),
        source=row["source"],
        meta=meta,
        reference=Reference.model_construct(**reference) if reference else None,
    )


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
