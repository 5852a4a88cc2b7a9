"""Where annotation results live: one directory per run of a task, WORKSPACE/annotate/<task>/
for `synpref annotate`, a curation step's own directory when it judges the pairs it chose.

    samples.jsonl      one record per finished request unit, appended and flushed to disk
                       as each completes: a job killed at any moment loses nothing finished
    judgments.jsonl    (judge task) the aggregated `Judgment` of each pair, appended
    *.parquet          snapshots of the logs (latest record per key) for bulk readers,
                       rewritten at the end of each run

The logs are the truth; the Parquet files can always be rebuilt from them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SAMPLES = "samples.jsonl"
JUDGMENTS = "judgments.jsonl"


class ResultLog:
    """An append-only JSONL file that tolerates a torn last line (a killed writer)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the half-written last line of a killed run; its unit is redone
        return records

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as file:
            if file.tell() and not self._ends_with_newline():
                file.write(b"\n")  # never glue a new record onto a torn one
            file.write(json.dumps(record, ensure_ascii=False, default=str).encode() + b"\n")
            file.flush()
            os.fsync(file.fileno())

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as file:
            file.seek(-1, os.SEEK_END)
            return file.read(1) == b"\n"


def task_dir(workspace_root: Path, task: str) -> Path:
    return Path(workspace_root) / "annotate" / task


def samples_log(workspace_root: Path, task: str) -> ResultLog:
    return ResultLog(task_dir(workspace_root, task) / SAMPLES)


def judgments_log(workspace_root: Path) -> ResultLog:
    return ResultLog(task_dir(workspace_root, "judge") / JUDGMENTS)


def latest(records: list[dict[str, Any]], *key_fields: str) -> list[dict[str, Any]]:
    """The last record for each key, in first-seen key order."""
    by_key: dict[tuple, dict[str, Any]] = {}
    for record in records:
        by_key[tuple(record[f] for f in key_fields)] = record
    return list(by_key.values())


def write_parquet(records: list[dict[str, Any]], path: Path) -> None:
    """Flat columns; nested values (answers, votes, judgments) as JSON text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = sorted({name for record in records for name in record})
    rows = [{name: _cell(record.get(name)) for name in columns} for record in records]
    table = pa.Table.from_pylist(rows, schema=pa.schema([(name, _column_type(rows, name)) for name in columns]))
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, (dict, list)) else value


def _column_type(rows: list[dict[str, Any]], name: str):
    import pyarrow as pa

    kinds = {type(row[name]) for row in rows if row[name] is not None}
    if kinds == {bool}:
        return pa.bool_()
    if kinds and kinds <= {int}:
        return pa.int64()
    if kinds and kinds <= {int, float}:
        return pa.float64()
    return pa.string()
