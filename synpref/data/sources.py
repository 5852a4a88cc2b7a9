"""Where records come from: JSONL, JSON, CSV and Parquet files (gzip or not) and
Hugging Face datasets (`hf://org/name[:split]`, or a directory written by `save_to_disk`,
`DIR[:split]`): every split of a DatasetDict unless one is named.

A source yields numbered items. JSONL lines stay raw bytes here so that parsing happens in the
worker processes; other containers yield parsed dicts. Item numbers are 1-based and name the
line (JSONL), row (CSV, Parquet, dataset) or array item (JSON) in error messages. An item that
cannot be handed over as a record (a line longer than `max_record_bytes`, which is never held
in memory whole; a JSON item with a repeated key or NaN) comes as `Unreadable`, to be
quarantined like any other bad record. A UTF-8 byte order mark at the start is skipped.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import stat
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from synpref.config import not_regular_message
from synpref.data import strictjson
from synpref.errors import RecordError, SynprefError
from synpref.text import printable

Item = tuple[int, Any]  # (number, raw bytes, parsed dict or Unreadable)
# Longest JSONL line read into memory. The longest valid pair (prepare.max_message_chars and
# max_conversation_chars) is a few MB even with every character escaped; longer lines are
# skipped over in 1 MiB reads, so a 1 GiB line costs no more memory than a short one.
MAX_RECORD_BYTES = 16 * 1024 * 1024
# How much of a rejected record a quarantine entry keeps (with its full size beside it):
# every usual record whole, never a giant line.
RAW_HEAD_BYTES = 64 * 1024
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Unreadable:
    """An item the container could not hand over as a record: quarantined with `reason`."""

    field: str
    reason: str
    raw: str  # the start of the item, at most RAW_HEAD_BYTES
    size: int  # bytes of the whole item

    def error(self) -> RecordError:
        return RecordError(self.field, self.reason)

_CONTAINERS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass
class Source:
    spec: str  # what the user typed
    name: str  # default `source` of its pairs
    container: str  # jsonl | json | csv | tsv | parquet | hf
    unit: str  # line | item | row
    path: Path | None = None
    hf_split: str | None = None

    @property
    def shown(self) -> str:
        """The spec as messages and progress show it: control characters in a file name escaped."""
        return printable(self.spec)

    def fingerprint(self) -> list[Any]:
        if self.path is not None and self.path.is_file():
            stat = self.path.stat()
            return [str(self.path.resolve()), stat.st_size, stat.st_mtime_ns]
        return [self.spec]

    def size(self) -> int | None:
        """Total bytes for progress, where the container reports bytes consumed."""
        return self.path.stat().st_size if self.container == "jsonl" else None

    def items(self, skip: int = 0, progress=None, max_record_bytes: int = MAX_RECORD_BYTES) -> Iterator[Item]:
        """Numbered items after the first `skip`; `progress(advance)` is told how far it got."""
        reader = {
            "jsonl": partial(_jsonl_items, max_record_bytes=max_record_bytes),
            "json": _json_items,
            "csv": _csv_items,
            "tsv": _csv_items,
            "parquet": _parquet_items,
            "hf": _hf_items,
        }[self.container]
        yield from reader(self, skip, progress or (lambda advance: None))


def open_source(spec: str) -> Source:
    """Resolve a command-line SOURCE into a `Source`, with a clear error if it cannot be read."""
    if spec.startswith("hf://"):
        name, _, split = spec[len("hf://") :].partition(":")
        return Source(spec, name.rstrip("/").rsplit("/", 1)[-1], "hf", "row",
                      Path(name) if Path(name).is_dir() else None, split or None)
    path, split, shown = Path(spec), None, printable(spec)
    if not path.exists() and ":" in spec and Path(spec.rpartition(":")[0]).is_dir():
        path, split = Path(spec.rpartition(":")[0]), spec.rpartition(":")[2]  # DIR:split
    if not path.exists():
        raise SynprefError(f"source not found: {shown}")
    if path.is_dir():
        if not ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
            raise SynprefError(f"{shown}: a directory must be a dataset saved with save_to_disk")
        return Source(spec, path.name, "hf", "row", path, split)
    mode = path.stat().st_mode  # of what a symlink points to
    if not stat.S_ISREG(mode):  # a FIFO would block the first read, /dev/zero never end
        raise SynprefError(f"source {not_regular_message(path, mode)}")
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    suffix = Path(stem).suffix.lower()
    if suffix not in _CONTAINERS:
        raise SynprefError(
            f"{shown}: cannot tell the file type from {suffix or 'no extension'!r}; "
            f"use one of {', '.join(sorted(_CONTAINERS))} (optionally .gz)"
        )
    container = _CONTAINERS[suffix]
    if container == "json" and _first_char(path) == "{":
        container = "jsonl"  # many ".json" files hold one object per line
    unit = {"jsonl": "line", "json": "item"}.get(container, "row")
    return Source(spec, Path(stem).stem, container, unit, path)


def _open_binary(path: Path) -> tuple[io.BufferedIOBase, io.BufferedIOBase]:
    """(stream to read, raw file whose position tracks progress), gunzipping by magic bytes."""
    raw = open(path, "rb")
    if raw.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw), raw
    return raw, raw


def _first_char(path: Path) -> str:
    stream, raw = _open_binary(path)
    with raw:
        try:
            head = stream.read(4096)
        except (OSError, EOFError) as error:
            raise SynprefError(f"{printable(str(path))}: cannot read: {error}") from None
    return head.removeprefix(BOM).lstrip()[:1].decode("latin-1")


def _jsonl_items(source: Source, skip: int, progress, max_record_bytes: int) -> Iterator[Item]:
    stream, raw = _open_binary(source.path)
    position = number = 0
    with raw:
        try:
            for number, line in enumerate(_bounded_lines(stream, max_record_bytes), start=1):
                if number % 1000 == 0:
                    progress(raw.tell() - position)
                    position = raw.tell()
                if number == 1 and isinstance(line, bytes):
                    line = line.removeprefix(BOM)
                if number > skip and (not isinstance(line, bytes) or line.strip()):
                    yield number, line.rstrip(b"\r\n") if isinstance(line, bytes) else line
        except (OSError, EOFError, zlib.error) as error:  # e.g. a truncated or corrupt gzip stream
            where = f"past line {number}" if number else "its first line"
            raise SynprefError(f"{source.shown}: cannot read {where}: {error}") from None
        progress(raw.tell() - position)


def _bounded_lines(stream, limit: int) -> Iterator[bytes | Unreadable]:
    """Lines of at most `limit` bytes; a longer one is read past in 1 MiB steps and comes as
    `Unreadable` with its start and size, so no line is ever held in memory whole."""
    while line := stream.readline(limit + 1):
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        head, size = line[:RAW_HEAD_BYTES], len(line)
        while not line.endswith(b"\n") and (line := stream.readline(1 << 20)):
            size += len(line)
            head += line[: RAW_HEAD_BYTES - len(head)]
        size -= line.endswith(b"\n")
        reason = f"{size:,} bytes, over the limit of {limit:,} for one record (prepare.max_record_bytes); not parsed"
        yield Unreadable("", reason, head.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace"), size)


def _json_items(source: Source, skip: int, progress) -> Iterator[Item]:
    records = _json_document(source)
    if isinstance(records, dict):  # {"data": [...]} and similar wrappers
        lists = [value for value in records.values() if isinstance(value, list)]
        if len(lists) != 1:
            raise SynprefError(f"{source.shown}: expected a JSON list of records")
        records = lists[0]
    if not isinstance(records, list):
        raise SynprefError(f"{source.shown}: expected a JSON list of records")
    for number, record in enumerate(records, start=1):
        if number > skip:
            yield number, _checked(record)


def _json_document(source: Source) -> Any:
    stream, raw = _open_binary(source.path)
    with raw:
        try:
            data = stream.read()
        except (OSError, EOFError, zlib.error) as error:
            raise SynprefError(f"{source.shown}: cannot read: {error}") from None
    try:
        return strictjson.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        raise SynprefError(f"{source.shown}: not valid UTF-8 at byte {error.start}") from None
    except json.JSONDecodeError as error:
        raise SynprefError(
            f"{source.shown}: not valid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None
    except RecursionError:
        raise SynprefError(f"{source.shown}: JSON nested too deeply to read (over {sys.getrecursionlimit()} levels)") from None


def _checked(record: Any) -> Any:
    """The record, or `Unreadable` when it repeats a key or holds NaN/Infinity."""
    try:
        problem = strictjson.first_problem(record)
    except RecursionError:
        problem = ("", f"nested too deeply to read (over {sys.getrecursionlimit()} levels)")
    if problem is None:
        return record
    try:
        text = json.dumps(record, default=str, ensure_ascii=False).encode("utf-8", errors="backslashreplace")
    except RecursionError:
        text = b""
    return Unreadable(*problem, text[:RAW_HEAD_BYTES].decode("utf-8", errors="ignore"), len(text))


def _csv_items(source: Source, skip: int, progress) -> Iterator[Item]:
    csv.field_size_limit(2**31 - 1)
    stream, raw = _open_binary(source.path)
    # surrogateescape keeps invalid bytes visible to validation instead of failing the file
    # utf-8-sig: spreadsheet programs start their CSV exports with a byte order mark
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    number = 0
    with raw:
        try:
            reader = csv.DictReader(text, delimiter="\t" if source.container == "tsv" else ",")
            if reader.fieldnames is None:
                return
            for number, row in enumerate(reader, start=1):
                if None in row:  # more cells than header names
                    row["_extra_cells"] = row.pop(None)
                if number > skip:
                    yield number, {key: _cell(value) for key, value in row.items() if value is not None}
        except (OSError, EOFError, zlib.error, csv.Error) as error:  # a truncated gzip stream, a NUL byte
            where = f"past row {number}" if number else "its first row"
            raise SynprefError(f"{source.shown}: cannot read {where}: {error}") from None


def _cell(value: str) -> Any:
    """CSV exports write message lists and objects as JSON text: read those back as JSON."""
    if value[:2] in ('[{', '{"'):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass  # plain text that happens to start like JSON
    return value


def _parquet_items(source: Source, skip: int, progress) -> Iterator[Item]:
    import pyarrow.parquet as pq

    try:
        # Read through a 1 MiB buffer: pre-buffered, a file's column chunks are read ahead
        # whole (a 1M-pair file: +1.1 GiB), and a pair file is read once, front to back.
        file = pq.ParquetFile(source.path, pre_buffer=False, buffer_size=1 << 20)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise SynprefError(f"{source.shown}: not a readable Parquet file: {error}") from None
    try:
        for number, record in _numbered(batch.to_pylist() for batch in file.iter_batches(1024, use_threads=False)):
            if number > skip:
                yield number, record
    except (OSError, ValueError) as error:  # a damaged page (pyarrow's ArrowException subclasses these)
        raise SynprefError(f"{source.shown}: cannot read the Parquet data: {error}") from None


def _hf_items(source: Source, skip: int, progress) -> Iterator[Item]:
    """Rows of one split (`DIR:split`, `hf://name:split`) or of every split in turn, numbered
    across splits (resuming skips by that number); each row of a multi-split dataset carries its
    split's name as `dataset_split`, which ends up in the pair's meta."""
    splits = _hf_splits(source)
    for number, record in _numbered(_split_batches(splits)):
        if number > skip:
            yield number, record


def _hf_splits(source: Source) -> dict[str | None, Any]:
    """{split name: dataset}; one entry named None for a plain `Dataset` directory."""
    import datasets

    try:
        if source.path is not None:
            dataset = datasets.load_from_disk(str(source.path))
        else:
            name = source.spec[len("hf://") :].partition(":")[0]
            dataset = datasets.load_dataset(name, split=source.hf_split) if source.hf_split else datasets.load_dataset(name)
        if not isinstance(dataset, datasets.DatasetDict):
            return {None: dataset}
        if source.hf_split is not None:
            return {source.hf_split: dataset[source.hf_split]}
    except KeyError:
        raise SynprefError(f"{source.shown}: no split {source.hf_split!r}; the dataset has {', '.join(dataset)}") from None
    except (FileNotFoundError, ValueError, ConnectionError) as error:
        raise SynprefError(f"{source.shown}: cannot load the dataset: {error}") from None
    return dict(dataset)


def _split_batches(splits: dict[str | None, Any]) -> Iterator[list[dict[str, Any]]]:
    for name, dataset in splits.items():
        for batch in dataset.with_format("arrow").iter(batch_size=1024):
            rows = batch.to_pylist()
            if name is not None and len(splits) > 1:
                rows = [{**row, "dataset_split": name} for row in rows]
            yield rows


def _numbered(batches: Iterator[list[dict[str, Any]]]) -> Iterator[Item]:
    number = 0
    for batch in batches:
        for record in batch:
            number += 1
            yield number, record


def sample_records(source: Source, limit: int = 50) -> list[dict[str, Any]]:
    """The first parseable records, for format detection."""
    import orjson

    sample: list[dict[str, Any]] = []
    for _, payload in source.items():  # Unreadable items are neither bytes nor dicts: skipped
        if isinstance(payload, bytes):
            try:
                payload = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
        if isinstance(payload, dict):
            sample.append(payload)
        if len(sample) >= limit:
            break
    return sample
