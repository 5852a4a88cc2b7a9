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


def train_reward_model(config: CurateConfig, data: str, output: Path, *, split: str | None = None,
                       gold: str | None = None, workspace_root: Path | None = None) -> dict[str, Any]:
    """Train once into `output` (a finished run is reused: its summary file is written last)."""
    from synpref.rm.config import TrainConfig
    from synpref.rm.trainer import train

    summary_file = output / "training_summary.json"
    if summary_file.is_file() and (output / "config.json").is_file():
        return json.loads(summary_file.read_text())
    options = config.rm_options()
    if options.get("head_only") and not options.get("feature_cache") and workspace_root is not None:
        options["feature_cache"] = str(feature_cache(workspace_root))
    # Without an evaluation step the best checkpoint by gold accuracy is the last step's one:
    # ask for a few gold evaluations so the selection means something.
    if gold is not None and not options.get("eval_every") and options.get("max_steps"):
        options["eval_every"] = max(1, options["max_steps"] // 4)
    return train(TrainConfig(data=data, output=str(output), split=split, gold=gold, **options))


def load_scorer(model: str, config: CurateConfig, workspace_root: Path | None = None, *, max_length: int | None = None,
                token_budget: int | None = None):
    """A scorer with `score_pairs` for a fine-tuned or a head-only reward model directory."""
    from synpref.rm.head import HeadScorer, is_head_model

    if is_head_model(model):
        from synpref.rm.models import cache_dir

        root = feature_cache(workspace_root) if workspace_root is not None else cache_dir() / "features"
        return HeadScorer(model, root, show_progress=False)
    from synpref.rm.scorer import RewardScorer

    return RewardScorer.from_pretrained(
        model, max_length=max_length or config.score_max_length, token_budget=token_budget or config.token_budget, show_progress=False
    )


def gold_probabilities(model: str, pairs: list[PreferencePair], config: CurateConfig, workspace_root: Path | None = None) -> list[float]:
    """p = sigmoid(r_w - r_l) of every gold pair under `model` (gold is stored chosen = human-preferred)."""
    from synpref.retrieval.adaptive import preference_probability

    chosen, rejected = load_scorer(model, config, workspace_root).score_pairs(pairs)
    return [preference_probability(c, r) for c, r in zip(chosen, rejected)]


def write_pairs(path: Path, pairs: list[PreferencePair]) -> Path:
    """Pairs as (gzipped) JSONL in the synpref format, written atomically: a training file."""
    import gzip

    import orjson

    tmp = path.with_name(path.name + ".tmp")
    opener = gzip.open(tmp, "wb", compresslevel=1) if path.suffix == ".gz" else open(tmp, "wb")
    with opener as handle:
        for p in pairs:
            handle.write(orjson.dumps({"conversation": [m.model_dump() for m in p.conversation], "chosen": p.chosen.model_dump(),
                                       "rejected": p.rejected.model_dump(), "source": p.source}) + b"\n")
    tmp.replace(path)
    return path


def gold_file(workspace) -> Path:
    """The workspace's gold split as a file (written once), for the trainers' --gold."""
    path = Path(workspace.root) / "runs" / "gold.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_pairs(path, [p for _, p in workspace.iter_pairs("gold")])
    return path
