"""Stage 0 per record: parse, convert, validate, decontaminate (DESIGN.md, "Stage 0").

`prepare_chunk` is the per-batch function that runs in worker processes: it turns a chunk of
raw items into an Arrow batch of valid pairs (with a contamination verdict per pair) and the
quarantine entries of the rest. Deduplication needs global state and happens in the caller.
"""

from __future__ import annotations

import itertools
import json
import random
import signal
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from synpref.data import strictjson
from synpref.data.models import SPLITS, Message, PreferencePair, normalize_text
from synpref.data.readers import get_reader
from synpref.data.sources import MAX_RECORD_BYTES, RAW_HEAD_BYTES, Unreadable
from synpref.errors import RecordError

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
PAIR_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("split", pa.string()),
        ("source", pa.string()),
        ("conversation", pa.list_(MESSAGE_TYPE)),
        ("chosen", MESSAGE_TYPE),
        ("rejected", MESSAGE_TYPE),
        ("meta", pa.string()),  # JSON text: meta is free-form and differs between sources
    ]
)


class PrepareConfig(BaseModel):
    """Stage 0 settings (the `prepare:` section of synpref.yaml)."""

    model_config = ConfigDict(extra="forbid")

    max_message_chars: int = Field(200_000, gt=0, description="longest allowed message")
    max_conversation_chars: int = Field(1_000_000, gt=0, description="longest allowed history")
    max_messages: int = Field(256, gt=0, description="most messages in a history")
    max_record_bytes: int = Field(MAX_RECORD_BYTES, gt=0, description="longest input line read; longer ones are quarantined unread")
    # HH-RLHF transcripts hold assistant replies split over two messages; keep them by default.
    allow_consecutive_assistant: bool = True
    ngram: int = Field(13, gt=0, description="n of the decontamination n-grams")
    shard_rows: int = Field(100_000, gt=0, description="pairs per Parquet shard")


def check_pair(pair: PreferencePair, config: PrepareConfig) -> None:
    """Raise `RecordError` when a pair breaks a Stage 0 rule."""
    history = [m for m in pair.conversation if m.role != "system"]
    if not history:
        raise RecordError("conversation", "has no user message")
    for index, message in enumerate(pair.conversation):
        if message.role == "system" and index != 0:
            raise RecordError(f"conversation[{index}].role", "a system message must come first")
    previous = "assistant"
    offset = len(pair.conversation) - len(history)
    for index, message in enumerate(history, start=offset):
        role = "assistant" if message.role == "tool" else message.role
        if role == previous and not (role == "assistant" and config.allow_consecutive_assistant):
            raise RecordError(
                f"conversation[{index}].role",
                f"roles must alternate, but two {role} messages are in a row"
                if index > offset
                else "the conversation must start with a user message",
            )
        previous = role
    if history[-1].role != "user":
        raise RecordError(
            f"conversation[{len(pair.conversation) - 1}].role",
            f"the history must end with a user turn, not {history[-1].role}",
        )
    if len(pair.conversation) > config.max_messages:
        raise RecordError(
            "conversation",
            f"{len(pair.conversation)} messages, over the limit of {config.max_messages} "
            "(prepare.max_messages)",
        )
    for index, message in enumerate(pair.conversation):
        _check_length(message, f"conversation[{index}]", config.max_message_chars)
    total = sum(len(message.content) for message in pair.conversation)
    if total > config.max_conversation_chars:
        raise RecordError(
            "conversation",
            f"{total:,} characters, over the limit of {config.max_conversation_chars:,} "
            "(prepare.max_conversation_chars)",
        )
    for name in ("chosen", "rejected"):
        message: Message = getattr(pair, name)
        if message.role != "assistant":
            raise RecordError(f"{name}.role", f"must be assistant, not {message.role}")
        if not message.content.strip():
            raise RecordError(f"{name}.content", "is empty")
        _check_length(message, name, config.max_message_chars)
    if normalize_text(pair.chosen.content) == normalize_text(pair.rejected.content):
        raise RecordError("rejected.content", "is identical to chosen.content")


def _check_length(message: Message, field: str, limit: int) -> None:
    if len(message.content) > limit:
        raise RecordError(
            f"{field}.content",
            f"{len(message.content):,} characters, over the limit of {limit:,} "
            "(prepare.max_message_chars)",
        )


class Decontaminator:
    """Finds pairs whose conversation shares one n-gram with a benchmark's first-turn prompt.

    n-grams are over lowercased whitespace tokens (DESIGN.md Stage 0 step 3). Candidate
    windows are found with a vectorised 64-bit hash over a whole chunk at once, then every
    hit is confirmed on the exact token tuples, so a hash collision never drops a pair.
    """

    def __init__(self, prompts: dict[str, list[str]], n: int = 13):
        self.prompts = prompts
        self.n = n
        self.too_short = {name: sum(len(p.split()) < n for p in ps) for name, ps in prompts.items()}
        self._grams: dict[tuple[str, ...], set[str]] = defaultdict(set)
        for name, benchmark_prompts in prompts.items():
            for prompt in benchmark_prompts:
                tokens = prompt.lower().split()
                for start in range(len(tokens) - n + 1):
                    self._grams[tuple(tokens[start : start + n])].add(name)
        # Token hashes come from Python's per-process string hash: rebuild in each process.
        rng = random.Random(n)
        self._weights = np.array([rng.getrandbits(64) | 1 for _ in range(n)], dtype=np.uint64)
        segments = [p.lower().split() for ps in prompts.values() for p in ps]
        self._table = np.unique(self._window_hashes(segments, whole=True))

    def __reduce__(self):
        return (Decontaminator, (self.prompts, self.n))

    def _window_hashes(self, segments: list[list[str]], whole: bool = False):
        """Hashes of every n-token window inside each segment, and the segment of each."""
        n = self.n
        lengths = np.fromiter((len(s) for s in segments), dtype=np.int64, count=len(segments))
        tokens = np.fromiter(
            map(hash, itertools.chain.from_iterable(segments)), dtype=np.int64, count=int(lengths.sum())
        ).view(np.uint64)
        if len(tokens) < n:
            return np.empty(0, dtype=np.uint64) if whole else (np.empty(0, np.uint64),) * 2
        windows = len(tokens) - n + 1
        hashes = np.zeros(windows, dtype=np.uint64)
        for offset in range(n):
            hashes += tokens[offset : offset + windows] * self._weights[offset]
        segment_of = np.repeat(np.arange(len(segments)), lengths)
        inside = segment_of[: windows] == segment_of[n - 1 :]
        if whole:
            return hashes[inside]
        return hashes[inside], segment_of[:windows][inside]

    def find(self, pairs: list[PreferencePair]) -> list[list[str]]:
        """For each pair, the names of the benchmarks it is contaminated with (often none)."""
        verdicts: list[list[str]] = [[] for _ in pairs]
        if not self._grams or not pairs:
            return verdicts
        segments, owner = [], []
        for index, pair in enumerate(pairs):
            for message in pair.conversation:
                tokens = message.content.lower().split()
                if len(tokens) >= self.n:
                    segments.append(tokens)
                    owner.append(index)
        if not segments:
            return verdicts
        hashes, segment_of = self._window_hashes(segments)
        slots = np.searchsorted(self._table, hashes).clip(max=len(self._table) - 1)
        for segment in np.unique(segment_of[self._table[slots] == hashes]):
            tokens = segments[segment]
            names = set(verdicts[owner[segment]])
            for start in range(len(tokens) - self.n + 1):
                names |= self._grams.get(tuple(tokens[start : start + self.n]), set())
            verdicts[owner[segment]] = sorted(names)
        return verdicts


@dataclass
class ChunkTask:
    source_spec: str
    source_name: str  # default `source` of pairs
    unit: str  # line | row | item
    reader: str
    mapping: dict[str, str]  # field -> column
    split: str | None
    items: list[tuple[int, Any]]


@dataclass
class ChunkResult:
    read: int
    batch: pa.RecordBatch  # valid pairs, in input order
    contaminated: list[list[str]]  # per row of `batch`
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    last_number: int = 0  # number of the chunk's last item: the resume position


_worker_state: dict[str, Any] = {}


def init_worker(config: PrepareConfig, decontaminator: Decontaminator | None, pool: bool = False) -> None:
    if pool:  # Ctrl-C is the parent's to handle: it commits nothing half-done and exits cleanly
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_state["config"] = config
    _worker_state["decontaminator"] = decontaminator


def prepare_chunk(task: ChunkTask) -> ChunkResult:
    config: PrepareConfig = _worker_state["config"]
    reader = get_reader(task.reader)
    pairs: list[PreferencePair] = []
    splits: list[str] = []
    metas: list[str] = []
    quarantined: list[dict[str, Any]] = []
    for number, payload in task.items:
        try:
            pair, split, meta = _prepare_one(task, reader, config, payload)
        except RecordError as error:
            raw, size = _raw_text(payload)
            quarantined.append(
                {
                    "source": task.source_spec,
                    "location": f"{task.unit} {number}",
                    "field": error.field,
                    "reason": error.reason,
                    "raw": raw,
                    "raw_bytes": size,
                    "raw_truncated": size > RAW_HEAD_BYTES,
                }
            )
            continue
        pairs.append(pair)
        splits.append(split)
        metas.append(meta)
    decontaminator: Decontaminator | None = _worker_state["decontaminator"]
    contaminated = decontaminator.find(pairs) if decontaminator else [[] for _ in pairs]
    return ChunkResult(
        read=len(task.items),
        batch=pairs_to_batch(pairs, splits, metas),
        contaminated=contaminated,
        quarantined=quarantined,
        last_number=task.items[-1][0],
    )


def _prepare_one(task: ChunkTask, reader, config: PrepareConfig, payload: Any):
    """(pair, split, meta as JSON text) of one raw item, or `RecordError`."""
    record = parse_record(payload)
    for target, column in task.mapping.items():
        if column in record:
            record[target] = record.pop(column)
    try:
        pair = reader.to_pair(record, task.source_name)
    except UnicodeEncodeError:
        raise RecordError(_surrogate_field(record), "invalid UTF-8 (an unpaired surrogate)") from None
    check_pair(pair, config)
    split = record.get("split") if task.split is None else task.split
    if split is None:
        split = "pool"
    if split not in SPLITS:
        raise RecordError("split", f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    try:
        meta = orjson.dumps(pair.meta, default=str).decode()
    except orjson.JSONEncodeError as error:
        raise RecordError("meta", f"cannot be stored as JSON: {error}") from None
    return pair, split, meta


def parse_record(payload: Any) -> dict[str, Any]:
    if isinstance(payload, Unreadable):
        raise payload.error()
    if isinstance(payload, bytes):
        payload = _parse_line(payload)
    if not isinstance(payload, dict):
        raise RecordError("", f"expected a JSON object, got {type(payload).__name__}")
    return payload


def _parse_line(line: bytes) -> Any:
    """One JSONL line, strictly: orjson first (fast, and it refuses NaN), then Python's parser
    with marking hooks only for a line that might repeat a key (see strictjson)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise RecordError(_bad_bytes_field(line), f"invalid UTF-8 at byte {bad.start} of the line") from None
        raise RecordError("", f"not valid JSON: {error}") from None
    try:
        problem = strictjson.first_problem(strictjson.loads(line)) if strictjson.may_repeat_keys(line, record) else None
    except RecursionError:  # orjson allows 1024 levels, Python's parser a little under 1000
        problem = ("", "not valid JSON: nested too deeply to read")
    if problem:
        raise RecordError(*problem)
    return record


def _bad_bytes_field(line: bytes) -> str:
    """The field holding the invalid bytes, if the line is JSON apart from them."""
    try:
        return _surrogate_field(json.loads(line.decode("utf-8", errors="surrogateescape")))
    except (json.JSONDecodeError, RecursionError):
        return ""


def _surrogate_field(value: Any, path: str = "") -> str:
    """Where in a record the first string that cannot be UTF-8 encoded is."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
    elif isinstance(value, dict):
        for key, item in value.items():
            found = _surrogate_field(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _surrogate_field(item, f"{path}[{index}]")
            if found:
                return found
    return ""


def _raw_text(payload: Any) -> tuple[str, int]:
    """(the start of the rejected input as text, its size in bytes). Undecodable bytes stay
    visible as escapes; only the first RAW_HEAD_BYTES are kept, so a giant record cannot
    make a giant quarantine file."""
    if isinstance(payload, Unreadable):
        return payload.raw, payload.size
    if not isinstance(payload, bytes):
        try:
            payload = orjson.dumps(payload, default=str)
        except (orjson.JSONEncodeError, RecursionError):
            payload = repr(payload).encode("utf-8", errors="backslashreplace")
    return payload[:RAW_HEAD_BYTES].decode("utf-8", errors="backslashreplace").rstrip("\n"), len(payload)


def pairs_to_batch(pairs: list[PreferencePair], splits: list[str], metas: list[str]) -> pa.RecordBatch:
    """Column by column: much faster than handing Arrow one dict per message."""

    def messages(items: list[Message]) -> pa.StructArray:
        return pa.StructArray.from_arrays(
            [pa.array([m.role for m in items], pa.string()), pa.array([m.content for m in items], pa.string())],
            fields=list(MESSAGE_TYPE),
        )

    offsets = np.zeros(len(pairs) + 1, dtype=np.int32)
    np.cumsum([len(p.conversation) for p in pairs], out=offsets[1:])
    history = [m for p in pairs for m in p.conversation]
    return pa.RecordBatch.from_arrays(
        [
            pa.array([p.id for p in pairs], pa.string()),
            pa.array(splits, pa.string()),
            pa.array([p.source for p in pairs], pa.string()),
            pa.ListArray.from_arrays(pa.array(offsets), messages(history)),
            messages([p.chosen for p in pairs]),
            messages([p.rejected for p in pairs]),
            pa.array(metas, pa.string()),
        ],
        schema=PAIR_SCHEMA,
    )
