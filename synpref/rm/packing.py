"""Padding-free batches: sequences packed back to back, kept apart by the attention mask.

A forward pass is a few rows of one width. Each row holds several *items* side by side; an item
is one sequence, or a preference pair as a tree: the prefix that chosen and rejected share (the
prompt and chat-template tokens), then the chosen suffix, then the rejected suffix. Every token
carries the position it would have in its own sequence (the rejected suffix continues after the
prefix, as if the chosen one were not there) and may attend only to its own item -- and within a
pair item, only to the prefix and its own suffix. So a packed score equals the padded one, and a
pair's prompt is computed once instead of twice (decoders only: an encoder's prompt tokens attend
to the response, so its prompt is not shareable).

The mask is a dense (rows, 1, width, width) boolean mask that SDPA takes on CPU and GPU (a
varlen/flash kernel would skip the masked blocks; transformers' flash path needs flash-attn,
which CPU machines do not have). Widths stay at the longest item of the pass, so the masked
attention costs no more than padding to the longest did. For decoders, `causal_attention`
replaces one masked SDPA call per layer by one call per 256-query chunk against the keys up
to the chunk's end (the mask is causal within a row, so the rest is masked anyway), with the
query heads that share a key/value head folded into the query axis: it skips the upper
triangle that a masked kernel computes and discards, and runs larger matrix products.

The reward is read where the model's own head reads it: at each sequence's last token for a
decoder's `score` layer, at the first ([CLS]) token through the pooler for BERT.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Item:
    """One sequence (`suffixes` empty) or a pair tree: `prefix` + each suffix as its own branch."""

    prefix: Sequence[int]
    suffixes: tuple[Sequence[int], ...] = ()

    def __len__(self) -> int:
        return len(self.prefix) + sum(len(s) for s in self.suffixes)

    @property
    def readouts(self) -> int:
        return max(1, len(self.suffixes))


def pair_item(chosen: Sequence[int], rejected: Sequence[int]) -> Item:
    """The pair as a tree over its longest common prefix, cut so both suffixes keep a token
    (each reward is read at its suffix's last token)."""
    limit = min(len(chosen), len(rejected)) - 1
    shared = 0
    while shared < limit and chosen[shared] == rejected[shared]:
        shared += 1
    return Item(chosen[:shared], (chosen[shared:], rejected[shared:]))


def pair_items(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], share) -> tuple[list[Item], Any]:
    """Packing items for (chosen, rejected) pairs: one tree where `share(tree)` holds, else the
    two sequences; and the permutation that puts the rewards in order [chosen..., rejected...]."""
    trees = {}
    if share is not None:
        trees = {i: tree for i, tree in enumerate(pair_item(c, r) for c, r in pairs) if share(tree)}
    unshared = [i for i in range(len(pairs)) if i not in trees]
    items = list(trees.values()) + [Item(ids) for i in unshared for ids in pairs[i]]
    slots = [slot for i in [*trees, *unshared] for slot in (i, len(pairs) + i)]
    return items, torch.tensor(slots, dtype=torch.long).argsort()


def reward_reading(model: Any) -> str | None:
    """Where packing reads the reward: "last" (a decoder's `score` head), "first" (BERT's pooled
    [CLS]), or None when this model's head is not known here (then the padded path is used)."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return None
    if hasattr(model, "score"):
        return "last"
    if config.model_type == "bert" and getattr(model.bert, "pooler", None) is not None:
        return "first"
    return None


def place(lengths: Sequence[int], width: int) -> tuple[list[tuple[int, int]], int]:
    """First fit in the given order: (row, column) of each item and the number of rows."""
    free: list[int] = []
    spots = []
    for length in lengths:
        row = next((r for r, room in enumerate(free) if room >= length), None)
        if row is None:
            row = len(free)
            free.append(width)
        spots.append((row, width - free[row]))
        free[row] -= length
    return spots, len(free)


def plan_passes(lengths: Sequence[int], token_budget: int) -> Iterator[list[int]]:
    """Item indices per forward pass, longest first; a pass's width is its first item's length
    and it holds rows x width <= token_budget (an item longer than the budget goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    free: list[int] = []
    for index in order:
        length = lengths[index]
        if not any(room >= length for room in free):
            if batch and (len(free) + 1) * lengths[batch[0]] > token_budget:
                yield batch
                batch, free = [], []
            free.append(lengths[batch[0]] if batch else length)
        row = next(r for r, room in enumerate(free) if room >= length)
        free[row] -= length
        batch.append(index)
    if batch:
        yield batch


@dataclass
class PackedBatch:
    """Model inputs of one packed pass and where each reward is read (flattened row x width)."""

    inputs: dict[str, Any]
    read_index: Any

    def to(self, device: Any) -> PackedBatch:
        """On a GPU through pinned memory without waiting, so the host goes on to the next batch."""
        pinned = torch.device(device).type == "cuda"

        def move(tensor):
            return tensor.pin_memory().to(device, non_blocking=True) if pinned else tensor.to(device)

        return PackedBatch({k: move(v) for k, v in self.inputs.items()}, move(self.read_index))


def pack(items: Sequence[Item], *, reading: str, pad_token_id: int, separator: int | None = None,
         width: int | None = None) -> PackedBatch:
    """Lay `items` into rows of `width` (at least the longest item) and build their inputs.

    Rewards come back (from `packed_rewards`) item by item, a pair's chosen before its rejected.
    """
    if reading != "last" and any(item.suffixes for item in items):
        raise ValueError("pair trees need a causal model: an encoder's prompt attends to its response")
    width = max([width or 0] + [len(item) for item in items])
    spots, rows = place([len(item) for item in items], width)
    # One entry per piece (a prefix or a suffix): its tokens, first position, branch and item.
    pieces, position_starts, branches, owners, starts, reads = [], [], [], [], [], []
    for number, (item, (row, column)) in enumerate(zip(items, spots)):
        start = row * width + column
        pieces.append(item.prefix)
        position_starts.append(0)
        branches.append(0)
        cursor = start + len(item.prefix)
        for branch, suffix in enumerate(item.suffixes, start=1):
            pieces.append(suffix)
            position_starts.append(len(item.prefix))
            branches.append(branch)
            cursor += len(suffix)
            reads.append(cursor - 1)
        if not item.suffixes:
            reads.append(start if reading == "first" else cursor - 1)
        owners += [number] * (1 + len(item.suffixes))
        starts.append(start)
    lengths = torch.tensor([len(p) for p in pieces])
    piece_starts = torch.tensor([0] + [len(item) for item in items]).cumsum(0)[:-1]
    ids = torch.tensor([token for piece in pieces for token in piece], dtype=torch.long)
    # Where each token goes: its item's start in the flat (rows x width) grid plus its offset in the item.
    piece_offsets = lengths.cumsum(0) - lengths
    item_of_token = torch.repeat_interleave(torch.tensor(owners), lengths)
    offset_in_item = torch.arange(len(ids)) - torch.repeat_interleave(piece_starts, torch.tensor([len(i) for i in items]))
    target = torch.tensor(starts)[item_of_token] + offset_in_item
    offset_in_piece = torch.arange(len(ids)) - torch.repeat_interleave(piece_offsets, lengths)

    def grid(values, fill: int):
        out = torch.full((rows * width,), fill, dtype=torch.long)
        out[target] = values
        return out.view(rows, width)

    input_ids = grid(ids, pad_token_id)
    inputs = {
        "input_ids": input_ids,
        "position_ids": grid(torch.repeat_interleave(torch.tensor(position_starts), lengths) + offset_in_piece, 0),
        # Padding is its own group, so its rows of the mask are never empty (no NaN from softmax).
        "group": grid(item_of_token, -1),
        "branch": grid(torch.repeat_interleave(torch.tensor(branches), lengths), 0),
    }
    if separator is not None:
        # BERT text pairs: token type 1 after the first [SEP] of each item, as the tokenizer gives.
        is_separator = (ids == separator).long()
        seen = is_separator.cumsum(0) - is_separator
        seen_before_item = torch.cat([torch.zeros(1, dtype=torch.long), is_separator.cumsum(0)])[
            torch.repeat_interleave(piece_starts, torch.tensor([len(i) for i in items]))]
        inputs["token_type_ids"] = grid(((seen - seen_before_item) > 0).long(), 0)
    return PackedBatch(inputs, torch.tensor(reads))


def attention_mask(group: Any, branch: Any, *, causal: bool) -> Any:
    """(rows, 1, width, width) boolean: same item, and the shared prefix or the same branch."""
    mask = (group[:, :, None] == group[:, None, :]) & (
        (branch[:, None, :] == 0) | (branch[:, :, None] == branch[:, None, :])
    )
    if causal:
        width = group.shape[1]
        mask &= torch.ones(width, width, dtype=torch.bool, device=group.device).tril()
    return mask[:, None]


CAUSAL_ATTENTION = "synpref_packed_causal"
QUERY_CHUNK = 256


class _ChunkMasks(threading.local):
    """The per-chunk masks of the last packed mask seen (per thread), built once per forward
    pass, not once per layer."""

    mask: Any = None
    groups: int = 0
    chunks: list[tuple[int, int, Any]] = []

    def of(self, mask: Any, groups: int) -> list[tuple[int, int, Any]]:
        if mask is not self.mask or groups != self.groups:
            rows, _, width, _ = mask.shape
            chunks = []
            for start in range(0, width, QUERY_CHUNK):
                end = min(width, start + QUERY_CHUNK)
                part = mask[:, :, start:end, :end]
                # Query heads sharing a key/value head lie one after the other on the query axis.
                part = part[:, :, None].expand(rows, 1, groups, end - start, end).reshape(rows, 1, groups * (end - start), end)
                chunks.append((start, end, part))
            self.mask, self.groups, self.chunks = mask, groups, chunks
        return self.chunks

    def clear(self) -> None:
        self.mask, self.chunks = None, []


_CHUNK_MASKS = _ChunkMasks()


def causal_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                     scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    """A transformers attention function for packed causal batches (see the module docstring).

    `query` is (rows, heads, width, dim), `key`/`value` (rows, kv heads, width, dim) and
    `attention_mask` a boolean (rows, 1, width, width) mask that is lower triangular in the row
    (`attention_mask(..., causal=True)`); returns (rows, width, heads, dim) as transformers' SDPA
    function does, with the same values.
    """
    rows, heads, width, dim = query.shape
    if (attention_mask is None or attention_mask.dtype != torch.bool or key.shape[2] != width
            or any(kwargs.get(name) is not None for name in ("softcap", "sinks", "s_aux", "position_bias"))):
        # Not a packed pass, or a model whose attention adds terms: transformers' own SDPA path
        # (which raises where SDPA cannot do what the model asks).
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    folded = query.view(rows, kv_heads, groups, width, dim)
    outputs = []
    for start, end, mask in _CHUNK_MASKS.of(attention_mask, groups):
        chunk = folded[:, :, :, start:end].reshape(rows, kv_heads, groups * (end - start), dim)
        out = torch.nn.functional.scaled_dot_product_attention(
            chunk, key[:, :, :end], value[:, :, :end], attn_mask=mask, dropout_p=dropout, scale=scaling)
        outputs.append(out.view(rows, kv_heads, groups, end - start, dim))
    out = torch.cat(outputs, dim=3).view(rows, heads, width, dim)
    return out.transpose(1, 2).contiguous(), None


class _PackedCausalAttention:
    """Runs a decoder's attention layers with `causal_attention` where they would use SDPA.

    Not under activation checkpointing with gradients: its recomputation runs in the backward
    pass, after this context has restored SDPA, and must repeat the forward pass exactly.
    """

    def __init__(self, model: Any):
        self.config = model.config
        recomputes = torch.is_grad_enabled() and any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
        self.active = getattr(self.config, "_attn_implementation", None) == "sdpa" and not recomputes

    def __enter__(self) -> None:
        if self.active:
            from transformers import AttentionInterface

            AttentionInterface.register(CAUSAL_ATTENTION, causal_attention)
            self.config._attn_implementation = CAUSAL_ATTENTION

    def __exit__(self, *exc: Any) -> None:
        if self.active:
            self.config._attn_implementation = "sdpa"
        _CHUNK_MASKS.clear()


def packed_rewards(model: Any, batch: PackedBatch, reading: str) -> Any:
    """One reward per readout of the packed items, in fp32, left on the model's device."""
    inputs = dict(batch.inputs)
    group, branch = inputs.pop("group"), inputs.pop("branch")
    inputs["attention_mask"] = attention_mask(group, branch, causal=reading == "last")
    base = getattr(model, model.base_model_prefix)
    if reading == "last":
        with _PackedCausalAttention(base):
            hidden = base(**inputs, use_cache=False).last_hidden_state
        picked = hidden.flatten(0, 1)[batch.read_index]
        return model.score(picked)[:, 0].float()
    hidden = base(**inputs).last_hidden_state
    picked = hidden.flatten(0, 1)[batch.read_index]
    pooled = base.pooler(picked[:, None, :])
    return model.classifier(model.dropout(pooled))[:, 0].float()


class RewardForward(torch.nn.Module):
    """A reward model whose forward takes packed batches (and padded ones), as one module:
    accelerate, DDP and autocast then wrap the whole computation, the readout included.

    `forward(inputs)` with padded inputs gives the model's own pooled score; with `read_index`
    the inputs are a packed batch's (`PackedBatch.inputs`). Rewards in fp32.
    """

    def __init__(self, model: Any, reading: str | None):
        super().__init__()
        self.model = model
        self.reading = reading

    def forward(self, inputs: dict[str, Any], read_index: Any = None) -> Any:
        if read_index is None:
            return self.model(**inputs).logits[:, 0].float()
        return packed_rewards(self.model, PackedBatch(inputs, read_index), self.reading)
