"""Training data: preference pairs in, tokenized and length-grouped batches out."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from synpref.data.models import PreferencePair
from synpref.errors import RecordError, SynprefError
from synpref.rm.formatting import RewardFormatter

# Pairs per "megabatch" = batch size x this; sorting inside a megabatch groups similar
# lengths while keeping the order random across the epoch (as transformers' LengthGroupedSampler).
MEGABATCH_FACTOR = 50


def load_pairs(spec: str | Path, split: str | None = None) -> list[PreferencePair]:
    """Pairs from a workspace directory (optionally one split) or a file in any known format."""
    return list(iter_pairs(spec, split))


def as_pairs(source) -> list[PreferencePair]:
    """Pairs from what `train` accepts: a list of pairs, a `--data` path, a `pyarrow.Table`, a
    `pyarrow.dataset.Dataset` or an iterable of record batches of the workspace's pair rows."""
    if isinstance(source, (str, Path)):
        return load_pairs(source)
    if isinstance(source, list) and (not source or isinstance(source[0], PreferencePair)):
        return source
    from synpref.data.workspace import pair_from_row

    if hasattr(source, "to_batches"):
        source = source.to_batches()
    return [pair_from_row(row) for batch in source for row in batch.to_pylist()]


def iter_pairs(spec: str | Path, split: str | None = None) -> Iterator[PreferencePair]:
    """The pairs of `load_pairs`, read as they are needed (a workspace in record batches)."""
    path = Path(spec)
    if path.is_dir() and (path / "synpref.yaml").is_file():
        from synpref.data.workspace import Workspace

        return (pair for _, pair in Workspace(path).iter_pairs(split))
    return _read_file(str(spec))


def _read_file(spec: str) -> Iterator[PreferencePair]:
    import orjson

    from synpref.data.readers import detect_format, get_reader
    from synpref.data.sources import open_source, sample_records

    source = open_source(spec)
    reader = get_reader(detect_format(sample_records(source), spec))
    count = 0
    for number, payload in source.items():
        try:
            record = orjson.loads(payload) if isinstance(payload, bytes) else payload
            pair = reader.to_pair(record, source.name)
        except (RecordError, orjson.JSONDecodeError) as error:
            raise SynprefError(f"{spec}, {source.unit} {number}: {error}") from None
        count += 1
        yield pair
    if not count:
        raise SynprefError(f"{spec}: no preference pairs")


def encode_pairs(
    pairs: Sequence[PreferencePair], formatter: RewardFormatter
) -> list[tuple[list[int], list[int]]]:
    """(chosen ids, rejected ids) of every pair, through the shared formatter."""
    return [
        (formatter.encode(p.conversation, p.chosen), formatter.encode(p.conversation, p.rejected))
        for p in pairs
    ]


def epoch_batches(
    lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int, group_by_length: bool = True
) -> list[list[int]]:
    """The batches of one epoch, a pure function of (seed, epoch) so a resumed run sees the same.

    Pairs are shuffled; with `group_by_length`, each megabatch is sorted by length before being
    cut into batches, and the batches are shuffled again. An incomplete last batch is dropped
    so every optimizer step (and every process) sees the same number of pairs.
    """
    rng = random.Random(f"{seed}-{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        size = batch_size * MEGABATCH_FACTOR
        megabatches = [order[i : i + size] for i in range(0, len(order), size)]
        order = [i for mega in megabatches for i in sorted(mega, key=lambda i: -lengths[i])]
    batches = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches
