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
    # True when the run may store ids already stored (`Workspace.add_pairs`: a labelled pair
    # moving to gold); ingest never does.
    moves: bool = False


class Workspace:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        config_path = self.root / CONFIG_FILE
        if not config_path.is_file():
            raise SynprefError(f"{self.root} is not a workspace (no {CONFIG_FILE}); run `synpref init {root}`")
        self.config = load_config(config_path)
        self.work_root = self.root  # where steps write (runs/, embeddings/, label/); see `view`
        self.gold_ids: frozenset[str] | None = None  # a view's gold: only these gold pairs

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

    def view(self, work_root: Path, gold_ids) -> Workspace:
        """The same store with only `gold_ids` in its gold split, whose steps write under
        `work_root` (runs/, embeddings/, label/) instead of the workspace's root: the
        ablation's folds. Caches (features, LLM answers, embeddings by text) stay shared."""
        import copy

        view = copy.copy(self)
        view.work_root, view.gold_ids = Path(work_root), frozenset(gold_ids)
        return view

    def run_dir(self, step: str) -> Path:
        """runs/<step>/: what one step writes (stage1, stage2, judge-gate, ablation, eval, demo, ...)."""
        return self.work_root / "runs" / step

    @property
    def decisions_file(self) -> Path:
        """Stage 2's decision on each pool pair, with its reason (synpref/curate/stage2.py)."""
        return self.run_dir("stage2") / "decisions.parquet"

    @property
    def label_requests_dir(self) -> Path:
        """Pairs a step asks humans to label: one JSON file per request, loaded into the annotation
        app's queue (synpref/label/work_queue.py); the labels come back by `synpref label export`."""
        return self.work_root / "label" / "requests"

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
        """All pairs as one Arrow table (the `PAIR_SCHEMA` columns, or the ones asked for). Holds
        the whole store: for small stores and a few columns; `batches` streams."""
        import pyarrow as pa

        from synpref.data.stage0 import PAIR_SCHEMA

        schema = PAIR_SCHEMA if columns is None else pa.schema([PAIR_SCHEMA.field(c) for c in columns])
        return pa.Table.from_batches(list(self.batches(columns=columns)), schema=schema)

    def batches(self, split: str | None = None, *, columns: list[str] | None = None, ids=None, exclude=None,
                batch_size: int = 4096) -> Iterator[Any]:
        """The stored rows as Arrow record batches, shard by shard in store order, each id once.

        `split` keeps one split; `ids` keeps only these ids and `exclude` drops these (each a set,
        list or Arrow array of ids: a selection, not the pool). Memory is one batch, whatever
        the size of the store.
        """
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        wanted = None if ids is None else _id_array(ids)
        dropped = None if exclude is None or len(exclude) == 0 else _id_array(exclude)
        read = None if columns is None else list(dict.fromkeys([*columns, "id", "split"]))
        for path, superseded in self._shards_with_superseded():
            # Streamed through a 1 MiB buffer, not pre-buffered: ingest's shards hold up to
            # 100,000 pairs, and a pre-buffered file is read ahead whole (+110 MiB at 100k).
            shard = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
            for batch in shard.iter_batches(batch_size=batch_size, columns=read, use_threads=False):
                keep = None
                if split is not None:
                    keep = pc.equal(batch.column("split"), split)
                if self.gold_ids is not None:
                    other_gold = pc.and_(pc.equal(batch.column("split"), "gold"),
                                         pc.invert(pc.is_in(batch.column("id"), value_set=_id_array(self.gold_ids))))
                    keep = pc.invert(other_gold) if keep is None else pc.and_(keep, pc.invert(other_gold))
                for value_set, negate in ((superseded, True), (wanted, False), (dropped, True)):
                    if value_set is None:
                        continue
                    found = pc.is_in(batch.column("id"), value_set=value_set)
                    found = pc.invert(found) if negate else found
                    keep = found if keep is None else pc.and_(keep, found)
                if keep is not None:
                    batch = batch.filter(keep)
                if batch.num_rows:
                    yield batch if columns is None else pa.RecordBatch.from_arrays(
                        [batch.column(c) for c in columns], names=columns)

    def count(self, split: str | None = None) -> int:
        return sum(batch.num_rows for batch in self.batches(split, columns=["id"]))

    def iter_pairs(self, split: str | None = None, *, ids=None, exclude=None) -> Iterator[tuple[str, Any]]:
        """(split, PreferencePair) for every stored pair, shard by shard, each id once."""
        for batch in self.batches(split, ids=ids, exclude=exclude):
            for row in batch.to_pylist():
                yield row["split"], pair_from_row(row)

    def gather(self, order, *, flipped=frozenset(), split: str | None = None):
        """The pairs whose ids are in `order`, as one `PAIR_SCHEMA` table in that order (ids not
        stored are skipped), those in `flipped` with chosen and rejected exchanged. Holds the
        selection, never the store: for training sets and the pairs a step looks at."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from synpref.data.stage0 import PAIR_SCHEMA

        order = _id_array(order)
        table = pa.Table.from_batches(list(self.batches(split, ids=order)), schema=PAIR_SCHEMA)
        positions = pc.index_in(order, value_set=table.column("id"))
        table = table.take(positions.drop_null())
        return swap_sides(table, flipped)

    def moved_ids(self) -> set[str]:
        """Ids stored again by `add_pairs` (their earlier copies are superseded)."""
        import pyarrow.parquet as pq

        return {i for m in self.manifests() if _moves(m) for name in m["shards"]
                for i in pq.read_table(self.pairs_dir / name, columns=["id"]).column("id").to_pylist()}

    def _shards_with_superseded(self) -> list[tuple[Path, Any]]:
        """(shard, ids whose later copy lives in a later shard, or None) in store order.

        Only `add_pairs` stores an id again (ingest never does), and its shards are small (the
        label app's exports): the ids of those shards are all that is read to find older copies.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        listed = [(self.pairs_dir / name, _moves(m)) for m in self.manifests() for name in m["shards"]]
        later: set[str] = set()
        result = []
        for path, moves in reversed(listed):
            result.append((path, pa.array(sorted(later), pa.string()) if later else None))
            if moves:
                later |= set(pq.read_table(path, columns=["id"]).column("id").to_pylist())
        return result[::-1]

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
                        started_at=now, finished_at=now, sources=[counts], shards=[shard], moves=True)
        write_json_atomic(self.ingest_dir / f"{run_id}.json", run.model_dump())
        return len(rows)

    def existing_ids(self) -> set[str]:
        return {i for batch in self.batches(columns=["id"]) for i in batch.column("id").to_pylist()}


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


def _moves(manifest: dict[str, Any]) -> bool:
    """Whether a manifest's shards may repeat stored ids. Manifests written before the flag:
    `add_pairs` named its runs by their fingerprint, ingest never did."""
    return manifest.get("moves", manifest.get("fingerprint") == manifest.get("run_id"))


def _id_array(ids):
    import pyarrow as pa

    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        return ids
    return pa.array(list(ids), pa.string())


def swap_sides(table, flipped):
    """`table` (pair rows) with chosen and rejected exchanged on the rows whose id is in `flipped`."""
    import pyarrow.compute as pc

    if flipped is None or len(flipped) == 0 or table.num_rows == 0:
        return table
    mask = pc.is_in(table.column("id"), value_set=_id_array(flipped))
    chosen, rejected = table.column("chosen"), table.column("rejected")
    table = table.set_column(table.schema.get_field_index("chosen"), "chosen", pc.if_else(mask, rejected, chosen))
    return table.set_column(table.schema.get_field_index("rejected"), "rejected", pc.if_else(mask, chosen, rejected))


def load_config(path: Path) -> WorkspaceConfig:
    return validated(WorkspaceConfig, load_yaml(path, f"{path}: not valid YAML") or {}, str(path))
