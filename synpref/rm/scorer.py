"""`RewardScorer`: the one scorer that evaluation, curation and serving share.

Inference only. Inputs are tokenized once, sorted by length and cut into batches that hold at
most `token_budget` tokens including padding, so long inputs go a few at a time, short ones
many at a time, and almost no compute is spent on padding. Scores come back in input order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from synpref.data.models import Message, PreferencePair
from synpref.rm.formatting import RewardFormatter

# Inputs from which a progress bar is shown when `show_progress` is left to decide.
PROGRESS_FROM = 256

# Tokens per forward pass (padding included) when `token_budget` is left to decide. On a GPU one
# sequence leaves the device mostly idle, so large batches pay; on CPU one sequence of a few
# hundred tokens already keeps the cores busy, and batches past ~1-4k tokens get slower
# (attention and activations spill out of cache; measured in bench/RESULTS.md).
GPU_TOKEN_BUDGET = 16384
CPU_TOKEN_BUDGET = 1024


def default_token_budget(device_type: str) -> int:
    return CPU_TOKEN_BUDGET if device_type == "cpu" else GPU_TOKEN_BUDGET


def best_device() -> str:
    """"cuda" when a GPU is visible, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class RewardScorer:
    """Scores conversations (a history plus a final assistant message) with a reward model.

    `packing` (default) lays sequences back to back without padding where the model's head is
    known (`synpref.rm.packing`); scores equal the padded ones. `dtype` converts the model (e.g. torch.bfloat16, much faster on CPUs with bf16 matrix
    units); None keeps it as loaded. The model stays on its device (`from_pretrained` puts it on
    a GPU when there is one). `token_budget` None picks by that device (`default_token_budget`).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_length: int = 4096,
        token_budget: int | None = None,
        dtype: Any = None,
        show_progress: bool | None = None,
        packing: bool = True,
    ):
        if dtype is not None:
            model = model.to(dtype)
        self.model = model
        self.formatter = RewardFormatter(tokenizer, max_length=max_length)
        self.pad_token_id = tokenizer.pad_token_id
        self.segment_separator = segment_separator(model, tokenizer)
        device_type = next(model.parameters()).device.type
        self.token_budget = token_budget or default_token_budget(device_type)
        self.show_progress = show_progress
        from synpref.rm.packing import reward_reading

        # Where packing reads the reward; None: padded batches (packing off, or a head not known).
        self.reading = reward_reading(model) if packing else None

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: str | None = None, **kwargs: Any) -> RewardScorer:
        """Load a model by embedded name, Hub id or path onto `device` (default: `best_device()`).

        A head-only encoder model (a sentence-transformers directory, `synpref.rm.head`) is not a
        sequence-classification model: loading its backbone as one would score with a fresh,
        random head. Such a directory is refused here, with the way to score it.
        """
        from synpref.rm.models import head_kind, load_reward_model

        if head_kind(name_or_path) == "encoder":
            from synpref.errors import SynprefError

            raise SynprefError(
                f"{name_or_path} is a head-only encoder reward model (a sentence-transformers directory): "
                "score it with synpref.rm.head.HeadScorer or SentenceTransformer(DIR).encode([[history, reply]])"
            )
        model, tokenizer = load_reward_model(name_or_path)
        return cls(model.to(device or best_device()), tokenizer, **kwargs)

    def score(self, conversations: Sequence[Sequence[Message | dict]]) -> list[float]:
        """One reward per conversation, in input order."""
        encoded = [self.formatter.encode_messages(c) for c in conversations]
        return self.score_ids(encoded)

    def score_pairs(self, pairs: Sequence[PreferencePair]) -> tuple[list[float], list[float]]:
        """(chosen rewards, rejected rewards) of preference pairs, in one scoring pass.

        Packed on a decoder, a pair whose shared prompt is longer than its shorter reply is one
        tree, the prompt computed once (`synpref.rm.packing`); with shorter prompts the tree's
        wider rows would cost more attention than the prompt saves.
        """
        from synpref.rm.packing import pair_items

        encoded = [(self.formatter.encode(p.conversation, p.chosen), self.formatter.encode(p.conversation, p.rejected))
                   for p in pairs]
        if not encoded:
            return [], []
        share = (lambda tree: len(tree.prefix) > min(map(len, tree.suffixes))) if self.reading == "last" else None
        items, order = pair_items(encoded, share)
        rewards = self._score_items(items, to_list=False)[order.to(self.device)].tolist()
        return rewards[: len(pairs)], rewards[len(pairs) :]

    def score_ids(self, encoded: Sequence[list[int]]) -> list[float]:
        """One reward per token-id sequence, in input order."""
        from synpref.rm.packing import Item

        return self._score_items([Item(ids) for ids in encoded])

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _score_items(self, items, *, to_list: bool = True):
        """Rewards of packing items (a pair gives chosen then rejected), in input order.

        Results stay on the device until the end (`to_list` False: returned there, as a tensor): one synchronisation per call, so a GPU is
        never left waiting for the host between forward passes.
        """
        import torch
        from tqdm.auto import tqdm

        from synpref.rm.packing import pack, packed_rewards, plan_passes

        show = self.show_progress if self.show_progress is not None else len(items) >= PROGRESS_FROM
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        readouts = torch.tensor([0] + [item.readouts for item in items]).cumsum(0)
        scores = torch.zeros(int(readouts[-1]), device=device)
        lengths = [len(item) for item in items]
        passes = plan_passes(lengths, self.token_budget) if self.reading else token_budget_batches(lengths, self.token_budget)
        with torch.inference_mode(), tqdm(total=len(items), desc="scoring", disable=not show) as bar:
            for batch in passes:
                if self.reading:
                    packed = pack([items[i] for i in batch], reading=self.reading, pad_token_id=self.pad_token_id,
                                  separator=self.segment_separator).to(device)
                    rewards = packed_rewards(self.model, packed, self.reading)
                    slots = torch.cat([torch.arange(readouts[i], readouts[i + 1]) for i in batch])
                else:
                    inputs = model_inputs([items[i].prefix for i in batch], self.pad_token_id, self.segment_separator)
                    rewards = self.model(**{k: v.to(device) for k, v in inputs.items()}).logits[:, 0].float()
                    slots = torch.tensor(batch)
                scores[slots.to(device)] = rewards
                bar.update(len(batch))
        self.model.train(was_training)
        return scores.tolist() if to_list else scores


def token_budget_batches(lengths: Sequence[int], token_budget: int) -> Iterator[list[int]]:
    """Indices grouped longest first so that batch size x longest length <= token_budget.

    An input longer than the budget on its own still gets a batch of one.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    for index in order:
        longest = lengths[batch[0]] if batch else lengths[index]
        if batch and (len(batch) + 1) * longest > token_budget:
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def pad_batch(sequences: Sequence[list[int]], pad_token_id: int):
    """(input_ids, attention_mask), padded on the right to the longest sequence."""
    import torch

    lengths = torch.tensor([len(s) for s in sequences])
    attention_mask = (torch.arange(int(lengths.max())) < lengths[:, None]).long()
    input_ids = torch.full(attention_mask.shape, pad_token_id, dtype=torch.long)
    # Boolean indexing fills row by row, left to right: the flattened sequences in order.
    input_ids[attention_mask.bool()] = torch.tensor([t for s in sequences for t in s], dtype=torch.long)
    return input_ids, attention_mask


def segment_separator(model: Any, tokenizer: Any) -> int | None:
    """The SEP id when the model has segment embeddings (BERT-style text pairs), else None."""
    has_segments = getattr(model.config, "type_vocab_size", 1) > 1
    return tokenizer.sep_token_id if has_segments and tokenizer.sep_token_id is not None else None


def model_inputs(sequences: Sequence[list[int]], pad_token_id: int, separator: int | None = None) -> dict:
    """Padded model inputs; with a `separator`, token_type_ids marking the text pair's second
    part (everything after the first SEP), as the tokenizer itself would have given them."""
    input_ids, attention_mask = pad_batch(sequences, pad_token_id)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if separator is not None:
        after_first_separator = (input_ids == separator).long().cumsum(dim=1) - (input_ids == separator).long()
        inputs["token_type_ids"] = ((after_first_separator > 0) & attention_mask.bool()).long()
    return inputs

