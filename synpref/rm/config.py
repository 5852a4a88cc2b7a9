"""`TrainConfig`: every training option, its default and its help, in one place.

The `synpref train` options and the keys of a `--config` YAML file are generated from it.
Precedence: command line > YAML file > the defaults below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, get_args, get_origin, get_type_hints

import yaml

from synpref.errors import SynprefError

RESOLVED_CONFIG_FILE = "synpref_train.yaml"


def option(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    data: str = option("", "training pairs: a workspace directory or a JSONL/JSON/Parquet file (gzip or not)")
    output: str = option("", "output directory: the best model as a Hugging Face directory, checkpoints, logs")
    model: str = option("smollm2-135m", "backbone: Hub id, local path, or smollm2-135m / minilm-l6")
    split: Optional[str] = option(None, "only pairs of this split when --data is a workspace (default: all)")
    gold: Optional[str] = option(None, "gold pairs to evaluate on (file, or a workspace: its gold split)")
    max_length: int = option(1024, "tokens per input; longer inputs keep their end (the response)")
    batch_size: int = option(8, "pairs per micro-batch per process")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step")
    learning_rate: float = option(4e-6, "peak learning rate (the paper's development value below 8B)")
    lr_schedule: Literal["linear", "constant"] = option("linear", "linear: warmup then linear decay to 0; constant: warmup then flat")
    warmup_ratio: float = option(0.03, "share of the optimizer steps spent warming up linearly from 0")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: off)")
    epochs: int = option(1, "passes over the data (the paper trains 1 epoch)")
    max_steps: int = option(0, "stop after this many optimizer steps (0: run all epochs)")
    margin: float = option(0.0, "Bradley-Terry margin: the loss asks for r_chosen - r_rejected >= margin")
    center_rewards_coef: float = option(0.0, "reward-centering weight: adds coef * mean((r_chosen + r_rejected)^2)")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass: less memory, ~30% slower")
    mixed_precision: Literal["no", "bf16", "fp16"] = option("no", "compute dtype; bf16 is fast on GPUs and CPUs with bf16 units (see --master-weights); fp16 runs under autocast with loss scaling")
    master_weights: bool = option(True, "with bf16: the model itself is bf16 and the optimizer updates fp32 master copies of its weights (DeepSpeed's and Megatron's bf16: no casts in the forward pass, half the activation memory); off: fp32 weights under autocast (accelerate's and TRL's bf16). DeepSpeed and FSDP launches keep their own scheme")
    packing: Literal["pairs", "sequences", "off"] = option("pairs", "pairs: no padding, and a pair whose prompt + both replies fit in the batch's longest sequence is one tree, its shared prompt computed once (decoders; encoders pack sequences); sequences: no padding, chosen and rejected apart; off: padded batches")
    group_by_length: bool = option(True, "batch pairs of similar length together (little padding)")
    eval_every: int = option(0, "evaluate on --gold every N optimizer steps (0: only at the end)")
    save_every: int = option(0, "write a resumable checkpoint every N optimizer steps (0: never)")
    resume: bool = option(False, "continue from the latest checkpoint in --output")
    log_every: int = option(10, "print and record metrics every N optimizer steps")
    tensorboard: bool = option(True, "write TensorBoard logs to OUTPUT/tensorboard")
    seed: int = option(0, "seed for the score head, the data order and dropout")
    head_only: bool = option(False, "freeze the backbone: cache its features once per input and fit a Bradley-Terry head on them in seconds (CPU-sized; see synpref/rm/head.py)")
    l2: Optional[float] = option(None, "head-only: L2 strength of the head (default: the best of a grid on --gold)")
    feature_cache: Optional[str] = option(None, "head-only: feature cache folder (default: WORKSPACE/cache/features when --data is a workspace, else ~/.cache/synpref/features)")
    token_cache: Optional[str] = option(None, "tokenized-pair cache folder, shared by reruns and by every process of a launch (default: WORKSPACE/cache/tokens when --data is a workspace, else ~/.cache/synpref/tokens)")

    def validate(self, *, pairs_given: bool = False) -> TrainConfig:
        """Check the options; `pairs_given`: the caller hands `train` its pairs, so no --data."""
        if not self.data and not pairs_given:
            raise SynprefError("train: --data is required")
        if not self.output:
            raise SynprefError("train: --output is required")
        for name in ("batch_size", "gradient_accumulation_steps", "max_length", "epochs"):
            if getattr(self, name) < 1:
                raise SynprefError(f"train: {name} must be at least 1")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_fields() -> list[tuple[str, Any, Any, str]]:
    """(name, type, default, help) of every option, in declaration order."""
    hints = get_type_hints(TrainConfig)
    return [(f.name, hints[f.name], f.default, f.metadata["help"]) for f in dataclasses.fields(TrainConfig)]


def load_train_config(yaml_path: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults, then the YAML file, then `overrides` (values that are None are not given)."""
    values: dict[str, Any] = {}
    if yaml_path is not None:
        values.update(_read_yaml(Path(yaml_path)))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**{k: _coerce(k, v) for k, v in values.items()}).validate()


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise SynprefError(f"{path}: cannot read the training config: {error}") from None
    if not isinstance(data, dict):
        raise SynprefError(f"{path}: expected a mapping of option names to values")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SynprefError(f"{path}: unknown keys {unknown}; known keys: {sorted(known)}")
    return data


def _coerce(name: str, value: Any) -> Any:
    """Check a value against the field's type, converting ints to floats where a float is due."""
    kind = get_type_hints(TrainConfig)[name]
    if get_origin(kind) is Literal:
        if value not in get_args(kind):
            raise SynprefError(f"{name}: {value!r} is not one of {list(get_args(kind))}")
        return value
    base = next((a for a in get_args(kind) if a is not type(None)), kind) if get_origin(kind) else kind
    if value is None and get_origin(kind):
        return None
    if base is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads 4e-6 (no dot) as a string
        except ValueError:
            raise SynprefError(f"{name}: expected a number, got {value!r}") from None
    if base is bool and not isinstance(value, bool) or base is not bool and isinstance(value, bool):
        raise SynprefError(f"{name}: expected {base.__name__}, got {value!r}")
    if not isinstance(value, base):
        raise SynprefError(f"{name}: expected {base.__name__}, got {value!r}")
    return value


def save_resolved_config(config: TrainConfig, directory: Path) -> None:
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    (directory / RESOLVED_CONFIG_FILE).write_text(text)
