"""Tokenized training pairs: built once, in batches, into a memory-mapped Arrow file.

Training reads pairs in record batches of a few hundred and renders each distinct input once
through the shared formatter (`RewardFormatter.texts`: one template render per conversation
shape of the batch, where the template provably copies contents, `synpref.rm.template_shapes`;
else one template call for the batch). A chat input is cut at its
added tokens (<|im_start|>, <|im_end|>, ...); the pieces between them that no earlier batch met
go to one call of the Rust tokenizer's batch encoder, which spreads them over the cores, and
each record batch is written from numpy arrays. A pair's prompt is tokenized once for both of
its answers, and a response or a pair that recurs (several pairs per prompt, annotation sets
that judge a pair many times) once while the bounded memo holds it. Nothing keeps every pair or
every token list in memory: the file is then memory-mapped, and a training process reads only
the rows of its own share of each batch, so the operating system shares the pages between the
processes of a launch.

The token ids are those of `RewardFormatter.encode` exactly: the same rendered text (system
prompt dropped, duplicated BOS stripped: `RewardFormatter.texts` renders as `text` does) and
the ids of one tokenizer call on it, which makes the same cut at the added tokens before
anything else (`AddedTokenRules`: where that cannot be shown for a tokenizer, whole texts are
tokenized instead). Chat models keep the last `max_length` ids, encoders truncate the longer
text of the pair.

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
# Ids of the pieces `PairEncoder` keeps between batches (the prompts and responses that recur):
# at most about this many (16 MB of int32, and their text), then it starts afresh.
MEMO_IDS = 1 << 22
WAIT_SECONDS = 1.0  # how often a process waiting for another's build looks for the file


class TextPair(NamedTuple):
    """What tokenizing a pair needs (a `PreferencePair` has the same three fields)."""

    conversation: list[Message]
    chosen: Message
    rejected: Message


def encode_pair_batch(formatter: RewardFormatter, pairs: Iterable[Any]) -> tuple[list[list[int]], list[list[int]]]:
    """(chosen ids, rejected ids) of `pairs`: `formatter.encode` of each, as lists."""
    chosen, rejected = PairEncoder(formatter)(pairs)
    return [ids.tolist() for ids in chosen], [ids.tolist() for ids in rejected]


class PairEncoder:
    """`RewardFormatter.encode` of many pairs at a time, each distinct piece of text tokenized once.

    An input is rendered once however often it recurs (a pair's chosen and rejected share its
    prompt, annotation sets repeat whole pairs). A chat input is cut at its added tokens, and the
    pieces that no earlier batch met go to one batch call of the Rust tokenizer (which spreads
    them over the cores). The ids are those of one call on the whole text, because that call
    makes the same cut first (`AddedTokenRules`); for a tokenizer where that cannot be shown,
    whole texts are tokenized (still once each). Encoders tokenize their distinct text pairs,
    truncated as `encode` truncates.
    """

    def __init__(self, formatter: RewardFormatter, memo_ids: int = MEMO_IDS):
        self.formatter = formatter
        self.memo_ids = memo_ids
        self._memo: dict[Any, Any] = {}  # piece (or input) -> its ids, a read-only int32 array
        self._memo_size = 0
        self.tokenized = self.returned = 0  # ids tokenized and ids handed out: what the memo saved
        self.rules = AddedTokenRules.of(formatter.tokenizer) if formatter.is_chat else None
        if self.rules is not None and not self._rules_hold():
            self.rules = None

    def __call__(self, pairs: Iterable[Any]) -> tuple[list[Any], list[Any]]:
        """(chosen ids, rejected ids) of `pairs`, each an int32 array."""
        import numpy as np

        order, splits = self._render(pairs)
        if self._memo_size > self.memo_ids:
            self._memo, self._memo_size = {}, 0  # bounded: a long build must not keep every token list
        missing = list(dict.fromkeys(piece for split in splits for piece in split[0::2] if piece not in self._memo))
        for piece, ids in zip(missing, self._tokenize(missing)):
            ids = np.asarray(ids, np.int32)
            ids.flags.writeable = False  # shared by every input that holds the piece
            self._memo[piece] = ids
            self._memo_size += len(ids)
            self.tokenized += len(ids)
        max_length = self.formatter.max_length
        if self.rules is None:
            distinct = [self._memo[split[0]][-max_length:] for split in splits]
        else:
            distinct = [np.concatenate(self.rules.join(split, self._memo))[-max_length:] for split in splits]
        rows = [distinct[i] for i in order]
        self.returned += sum(len(row) for row in rows)
        return rows[0::2], rows[1::2]

    def _render(self, pairs: Iterable[Any]) -> tuple[list[int], list[list[Any]]]:
        """Where each input (chosen, rejected, chosen, ...) is among the distinct ones, and each
        distinct one rendered: its pieces and added tokens (`AddedTokenRules.split`) or [input]."""
        distinct: dict[tuple, int] = {}  # the roles and contents: all that `text` reads
        inputs, order = [], []
        for pair in pairs:
            prompt = tuple((m.role, m.content) for m in pair.conversation)
            for response in (pair.chosen, pair.rejected):
                key = (prompt, response.role, response.content)
                if key not in distinct:
                    distinct[key] = len(inputs)
                    inputs.append((pair.conversation, response))
                order.append(distinct[key])
        texts = self.formatter.texts(inputs)
        if not self.formatter.is_chat:
            return order, [[text] for text in texts]
        if self.rules is None:
            return order, [[text] for text, _ in texts]
        return order, [self.rules.split(text) for text, _ in texts]

    def _tokenize(self, pieces: list[Any]) -> list[list[int]]:
        if not pieces:
            return []
        tokenizer, max_length = self.formatter.tokenizer, self.formatter.max_length
        if not self.formatter.is_chat:
            texts, text_pairs = [text for text, _ in pieces], [text_pair for _, text_pair in pieces]
            return tokenizer(texts, text_pairs, truncation="longest_first", max_length=max_length)["input_ids"]
        if self.rules is None:
            return tokenizer(pieces)["input_ids"]
        backend = tokenizer.backend_tokenizer
        if backend.truncation is not None or backend.padding is not None:  # left behind by another call
            return tokenizer(pieces, add_special_tokens=False)["input_ids"]
        # No offsets: a third less work (`encode_batch_fast` is tokenizers >= 0.21).
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return [encoding.ids for encoding in encode(pieces, add_special_tokens=False)]

    def _rules_hold(self) -> bool:
        """A last check of `AddedTokenRules` on a probe input with the pitfalls: a system message,
        added tokens inside messages, next to each other and with whitespace on either side."""
        special = next(iter(self.rules.special_ids))
        probe = [Message(role="system", content=" sys\n"), Message(role="user", content=f"\n a{special} b ")]
        response = Message(role="assistant", content=f"  {special}\n\n{special}{special}x  y\n")
        try:
            return self([TextPair(probe, response, response)])[0][0].tolist() == self.formatter.encode(probe, response)
        finally:
            self._memo, self._memo_size, self.tokenized, self.returned = {}, 0, 0, 0


class AddedTokenRules(NamedTuple):
    """How one call of a fast tokenizer on a text is the same as calls on its pieces.

    The tokenizer first cuts the text at its added tokens (the leftmost-longest matches of those
    matched before normalization), then normalizes, pre-tokenizes and encodes each piece between
    them on its own, and its post-processor adds the special tokens of a single sequence around
    the result (`tokenizers`: `AddedVocabulary::extract_and_normalize`, then
    `PreTokenizedString::split` per piece). So the ids of a text are the prefix, then each piece's
    ids (tokenized alone, nothing added) and each added token's id in turn, then the suffix:
    provided no added token strips the whitespace beside it or matches only whole words, and no
    step depends on where its piece lies in the text (Metaspace's prepend scheme "first" does;
    the normalizers, pre-tokenizers and post-processors allowed below do not), and BPE has no
    dropout. `of` returns None for any other tokenizer.
    """

    pattern: Any  # re.Pattern: the added tokens, longest first, so the leftmost match is the longest
    special_ids: dict[str, Any]  # an added token's text -> its id, as a one-element array
    prefix: Any  # the post-processor's ids before a single sequence, and after it
    suffix: Any

    @classmethod
    def of(cls, tokenizer: Any) -> AddedTokenRules | None:
        import re

        import numpy as np

        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or getattr(tokenizer, "split_special_tokens", False) or getattr(backend, "encode_special_tokens", False):
            return None
        state = json.loads(backend.to_str())
        added = [token for token in state["added_tokens"] if not token["normalized"]]
        stripping = any(token["lstrip"] or token["rstrip"] or token["single_word"] for token in state["added_tokens"])
        model = state["model"]
        affixes = _single_sequence_affixes(state["post_processor"])
        if (not added or stripping or affixes is None or model["type"] != "BPE" or model.get("dropout")
                or not _piecewise(state["normalizer"], _PIECEWISE_NORMALIZERS, "normalizers")
                or not _piecewise(state["pre_tokenizer"], _PIECEWISE_PRE_TOKENIZERS, "pretokenizers")):
            return None
        texts = sorted((token["content"] for token in added), key=len, reverse=True)
        return cls(
            pattern=re.compile("(" + "|".join(map(re.escape, texts)) + ")"),
            special_ids={token["content"]: np.asarray([token["id"]], np.int32) for token in added},
            prefix=np.asarray(affixes[0], np.int32), suffix=np.asarray(affixes[1], np.int32),
        )

    def split(self, text: str) -> list[str]:
        """The pieces of `text` and the added tokens between them: piece, token, piece, ... piece."""
        return self.pattern.split(text)

    def join(self, split: list[str], piece_ids: dict[str, Any]) -> list[Any]:
        """The ids of `split`'s text, in parts, from the ids of its pieces."""
        parts = [self.prefix]
        for number, text in enumerate(split):
            parts.append(self.special_ids[text] if number % 2 else piece_ids[text])
        parts.append(self.suffix)
        return parts


# Steps that treat each piece alone, wherever it lies (checked against `tokenizers` 0.23).
_PIECEWISE_NORMALIZERS = {"NFC", "NFD", "NFKC", "NFKD"}
_PIECEWISE_PRE_TOKENIZERS = {"ByteLevel", "Split", "Digits", "Punctuation"}


def _piecewise(step: dict | None, allowed: set[str], members: str) -> bool:
    """Whether a normalizer or pre-tokenizer (`members`: the key of a Sequence's steps) is one of `allowed`."""
    if step is None:
        return True
    if step["type"] == "Sequence":
        return all(_piecewise(member, allowed, members) for member in step[members])
    if step["type"] == "ByteLevel" and step.get("add_prefix_space"):
        return False  # per piece too, but a space before each is not worth proving
    return step["type"] in allowed


def _single_sequence_affixes(processor: dict | None) -> tuple[list[int], list[int]] | None:
    """The ids a post-processor adds before and after a single sequence, or None if not known."""
    if processor is None or processor["type"] == "ByteLevel":  # ByteLevel moves offsets only
        return [], []
    if processor["type"] == "Sequence":
        prefix, suffix = [], []
        for member in processor["processors"]:
            affixes = _single_sequence_affixes(member)
            if affixes is None:
                return None
            prefix, suffix = affixes[0] + prefix, suffix + affixes[1]
        return prefix, suffix
    if processor["type"] != "TemplateProcessing":
        return None
    ids = [[], []]
    side = 0
    for item in processor["single"]:
        if "Sequence" in item:
            side = 1
        else:
            ids[side] += processor["special_tokens"][item["SpecialToken"]["id"]]["ids"]
    return ids[0], ids[1]


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
    import numpy as np
    import pyarrow as pa

    schema = _schema(identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with pa.OSFile(str(draft), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            encoder = PairEncoder(formatter)
            for pairs in chunks:
                chosen, rejected = encoder(pairs)
                lengths = np.maximum([len(ids) for ids in chosen], [len(ids) for ids in rejected]).astype(np.int32)
                writer.write_batch(pa.record_batch([_id_lists(chosen), _id_lists(rejected), pa.array(lengths)], schema=schema))
        os.replace(draft, path)
    finally:
        draft.unlink(missing_ok=True)
    return path


def _id_lists(rows: list[Any]):
    """A list<int32> Arrow array of int32 arrays, from their concatenation and offsets."""
    import numpy as np
    import pyarrow as pa

    offsets = np.zeros(len(rows) + 1, np.int32)
    np.cumsum([len(ids) for ids in rows], out=offsets[1:])
    values = np.concatenate(rows) if rows else np.zeros(0, np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


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
