"""Head-only reward models: a Bradley-Terry head fitted on frozen backbone features.

On CPU, fine-tuning a backbone on tens of thousands of pairs takes hours; fitting a linear
head on cached features (`synpref.rm.features`) takes seconds, so every reward model of the
curation loop can see the whole pool. Full fine-tuning (`synpref.rm.trainer`) stays the path
for GPUs; the curation code scores both through `load_scorer`.

The head is r(x, y) = w . f(x, y) + b. It is fitted on standardised features (the scale is
folded back into w and b), minimising mean(-log sigmoid(r_chosen - r_rejected)) + l2 |w|^2
with L-BFGS; the l2 strength is picked from a grid by accuracy on the gold pairs (the
"checkpoint choice by gold accuracy" of a fine-tuning run). The bias does not change any
preference; it centres the rewards of the training inputs on 0.

Saved as a directory that scores with no synpref code:
- encoder backbone: a sentence-transformers model, Transformer -> Pooling -> Dense(dim -> 1,
  identity activation); `SentenceTransformer(dir).encode([[prompt, response]])` is the reward;
- decoder backbone: a transformers `AutoModelForSequenceClassification` directory whose
  `score` layer holds w (that layer has no bias, so the decoder's b is 0).
`synpref_head.json` beside them records the spec, w, b and the fit, for synpref's own scoring
from the feature cache.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synpref.data.workspace import write_json_atomic
from synpref.errors import SynprefError
from synpref.rm.features import FeatureSpec, Featurizer, conversation_inputs, pair_inputs
from synpref.rm.metrics import pairwise_accuracy
from synpref.rm.models import HEAD_FILE, head_kind

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class Head:
    weight: Any  # float64 vector, in raw feature units
    bias: float
    l2: float

    def rewards(self, features):
        return features.astype("float64") @ self.weight + self.bias


def fit_bt_head(chosen, rejected, *, l2: float, center=None, scale=None) -> Head:
    """The L2-regularised Bradley-Terry fit of a linear head on (chosen, rejected) features."""
    import numpy as np
    import torch

    chosen, rejected = np.asarray(chosen, np.float64), np.asarray(rejected, np.float64)
    both = np.concatenate([chosen, rejected])
    center = both.mean(axis=0) if center is None else center
    scale = both.std(axis=0) + 1e-6 if scale is None else scale
    difference = torch.from_numpy((chosen - rejected) / scale)
    weight = torch.zeros(difference.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight], lr=1, max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = -torch.nn.functional.logsigmoid(difference @ weight).mean() + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    raw = weight.detach().numpy() / scale
    return Head(weight=raw, bias=float(-(center @ raw)), l2=l2)


def select_head(chosen, rejected, gold_chosen=None, gold_rejected=None, *, grid=L2_GRID) -> tuple[Head, list[dict]]:
    """Fit one head per l2 in `grid`; keep the best on gold (the strongest l2 on a tie).

    Without gold (e.g. the gold RM itself), l2 is chosen by cross-validated accuracy on the
    training pairs. Returns the head and one row per fit.
    """
    if gold_chosen is None or len(gold_chosen) == 0:
        scores = [(cross_validated_accuracy(chosen, rejected, l2), l2) for l2 in grid]
        accuracy, l2 = max(scores, key=lambda s: (s[0], s[1]))
        return fit_bt_head(chosen, rejected, l2=l2), [{"l2": g, "cv_accuracy": a} for a, g in scores]
    fits = []
    for l2 in grid:
        head = fit_bt_head(chosen, rejected, l2=l2)
        accuracy = pairwise_accuracy(head.rewards(gold_chosen), head.rewards(gold_rejected))
        fits.append((accuracy, l2, head))
    best = max(fits, key=lambda f: (f[0], f[1]))
    return best[2], [{"l2": l2, "gold_accuracy": accuracy} for accuracy, l2, _ in fits]


def cross_validated_accuracy(chosen, rejected, l2: float, folds: int = 5) -> float:
    """Mean held-out accuracy over `folds` contiguous folds (pairs are in no particular order)."""
    import numpy as np

    chosen, rejected = np.asarray(chosen), np.asarray(rejected)
    bounds = np.linspace(0, len(chosen), folds + 1).astype(int)
    correct = 0
    for start, stop in zip(bounds[:-1], bounds[1:]):
        train = np.r_[0:start, stop:len(chosen)]
        head = fit_bt_head(chosen[train], rejected[train], l2=l2)
        correct += int((head.rewards(chosen[start:stop]) > head.rewards(rejected[start:stop])).sum())
    return correct / max(1, len(chosen))


def fit_head_model(pairs, output: Path, spec: FeatureSpec, cache_root: Path, *, gold=None, l2: float | None = None, log=print) -> dict[str, Any]:
    """Featurise, fit and save a head-only reward model; returns the training summary."""
    if not pairs:
        raise SynprefError("train --head-only: no training pairs")
    started = time.perf_counter()
    featurizer = Featurizer(spec, cache_root, log=log)
    chosen, rejected = (featurizer.features(x) for x in pair_inputs(featurizer, pairs))
    gold_features = [featurizer.features(x) for x in pair_inputs(featurizer, gold)] if gold else [None, None]
    if l2 is None:
        head, fits = select_head(chosen, rejected, *gold_features)
    else:
        head = fit_bt_head(chosen, rejected, l2=l2)
        fits = [{"l2": l2, "gold_accuracy": pairwise_accuracy(head.rewards(gold_features[0]), head.rewards(gold_features[1])) if gold else None}]
    if featurizer.backbone.kind == "decoder":
        head.bias = 0.0  # the score layer of a sequence-classification decoder has no bias
    save_head_model(featurizer, head, output)
    train_accuracy = pairwise_accuracy(head.rewards(chosen), head.rewards(rejected))
    best = next(f for f in fits if f["l2"] == head.l2)
    best.setdefault("gold_accuracy", None)
    summary = {
        "mode": "head_only", "pairs": len(pairs), "features_computed": featurizer.computed,
        "l2": head.l2, "fits": fits, "train_accuracy": train_accuracy,
        "best_gold_accuracy": best["gold_accuracy"], "best_step": 0, "steps": 0,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json_atomic(Path(output) / "training_summary.json", summary)
    if gold:
        # As `HeadScorer` scores them: the same features through the same saved head.
        import numpy as np

        from synpref.rm.saving import with_gold_rewards, write_gold_rewards

        rewards = head.rewards(np.concatenate(gold_features)).tolist()
        write_gold_rewards(output, rewards[: len(gold)], rewards[len(gold) :])
        summary = with_gold_rewards(summary, output)
    log(f"head-only RM: {len(pairs):,} pairs, l2 {head.l2:g}, train accuracy {train_accuracy:.4f}"
        + (f", gold accuracy {best['gold_accuracy']:.4f}" if gold else "") + f" -> {output}")
    return summary


def save_head_model(featurizer: Featurizer, head: Head, output: Path) -> None:
    """A directory a standard tool loads and scores with (see the module docstring)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    backbone = featurizer.backbone
    if backbone.kind == "encoder":
        _save_sentence_transformer(backbone, head, output)
    else:
        _save_sequence_classifier(featurizer.spec, head, output)
    write_head_record(featurizer, head, output)


def write_head_record(featurizer: Featurizer, head: Head, output: Path) -> None:
    """The head and its feature spec: all `HeadScorer` reads. Alone in a directory it is a
    model for synpref only (Stage 2's cross-fitting folds), not for standard tools."""
    Path(output).mkdir(parents=True, exist_ok=True)
    backbone = featurizer.backbone
    write_json_atomic(Path(output) / HEAD_FILE, {
        "kind": backbone.kind, "backbone": featurizer.spec.backbone, "max_length": featurizer.spec.max_length,
        "pooling": featurizer.spec.pooling,
        "weight": [float(v) for v in head.weight], "bias": head.bias, "l2": head.l2,
    })


def _save_sentence_transformer(backbone, head: Head, output: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    dense = Dense(
        backbone.dimension, 1, bias=True, activation_function=torch.nn.Identity(),
        init_weight=torch.tensor(head.weight, dtype=torch.float32).reshape(1, -1),
        init_bias=torch.tensor([head.bias], dtype=torch.float32),
    )
    modules = [*backbone.model, dense]
    SentenceTransformer(modules=modules, device="cpu").save(str(output))


def _save_sequence_classifier(spec: FeatureSpec, head: Head, output: Path) -> None:
    import torch

    from synpref.rm.models import load_reward_model
    from synpref.rm.saving import save_reward_model

    model, tokenizer = load_reward_model(spec.backbone, seed=0)
    with torch.no_grad():
        model.score.weight.copy_(torch.tensor(head.weight, dtype=model.score.weight.dtype).reshape(1, -1))
    save_reward_model(model, tokenizer, output)


def is_head_model(path: str | Path) -> bool:
    return head_kind(path) is not None


class HeadScorer:
    """Scores with a saved head-only model from the feature cache (backbone only for new inputs)."""

    def __init__(self, path: str | Path, cache_root: Path, *, show_progress: bool | None = None):
        import numpy as np

        meta = json.loads((Path(path) / HEAD_FILE).read_text())
        self.spec = FeatureSpec(meta["backbone"], meta["max_length"], meta["pooling"])
        self.head = Head(weight=np.asarray(meta["weight"], np.float64), bias=meta["bias"], l2=meta["l2"])
        self.featurizer = Featurizer(self.spec, cache_root, show_progress=show_progress)

    def score(self, conversations) -> list[float]:
        inputs = conversation_inputs(self.featurizer, conversations)
        return self.head.rewards(self.featurizer.features(inputs)).tolist()

    def score_pairs(self, pairs) -> tuple[list[float], list[float]]:
        chosen, rejected = pair_inputs(self.featurizer, pairs)
        features = self.featurizer.features(chosen + rejected)
        rewards = self.head.rewards(features).tolist()
        return rewards[: len(pairs)], rewards[len(pairs) :]
