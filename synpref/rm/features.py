"""Frozen-backbone features of (conversation, response) inputs, cached by backbone and text.

A head-only reward model (`synpref.rm.head`) is a frozen backbone plus a Bradley-Terry head,
so the backbone runs once per distinct model input, ever: the features are cached under

    CACHE/<backbone>-<spec digest>/part-<first key>-<n>.parquet    columns key, vector

where `key` is a BLAKE2b hash of the exact model input (the text, and the text pair for
encoders); `synpref.data.vectors.VectorCache` keeps it resumable.

What a feature is depends on what the saved model's own head reads, so that the saved model
reproduces the fitted scores in a standard tool with no synpref code:

- decoders (the tokenizer has a chat template): the final hidden state at the last token,
  which `AutoModelForSequenceClassification`'s `score` layer reads;
- encoders (no chat template, e.g. MiniLM): pooled token embeddings over the text pair
  `[CLS] prompt [SEP] response [SEP]` (by default the mean and the sum / sqrt(length),
  concatenated), which a sentence-transformers `Pooling` module computes. BERT's own classification head reads the pooler output (tanh over [CLS]), which
  carries almost no preference signal for all-MiniLM-L6-v2 (0.50-0.52 gold accuracy with a
  linear head, against 0.60 for mean pooling; issue 15's calibration).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from synpref.data.models import Message
from synpref.data.vectors import shared_cache


@dataclass(frozen=True)
class FeatureSpec:
    """Which backbone reads the inputs, and how far."""

    backbone: str  # embedded name, Hub id or path
    max_length: int = 256  # tokens per input (encoders cut the longer of prompt and response)
    # Encoders: sentence-transformers pooling modes, concatenated. The mean carries the content;
    # the sum / sqrt(length) adds how long the input is, which the mean alone hides (the longer
    # answer wins 65% of the shared gold pairs).
    pooling: str = "mean,mean_sqrt_len_tokens"

    def digest(self) -> str:
        return hashlib.blake2b(json.dumps(asdict(self), sort_keys=True).encode(), digest_size=6).hexdigest()

    def directory(self, cache_root: Path) -> Path:
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(self.backbone).name)
        return Path(cache_root) / f"{slug}-{self.digest()}"


ModelInput = tuple[str, "str | None"]  # (text, text pair): RewardFormatter.text's output


def input_key(model_input: ModelInput) -> str:
    return hashlib.blake2b(json.dumps(list(model_input)).encode(), digest_size=16).hexdigest()


class Featurizer:
    """Features of model inputs, computed once per input and kept in the cache."""

    def __init__(self, spec: FeatureSpec, cache_root: Path, *, show_progress: bool | None = None, log=None):
        self.spec = spec
        name = f"features ({Path(spec.backbone).name})"
        self.cache = shared_cache(spec.directory(cache_root), desc=name, show_progress=show_progress)
        self._computed_before = self.cache.computed
        self._backbone: Any = None

    @property
    def computed(self) -> int:
        """Inputs run through the backbone since this object was made."""
        return self.cache.computed - self._computed_before

    @property
    def backbone(self):
        if self._backbone is None:
            self._backbone = load_backbone(self.spec)
        return self._backbone

    def formatter(self):
        return self.backbone.formatter

    def model_inputs(self, conversations_and_responses) -> list[ModelInput]:
        formatter = self.backbone.formatter
        return [formatter.text(conversation, response) for conversation, response in conversations_and_responses]

    def features(self, inputs: list[ModelInput]):
        """float32 matrix, one row per input, in input order (missing ones computed first)."""
        keys = [input_key(i) for i in inputs]
        return self.cache.get(keys, dict(zip(keys, inputs)), lambda chunk: self.backbone.encode(chunk))


def pair_inputs(featurizer: Featurizer, pairs) -> tuple[list[ModelInput], list[ModelInput]]:
    """(chosen inputs, rejected inputs) of preference pairs."""
    chosen = featurizer.model_inputs([(p.conversation, p.chosen) for p in pairs])
    rejected = featurizer.model_inputs([(p.conversation, p.rejected) for p in pairs])
    return chosen, rejected


def conversation_inputs(featurizer: Featurizer, conversations) -> list[ModelInput]:
    """Inputs of conversations whose last message is the response to score."""
    split = []
    for conversation in conversations:
        messages = [m if isinstance(m, Message) else Message(**m) for m in conversation]
        if len(messages) < 2 or messages[-1].role != "assistant":
            raise ValueError("a conversation to score needs a history and a final assistant message")
        split.append((messages[:-1], messages[-1]))
    return featurizer.model_inputs(split)


class _EncoderBackbone:
    """Mean-pooled token embeddings through sentence-transformers (what the saved model runs)."""

    kind = "encoder"

    def __init__(self, spec: FeatureSpec):
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

        from synpref.rm.formatting import RewardFormatter
        from synpref.rm.models import resolve_model_path

        transformer = Transformer(resolve_model_path(spec.backbone), max_seq_length=spec.max_length)
        modes = tuple(spec.pooling.split(","))
        pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode=modes)
        self.model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
        self.formatter = RewardFormatter(transformer.tokenizer, max_length=spec.max_length)
        self.dimension = transformer.get_embedding_dimension() * len(modes)

    def encode(self, inputs: list[ModelInput]):
        texts = [[text, pair] if pair is not None else text for text, pair in inputs]
        return self.model.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)


class _DecoderBackbone:
    """The final hidden state at the last token, read the way the score layer reads it."""

    kind = "decoder"

    def __init__(self, spec: FeatureSpec):
        import torch

        from synpref.rm.formatting import RewardFormatter
        from synpref.rm.models import load_reward_model
        from synpref.rm.scorer import best_device

        model, tokenizer = load_reward_model(spec.backbone, seed=0)
        self.dimension = model.score.in_features
        model.score = torch.nn.Identity()  # the "logits" become the hidden state the head reads
        self.model = model.to(best_device()).eval()
        self.formatter = RewardFormatter(tokenizer, max_length=spec.max_length)
        self.pad_token_id = tokenizer.pad_token_id

    def encode(self, inputs: list[ModelInput]):
        import numpy as np
        import torch

        from synpref.rm.scorer import model_inputs, token_budget_batches

        ids = [self.formatter.encode_text(text, pair) for text, pair in inputs]
        out = np.zeros((len(ids), self.dimension), dtype=np.float32)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for batch in token_budget_batches([len(i) for i in ids], 2048):
                batch_inputs = model_inputs([ids[i] for i in batch], self.pad_token_id)
                hidden = self.model(**{k: v.to(device) for k, v in batch_inputs.items()}).logits
                out[batch] = hidden.float().cpu().numpy()
        return out


_BACKBONES: dict[FeatureSpec, Any] = {}


def load_backbone(spec: FeatureSpec):
    """The backbone for a spec, loaded once per process (Stage 1, Stage 2 and scoring share it)."""
    if spec not in _BACKBONES:
        from transformers import AutoTokenizer

        from synpref.rm.models import resolve_model_path

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(spec.backbone))
        chat = bool(getattr(tokenizer, "chat_template", None))
        _BACKBONES[spec] = _DecoderBackbone(spec) if chat else _EncoderBackbone(spec)
    return _BACKBONES[spec]
