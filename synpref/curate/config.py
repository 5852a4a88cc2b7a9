"""`CurateConfig`: every curation option in one place, read from a YAML file.

Precedence: `--set key=value` on the command line > the YAML file (`--config`, else
WORKSPACE/curate.yaml when present) > the defaults below. Unknown keys are errors.

    embedder: minilm-l6
    judges:                       # the `synpref annotate` judges file, inline
      judges: [{name: smol, backend: local, model: smollm2-135m}]
      examples: 4
    rm: {model: minilm-l6, max_steps: 60}   # synpref train's options (TrainConfig), but data/output/gold/split
    stage1: {iterations: 2, seed_size: 500}
    stage2: {margin: 0.1, rule: gold_and_either, flip: reversed_passes}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from synpref.annotate.config import JobConfig
from synpref.config import load_yaml, set_dotted, validated

CONFIG_FILE = "curate.yaml"

Rule = Literal["gold_and_either", "gold_and_best", "gold_and_llm"]
Flip = Literal["off", "all", "reversed_passes"]


# MiniLM trains ~8x faster than SmolLM2 on CPU; a GPU run sets a real backbone here.
RM_DEFAULTS = {"model": "minilm-l6", "max_length": 512, "batch_size": 8, "learning_rate": 3e-5,
               "max_steps": 0, "epochs": 1, "seed": 0, "tensorboard": False, "log_every": 10}
# Set by each step for the reward model it trains, not by the config.
PER_RUN = ("data", "output", "gold", "split")


def _rm_config() -> type[BaseModel]:
    """`TrainConfig`'s options as a pydantic model (the loop's defaults above): `rm:` is checked
    key by key and type by type when the curation config is read, not when a step trains.
    `rm.model: length-baseline` is the 'longer wins' baseline (nothing to train)."""
    from pydantic import create_model

    from synpref.rm.config import config_fields

    fields = {name: (kind, Field(RM_DEFAULTS.get(name, default), description=help))
              for name, kind, default, help in config_fields() if name not in PER_RUN}
    return create_model("RMConfig", __config__=ConfigDict(extra="forbid"), **fields)


RMConfig = _rm_config()


class Stage1Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(2, ge=1)  # the paper ran 8
    # When the workspace has no silver split: this many pool pairs (first in pool order) are
    # taken as the seed's LLM-verified silver, in their given orientation.
    seed_size: int = Field(0, ge=0)
    max_retrieved: Optional[int] = Field(None, ge=1)  # judging budget per iteration (None: all)
    # Humans in the loop: up to this many retrieved pairs per iteration that no gated judge
    # decided (the gold pairs the RM gets most wrong asked for them first) go to the annotation
    # app's queue; the iteration then waits until their labels are exported (`synpref label
    # export`) and finishes on the next run. 0: no humans in Stage 1.
    human_budget: int = Field(0, ge=0)
    human_annotations: int = Field(1, ge=1)  # annotators per queued pair (they must agree, or an admin adjudicates)


class Stage2Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    margin: float = Field(0.1, ge=0, lt=0.5)  # best-RM p > 0.5 + margin skips LLM annotation
    rule: Rule = "gold_and_either"  # label must agree with the gold RM and with: LLM or best RM | best RM | LLM
    flip: Flip = "off"  # recycle non-kept pairs swapped: never | all | when the swapped pair passes the rule
    limit: Optional[int] = Field(None, ge=1)  # only the first N remaining pool pairs (a subsample)
    best_model: Optional[str] = None  # default: the last Stage 1 iteration's model
    gold_model: Optional[str] = None  # default: trained here on every gold pair
    max_judged: Optional[int] = Field(None, ge=0)  # LLM budget: pairs past it go unjudged (no LLM support)
    scope: Literal["unlabelled", "all"] = "unlabelled"  # all: decide Stage 1's pairs too (every pool pair)
    # With scope all, the best RM would vouch for the very labels it was trained on. Those pairs
    # get their best-RM p from k RMs of the same recipe, each trained without a k-th of them
    # (out-of-fold); 0 keeps the best RM's own p. Each fold is one more training run.
    cross_fit: int = Field(5, ge=0)

    @field_validator("cross_fit")
    @classmethod
    def _folds(cls, value: int) -> int:
        if value == 1:
            raise ValueError("1 fold leaves nothing to train on: use 0 (off) or 2 or more")
        return value


class JudgeGateConfig(BaseModel):
    """Each judge's say is measured on gold first (synpref/curate/gating.py)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True  # off: judges vote as configured, unmeasured
    calibration_pairs: int = Field(50, ge=1)  # gold pairs each judge labels to earn its weight
    alpha: float = Field(0.05, gt=0, lt=1)  # a judge must beat chance at this significance
    seed: int = 0  # which gold pairs are the calibration sample


class CurateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    embedder: str = Field("minilm-l6", description="sentence-transformers model: embedded name, path or Hub id; or hashing (feature hashing, for measuring the machinery)")
    embedding_dtype: Literal["float16", "float32"] = Field(
        "float16", description="stored embedding vectors: float16 halves disk and reads; float32 keeps every neighbour tie as computed"
    )
    exact_index_max: int = Field(200_000, ge=0, description="larger pools are searched through a compressed faiss IVF-PQ index (recall@k logged) instead of exactly")
    k_max: int = Field(8, ge=1, description="neighbours per gold pair the RM gets wrong (the paper's 8)")
    judges: Optional[JobConfig] = None  # LLM judges; required unless stage2.rule is gold_and_best
    rm: RMConfig = Field(default_factory=RMConfig)  # the training options of every RM trained here
    score_max_length: int = Field(512, ge=8, description="tokens per scored input (longer keep their end)")
    token_budget: int = Field(8192, ge=64, description="tokens per scoring batch, padding included")
    shard_size: int = Field(256, ge=1, description="pairs per Parquet shard: the unit of work and of resume")
    executor: Literal["local", "ray"] = Field(
        "local", description="local, or ray: shards run as ray.data map_batches tasks (RAY_ADDRESS picks a cluster; unset: a local runtime)"
    )
    ray_workers: int = Field(2, ge=1, description="concurrent Ray actors (each loads the models once)")
    stage1: Stage1Config = Field(default_factory=Stage1Config)
    stage2: Stage2Config = Field(default_factory=Stage2Config)
    judge_gate: JudgeGateConfig = Field(default_factory=JudgeGateConfig)

    def rm_options(self) -> dict[str, Any]:
        return self.rm.model_dump()


def load_curate_config(workspace_root: Path, path: Path | None = None, overrides: list[str] | None = None) -> CurateConfig:
    """Defaults < YAML (`path`, else WORKSPACE/curate.yaml if present) < `key=value` overrides."""
    if path is None and (Path(workspace_root) / CONFIG_FILE).is_file():
        path = Path(workspace_root) / CONFIG_FILE
    data: dict[str, Any] = {}
    if path is not None:
        data = load_yaml(path, f"{path}: cannot read the curation config") or {}
    for override in overrides or []:
        set_dotted(data, override)
    return validated(CurateConfig, data, str(path or "curate config"))
