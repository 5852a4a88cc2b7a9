"""Training and scoring steps shared by Stage 1, Stage 2 and the ablation.

Every reward model of the loop is trained as `config.rm` says: fine-tuned (`synpref.rm.trainer`,
the GPU path) or head-only on cached backbone features (`rm.head_only: true`, the CPU path that
affords the whole pool). Both are scored through `load_scorer`, so no other step cares which.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synpref.curate.config import CurateConfig
from synpref.data.models import PreferencePair


def feature_cache(workspace_root: Path) -> Path:
    """Where a workspace keeps backbone features (shared by every head-only RM it trains)."""
    return Path(workspace_root) / "cache" / "features"


def train_reward_model(config: CurateConfig, pairs: Any, output: Path, *, gold: Any = None,
                       workspace_root: Path | None = None) -> dict[str, Any]:
    """Train once into `output` (a finished run is reused: its summary file is written last).

    `pairs` and `gold`: lists of pairs or tables of pair rows (a selection of the store, never a
    file written for the trainer to read back). The summary carries `gold_rewards`, the saved
    model's (chosen, rejected) rewards of `gold`, so no caller loads the model to score gold.
    """
    from synpref.rm.config import TrainConfig
    from synpref.rm.saving import with_gold_rewards
    from synpref.rm.scorers import BASELINE_FILE, LENGTH_BASELINE
    from synpref.rm.trainer import train

    summary_file = output / "training_summary.json"
    if summary_file.is_file() and ((output / "config.json").is_file() or (output / BASELINE_FILE).is_file()):
        return with_gold_rewards(json.loads(summary_file.read_text()), output)
    options = config.rm_options()
    if options["model"] == LENGTH_BASELINE:
        return _length_baseline(output, gold)
    if options.get("head_only") and not options.get("feature_cache") and workspace_root is not None:
        options["feature_cache"] = str(feature_cache(workspace_root))
    # Without an evaluation step the best checkpoint by gold accuracy is the last step's one:
    # ask for a few gold evaluations so the selection means something.
    if gold is not None and not options.get("eval_every") and options.get("max_steps"):
        options["eval_every"] = max(1, options["max_steps"] // 4)
    return train(TrainConfig(output=str(output), **options), pairs=pairs_table(pairs), gold=gold)


def _length_baseline(output: Path, gold: Any) -> dict[str, Any]:
    """`rm.model: length-baseline`: the 'longer wins' reward model, nothing to train, as a
    directory the scorer factory loads: the loop's machinery measured without a model
    (bench/scale.py)."""
    from synpref.rm.data import as_pairs
    from synpref.rm.metrics import pairwise_accuracy
    from synpref.rm.saving import with_gold_rewards, write_gold_rewards
    from synpref.rm.scorers import BASELINE_FILE, LENGTH_BASELINE, LengthScorer

    output.mkdir(parents=True, exist_ok=True)
    (output / BASELINE_FILE).write_text(json.dumps({"kind": "length"}))
    summary: dict[str, Any] = {"mode": LENGTH_BASELINE, "steps": 0, "best_step": 0, "best_gold_accuracy": None}
    if gold is not None:
        chosen, rejected = LengthScorer().score_pairs(as_pairs(gold))
        write_gold_rewards(output, chosen, rejected)
        summary["best_gold_accuracy"] = pairwise_accuracy(chosen, rejected)
    (output / "training_summary.json").write_text(json.dumps(summary, indent=2))
    return with_gold_rewards(summary, output)


def pairs_table(pairs: Any):
    """A table of pair rows for the trainer: lists of pairs are converted, tables pass through."""
    if not isinstance(pairs, list):
        return pairs
    import json as _json

    import pyarrow as pa

    from synpref.data.stage0 import PAIR_SCHEMA, pairs_to_batch

    if not pairs:
        return PAIR_SCHEMA.empty_table()
    return pa.Table.from_batches([pairs_to_batch(pairs, [""] * len(pairs), [_json.dumps(p.stored_meta()) for p in pairs])])


def load_scorer(model: str, config: CurateConfig, workspace_root: Path | None = None, *, max_length: int | None = None,
                token_budget: int | None = None):
    """The scorer of a model the loop trained or was given (`synpref.rm.scorers.load_scorer`: a
    directory, the length baseline or a server URL), head-only models from the workspace's features."""
    from synpref.rm.scorers import load_scorer as scorer_for

    return scorer_for(model, feature_cache=feature_cache(workspace_root) if workspace_root is not None else None,
                      max_length=max_length or config.score_max_length, token_budget=token_budget or config.token_budget)


def gold_probabilities(model: str, pairs: list[PreferencePair], config: CurateConfig, workspace_root: Path | None = None,
                       rewards: tuple[list[float], list[float]] | None = None) -> list[float]:
    """p = sigmoid(r_w - r_l) of every gold pair under `model` (gold is stored chosen = human-preferred);
    `rewards`: the ones training returned, so the model is not loaded again."""
    from synpref.retrieval.adaptive import preference_probability

    chosen, rejected = rewards if rewards is not None else load_scorer(model, config, workspace_root).score_pairs(pairs)
    return [preference_probability(c, r) for c, r in zip(chosen, rejected)]


def gold_pairs(workspace) -> list[PreferencePair]:
    """The workspace's gold split (human-verified, small): the trainers' gold."""
    return [p for _, p in workspace.iter_pairs("gold")]
