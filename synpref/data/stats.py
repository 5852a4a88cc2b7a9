"""`synpref stats`: what a workspace holds, by source, split, turns and length."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow.compute as pc

from synpref.data.workspace import Workspace

# Upper bounds (characters of history + chosen + rejected) of the length buckets.
LENGTH_BUCKETS = [(1_000, "<1k"), (4_000, "1k-4k"), (16_000, "4k-16k"), (64_000, "16k-64k")]
TURN_BUCKETS = ["1", "2", "3", "4+"]


def workspace_stats(workspace: Workspace) -> dict[str, Any]:
    sources: Counter[str] = Counter()
    splits: Counter[str] = Counter()
    turns: Counter[str] = Counter()
    lengths: Counter[str] = Counter()
    for path in workspace.shards():
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["split", "source", "conversation", "chosen", "rejected"])
        sources.update(table.column("source").to_pylist())
        splits.update(table.column("split").to_pylist())
        conversation = table.column("conversation").combine_chunks()
        flat = conversation.flatten()
        owner = pc.list_parent_indices(conversation).to_numpy()
        is_user = pc.equal(flat.field("role"), "user").to_numpy(zero_copy_only=False)
        user_turns = np.bincount(owner, weights=is_user, minlength=len(table)).astype(int)
        turns.update(TURN_BUCKETS[min(n, 4) - 1] if n else "0" for n in user_turns)
        chars = np.bincount(
            owner, weights=pc.utf8_length(flat.field("content")).to_numpy(), minlength=len(table)
        )
        for name in ("chosen", "rejected"):
            chars += pc.utf8_length(table.column(name).combine_chunks().field("content")).to_numpy()
        lengths.update(_length_bucket(n) for n in chars)
    quarantined = sum(1 for path in workspace.quarantine_files() for _ in path.open("rb"))
    return {
        "pairs": sum(sources.values()),
        "quarantined": quarantined,
        "by_source": dict(sorted(sources.items())),
        "by_split": dict(sorted(splits.items())),
        "by_user_turns": {k: turns[k] for k in TURN_BUCKETS if turns[k]},
        "by_length_chars": {label: lengths[label] for _, label in LENGTH_BUCKETS + [(0, ">=64k")] if lengths[label]},
    }


def _length_bucket(chars: float) -> str:
    for bound, label in LENGTH_BUCKETS:
        if chars < bound:
            return label
    return ">=64k"
