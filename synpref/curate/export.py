"""Export the curated set, the flipped set and their union, with provenance.

    curated   gold pairs (human-verified), Stage 1 silver (oriented by the LLM verdict) and
              the Stage 2 pairs kept in their original orientation
    flipped   Stage 2 pairs recycled with chosen and rejected swapped (a new pair id)
    union     both

Every row carries `origin` (which step put it there) and `reason` (the Stage 2 rule's
words, or the judges' verdict) as columns, and the same under meta["curation"] along with
the RMs' p and the original pair id, so a trainer can filter and a person can audit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synpref.errors import SynprefError

SETS = ("curated", "flipped", "union")
SUFFIX = {"trl": ".trl.jsonl", "jsonl": ".jsonl", "parquet": ".parquet", "hf-dataset": "-dataset"}


def curated_batches(workspace) -> Iterator[tuple[Any, list[str]]]:
    """(record batch of exported rows, the set of each row: curated | flipped) for every pair the
    curation run produced, in store order, one store batch at a time.

    Stage 2's decisions are in the order of the pool it scanned, a subsequence of the store's
    order, so they are merged in as the store streams by (no lookup table of the pool); only the
    decisions of pairs stored again later (a label export moved them) wait in a dict.
    """
    import pyarrow as pa

    from synpref.curate.stage1 import last_state

    decisions_file = workspace.decisions_file
    if not decisions_file.is_file():
        raise SynprefError("curate export: no Stage 2 decisions; run `synpref curate stage2` first")
    decisions = _DecisionStream(decisions_file, workspace.moved_ids())
    state = {row["id"]: row for row in last_state(workspace)["rows"] if row["verdict"] in ("chosen", "rejected", "seed")}
    for batch in workspace.batches():
        ids, splits = batch.column("id").to_pylist(), batch.column("split").to_pylist()
        sets, provenance = [], []
        for pair_id, split in zip(ids, splits):
            found = None
            if split == "gold":
                found = ("curated", {"origin": "gold", "reason": "human-verified"})
            elif (decision := decisions.find(pair_id)) is not None:  # Stage 2 decided it (with scope all, Stage 1's pairs too): its word is last
                if decision["action"] != "discard":
                    found = ("flipped" if decision["action"] == "flip" else "curated",
                             {"origin": f"stage2 {decision['action']}", "reason": decision["reason"], "original_id": pair_id,
                              "best_p": decision["best_p"], "gold_p": decision["gold_p"], "llm_verdict": decision["llm_verdict"]})
            elif pair_id in state:
                entry = state[pair_id]
                found = ("flipped-silver" if entry["flipped"] else "curated",
                         {"origin": f"stage1 {entry['origin']}", "reason": f"verdict {entry['verdict']}", "original_id": pair_id})
            sets.append(found and found[0])
            provenance.append(found and found[1])
        rows = [i for i, name in enumerate(sets) if name is not None]
        if rows:
            yield _exported(batch.take(pa.array(rows, pa.int64())), [sets[i] for i in rows], [provenance[i] for i in rows])
    decisions.check_consumed()


class _DecisionStream:
    """Stage 2's decisions read in order, matched against the store's rows as they stream by."""

    COLUMNS = ["id", "action", "reason", "best_p", "gold_p", "llm_verdict"]

    def __init__(self, path: Path, moved: set[str]):
        import pyarrow.parquet as pq

        self.path, self.moved, self.waiting = path, moved, {}
        self.rows = (row for batch in pq.ParquetFile(path).iter_batches(batch_size=4096, columns=self.COLUMNS) for row in batch.to_pylist())
        self.current = self._next()

    def _next(self):
        for row in self.rows:
            if row["id"] in self.moved:
                self.waiting[row["id"]] = row  # its pair is stored again further on
                continue
            return row
        return None

    def find(self, pair_id: str):
        if self.current is not None and self.current["id"] == pair_id:
            found, self.current = self.current, self._next()
            return found
        return self.waiting.get(pair_id)

    def check_consumed(self) -> None:
        if self.current is not None:
            raise SynprefError(f"{self.path}: the decision on {self.current['id']} matches no stored pool pair in order; "
                               "the store changed since Stage 2 ran: run `synpref curate stage2` again")


def _exported(batch, sets: list[str], provenance: list[dict[str, Any]]):
    """The exported rows of `batch`: split = the set, meta with the provenance under "curation",
    flipped pairs (and silver the judges reversed) with chosen and rejected exchanged."""
    import pyarrow as pa

    from synpref.data.models import REFERENCE_META_KEY, Message, pair_id
    from synpref.data.workspace import swap_sides

    metas = []
    for stored, prov in zip(batch.column("meta").to_pylist(), provenance):
        meta = json.loads(stored)
        meta.pop(REFERENCE_META_KEY, None)
        metas.append(json.dumps({**meta, "curation": prov}))
    swapped = [i for i, name in enumerate(sets) if name.startswith("flipped")]
    ids = batch.column("id").to_pylist()
    table = swap_sides(pa.Table.from_batches([batch]), [ids[i] for i in swapped])
    if swapped:  # a swapped pair is a new pair, with a new id
        rows = table.take(pa.array(swapped, pa.int64())).to_pylist()
        for i, row in zip(swapped, rows):
            ids[i] = pair_id([Message(**m) for m in row["conversation"]], Message(**row["chosen"]), Message(**row["rejected"]))
    names = ["flipped" if name == "flipped" else "curated" for name in sets]
    table = table.set_column(table.schema.get_field_index("id"), "id", pa.array(ids, pa.string()))
    table = table.set_column(table.schema.get_field_index("split"), "split", pa.array(names, pa.string()))
    table = table.set_column(table.schema.get_field_index("meta"), "meta", pa.array(metas, pa.string()))
    batch = table.combine_chunks().to_batches()[0]
    return batch, names, [p["origin"] for p in provenance], [p["reason"] for p in provenance]


def export_curated(workspace, fmt: str, output_dir: Path) -> dict[str, tuple[Path, int]]:
    """Write the three sets in `fmt` (trl | jsonl | parquet | hf-dataset); returns {set: (path, rows)}.

    Each set is one pass over the store, written batch by batch.
    """
    from synpref.data.export import FORMATS, _write_dataset, _write_jsonl, _write_parquet

    if fmt not in FORMATS:
        raise SynprefError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in SETS:
        path = output_dir / f"{name}{SUFFIX[fmt]}"
        batches = _set_batches(workspace, name, fmt)
        if fmt == "hf-dataset":
            count = _write_dataset(batches, path) if _any_rows(workspace, name) else 0
        elif fmt == "parquet":
            count = _write_parquet(batches, path)
        else:
            count = _write_jsonl(batches, path)
        written[name] = (path, count)
    return written


def _set_batches(workspace, name: str, fmt: str):
    import pyarrow as pa

    from synpref.data.export import _to_trl

    for batch, sets, origins, reasons in curated_batches(workspace):
        rows = [i for i, s in enumerate(sets) if name == "union" or s == name]
        if not rows:
            continue
        take = pa.array(rows, pa.int64())
        batch = batch.take(take)
        if fmt in ("trl", "hf-dataset"):
            batch = _to_trl(batch)
        batch = batch.append_column("origin", pa.array([origins[i] for i in rows], pa.string()))
        yield batch.append_column("reason", pa.array([reasons[i] for i in rows], pa.string()))


def _any_rows(workspace, name: str) -> bool:
    return any(name == "union" or name in sets for _, sets, _, _ in curated_batches(workspace))
