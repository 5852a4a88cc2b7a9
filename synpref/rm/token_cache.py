"""Tokenized training pairs: built once, in batches, into a memory-mapped Arrow file.

Training reads pairs in record batches, renders each input through the shared formatter and
tokenizes a few hundred inputs per tokenizer call (the Rust tokenizer's batch call: one Python
round trip for many texts), writing one Arrow record batch at a time. Nothing keeps every pair
or every token list in memory: the file is then memory-mapped, and a training process reads
only the rows of its own share of each batch, so the operating system shares the pages between
the processes of a launch.

The token ids are those of `RewardFormatter.encode` exactly: the same rendered text (system
prompt dropped, duplicated BOS stripped: `RewardFormatter.text` renders each input) and the
same tokenizer arguments; a batch call returns what the one-text call returns for each text.
Chat models keep the last `max_length` ids, encoders truncate the longer text of the pair.

The file is named after what determines its content: the data (a workspace's shard names,
sizes and times, or a file's path, size and time, plus the split), the tokenizer (name,
class and a hash of its vocabulary and rules), the chat template and the max length. Reruns and
every process of a launch open the same file; `synpref train` builds it in each node's main
process while the others wait. Data without such an identity (Arrow tables or record batches
handed over in memory, a Hugging Face dataset) is tokenized again on every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from synpref.data.models import Message
from synpref.rm.formatting import RewardFormatter

# Bump when the layout or the encoding rules change: older files are then never opened.
CACHE_VERSION = 1
# Pairs per tokenizer call and per Arrow record batch: big enough that the per-call overhead
# vanishes, small enough that a batch of 1,024-token inputs stays a few MB.
ENCODE_ROWS = 256
WAIT_SECONDS = 1.0  # how often a process waiting for another's build looks for the file


class TextPair(NamedTuple):
    """What tokenizing a pair needs (a `PreferencePair` has the same three fields)."""

    conversation: list[Message]
    chosen: Message
    rejected: Message


def encode_pair_batch(formatter: RewardFormatter, pairs: Iterable[Any]) -> tuple[list[list[int]], list[list[int]]]:
    """(chosen ids, rejected ids) of `pairs`: `formatter.encode` of each, in one tokenizer call."""
    texts = [formatter.text(p.conversation, response) for p in pairs for response in (p.chosen, p.rejected)]
    if not texts:
        return [], []
    tokenizer = formatter.tokenizer
    if formatter.is_chat:
        ids = [row[-formatter.max_length :] for row in tokenizer([text for text, _ in texts])["input_ids"]]
    else:
        ids = tokenizer([text for text, _ in texts], [pair for _, pair in texts],
                        truncation="longest_first", max_length=formatter.max_length)["input_ids"]
    return ids[0::2], ids[1::2]


def pair_chunks(source: Any, split: str | None = None, rows: int = ENCODE_ROWS) -> Iterator[list[Any]]:
    """Pairs in lists of at most `rows`, read as they are needed.

    `source`: a workspace directory or a pair file (as `--data`), a `pyarrow.Table`, a
    `pyarrow.dataset.Dataset`, or an iterable of record batches, with the workspace's pair
    columns (conversation, chosen, rejected; rows of another `split` are skipped when the data
    has a split column).
    """
    if isinstance(source, (str, Path)):
        from synpref.rm.data import iter_pairs

        yield from _chunked(iter_pairs(source, split), rows)
        return
    for batch in _record_batches(source, rows):
        if split is not None and "split" in batch.schema.names:
            import pyarrow.compute as pc

            batch = batch.filter(pc.equal(batch.column("split"), split))
        columns = batch.select(["conversation", "chosen", "rejected"]).to_pydict()
        pairs = [
            TextPair([Message(**m) for m in conversation], Message(**chosen), Message(**rejected))
            for conversation, chosen, rejected in zip(columns["conversation"], columns["chosen"], columns["rejected"])
        ]
        yield from _chunked(iter(pairs), rows)


def _record_batches(source: Any, rows: int) -> Iterator[Any]:
    import pyarrow as pa

    if isinstance(source, pa.Table):
        yield from source.to_batches(max_chunksize=rows)
    elif hasattr(source, "to_batches"):  # pyarrow.dataset.Dataset and Scanner
        yield from source.to_batches(batch_size=rows)
    else:
        yield from source


def _chunked(pairs: Iterator[Any], rows: int) -> Iterator[list[Any]]:
    chunk = []
    for pair in pairs:
        chunk.append(pair)
        if len(chunk) == rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def build_token_cache(path: Path, chunks: Iterable[list[Any]], formatter: RewardFormatter, identity: dict | None = None) -> Path:
    """Tokenize `chunks` into the Arrow IPC file `path` (written aside, then moved into place,
    so an interrupted build leaves nothing that could be opened)."""
    import pyarrow as pa

    schema = _schema(identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with pa.OSFile(str(draft), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for pairs in chunks:
                chosen, rejected = encode_pair_batch(formatter, pairs)
                lengths = [max(len(c), len(r)) for c, r in zip(chosen, rejected)]
                writer.write_batch(pa.record_batch(
                    [pa.array(chosen, schema.field("chosen").type), pa.array(rejected, schema.field("rejected").type),
                     pa.array(lengths, pa.int32())], schema=schema))
        os.replace(draft, path)
    finally:
        draft.unlink(missing_ok=True)
    return path


def _schema(identity: dict | None):
    import pyarrow as pa

    ids = pa.list_(pa.int32())
    metadata = {"synpref_token_cache": json.dumps(identity, sort_keys=True)} if identity else None
    return pa.schema([("chosen", ids), ("rejected", ids), ("length", pa.int32())], metadata=metadata)


class TokenCache:
    """The memory-mapped file: row `i` is the i-th pair of the data, as (chosen ids, rejected ids)."""

    def __init__(self, path: Path):
        import numpy as np
        import pyarrow as pa

        self.path = Path(path)
        reader = pa.ipc.open_file(pa.memory_map(str(self.path)))
        self._batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        sizes = [batch.num_rows for batch in self._batches]
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def lengths(self) -> list[int]:
        """max(len(chosen), len(rejected)) of every pair, for length grouping."""
        import numpy as np

        if not self._batches:
            return []
        return np.concatenate([b.column("length").to_numpy() for b in self._batches]).tolist()

    def pairs(self, indices: Iterable[int]) -> list[tuple[list[int], list[int]]]:
        """(chosen ids, rejected ids) of the rows `indices`, read from the mapped file."""
        import numpy as np

        indices = list(indices)
        found = np.searchsorted(self._starts, indices, side="right") - 1
        result = []
        for index, number in zip(indices, found):
            batch, row = self._batches[number], index - int(self._starts[number])
            result.append((batch.column(0)[row].as_py(), batch.column(1)[row].as_py()))
        return result


def token_cache_path(root: Path, source: Any, split: str | None, formatter: RewardFormatter) -> tuple[Path, dict | None]:
    """Where the cache of (`source`, `split`) tokenized by `formatter` lives under `root`, and the
    identity it is named after (None for data without one: Arrow tables and record batches)."""
    data = data_identity(source, split)
    if data is None:
        named = json.dumps([str(source), split]) if isinstance(source, (str, Path)) else "in-memory"
        return root / f"unnamed-{hashlib.sha256(named.encode()).hexdigest()[:16]}.arrow", None
    identity = {"version": CACHE_VERSION, "data": data, "tokenizer": tokenizer_identity(formatter)}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
    return root / f"pairs-{digest}.arrow", identity


def data_identity(source: Any, split: str | None) -> dict | None:
    """What names the content of a `--data` path: a workspace's shards or a file's size and time."""
    if not isinstance(source, (str, Path)):
        return None
    path = Path(source)
    if path.is_dir() and (path / "synpref.yaml").is_file():
        from synpref.data.workspace import Workspace

        shards = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Workspace(path).shards()]
        return {"workspace": str(path.resolve()), "shards": shards, "split": split}
    if path.is_file():
        stat = path.stat()
        return {"file": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return None  # a Hugging Face dataset id or folder: read again each run


def tokenizer_identity(formatter: RewardFormatter) -> dict:
    """Name, class, a hash of the vocabulary and rules, the template the formatter renders, max length."""
    tokenizer = formatter.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        rules = json.loads(backend.to_str())
        # Truncation and padding are per-call settings that the last call leaves behind.
        rules.pop("truncation", None), rules.pop("padding", None)
        vocabulary = json.dumps(rules, sort_keys=True)
    else:
        vocabulary = json.dumps(sorted(tokenizer.get_vocab().items()))
    special = {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}
    return {
        "name": str(tokenizer.name_or_path),
        "class": type(tokenizer).__name__,
        "vocabulary": hashlib.sha256(vocabulary.encode()).hexdigest(),
        "special_tokens": special,
        "chat_template": formatter.template,
        "max_length": formatter.max_length,
    }


def open_token_cache(root: Path, source: Any, split: str | None, formatter: RewardFormatter, *, build: bool = True) -> TokenCache:
    """The cache of (`source`, `split`). With `build`, a missing cache is built (and one of data
    without an identity rebuilt); without, this process waits for the builder to move the file
    into place: polling, not a collective, whose timeout a long build would outlast."""
    path, identity = token_cache_path(root, source, split, formatter)
    if build and (identity is None or not path.is_file()):
        build_token_cache(path, pair_chunks(source, split), formatter, identity)
    while not path.is_file():
        time.sleep(WAIT_SECONDS)
    return TokenCache(path)
