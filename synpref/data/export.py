"""`synpref export`: the workspace's pairs in the formats trainers and other tools read.

- `jsonl` / `parquet`: our own schema (id, split, source, conversation, chosen, rejected, meta);
- `trl`: TRL's conversational preference format (prompt, chosen, rejected message lists) with
  the provenance columns id, source, split and meta; JSONL, or Parquet for a .parquet output;
- `hf-dataset`: the `trl` columns as a `datasets` directory (`load_from_disk` reads it).
Every format can be ingested again with no field lost.

TRL renders the `trl` messages with the tokenizer it is given: give it the tokenizer of a
synpref-saved model (`synpref.rm.saving.save_reward_tokenizer`), whose chat template renders
synpref's input format, and it sees the token ids synpref's trainer sees.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from synpref.data.workspace import Workspace
from synpref.errors import SynprefError

FORMATS = ("trl", "jsonl", "parquet", "hf-dataset")


def export(workspace: Workspace, fmt: str, output: Path | None = None, split: str | None = None) -> tuple[Path, int]:
    """Write the pairs (of one split, or all) and return (where, how many)."""
    if fmt not in FORMATS:
        raise SynprefError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    default = {"trl": "pairs.trl.jsonl", "jsonl": "pairs.jsonl", "parquet": "pairs.parquet", "hf-dataset": "pairs-dataset"}
    output = Path(output) if output else workspace.root / "exports" / default[fmt]
    output.parent.mkdir(parents=True, exist_ok=True)
    batches = _batches(workspace, split)
    if fmt == "hf-dataset":
        return output, _write_dataset(map(_to_trl, batches), output)
    if fmt == "trl":
        batches = map(_to_trl, batches)
    if output.suffix == ".parquet":
        return output, _write_parquet(batches, output)
    return output, _write_jsonl(batches, output)


def _batches(workspace: Workspace, split: str | None):
    return workspace.batches(split)


def _to_trl(batch: pa.RecordBatch) -> pa.RecordBatch:
    one_each = pa.array(np.arange(batch.num_rows + 1, dtype=np.int32))
    return pa.RecordBatch.from_arrays(
        [
            batch.column("conversation"),
            pa.ListArray.from_arrays(one_each, batch.column("chosen")),
            pa.ListArray.from_arrays(one_each, batch.column("rejected")),
            batch.column("id"),
            batch.column("source"),
            batch.column("split"),
            batch.column("meta"),
        ],
        names=["prompt", "chosen", "rejected", "id", "source", "split", "meta"],
    )


def _write_jsonl(batches, output: Path) -> int:
    count = 0
    with open(output, "wb") as file:
        for batch in batches:
            for row in batch.to_pylist():
                row["meta"] = json.loads(row["meta"])  # an object again in JSON output
                file.write(orjson.dumps(row) + b"\n")
                count += 1
    return count


def _write_parquet(batches, output: Path) -> int:
    writer, count = None, 0
    for batch in batches:
        writer = writer or pq.ParquetWriter(output, batch.schema, compression="zstd")
        writer.write_batch(batch)
        count += batch.num_rows
    if writer is not None:
        writer.close()
    return count


def _write_dataset(batches, output: Path) -> int:
    import datasets

    with tempfile.TemporaryDirectory() as tmp:
        parquet = Path(tmp) / "pairs.parquet"
        if not _write_parquet(batches, parquet):
            raise SynprefError("nothing to export: the workspace has no pairs (of that split)")
        dataset = datasets.Dataset.from_parquet(str(parquet), cache_dir=str(Path(tmp) / "cache"))
        if output.exists():
            shutil.rmtree(output)
        dataset.save_to_disk(str(output))
        return len(dataset)
