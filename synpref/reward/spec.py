"""The reward spec: per task type, which verifier runs and how its result meets the RM's score.

```yaml
default_task: math            # the task of a label given as a plain reference string
tasks:
  math:
    verifier: math            # a name in synpref.reward.verifiers.VERIFIERS; null: RM only
    combine: hybrid           # rule | rm | hybrid: w_rm * f(rm) + w_rule * rule
    w_rm: 0.5
    w_rule: 1.0
    rm: {transform: clip, threshold: 2.0}   # f: identity | clip (min(rm, t)) | sigmoid((rm - t) / temperature)
    unparseable_penalty: 0.5  # subtracted when no answer can be read from the response
limits: {time_s: 2.0, memory_mb: 1024, workers: 2}  # the verifier processes (synpref.reward.sandbox)
```

`rule` is 1 for a correct answer, 0 otherwise. Unknown keys anywhere are errors, and so is a number
that is not finite (a NaN weight would answer every reward as NaN); the resolved spec (defaults
filled in) is what the server saves beside its logs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from synpref.config import load_yaml, validated

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


class RmTransform(BaseModel):
    """f(rm): keeps an over-optimised RM from paying ever more (Skywork R1V2's calibrated thresholds)."""

    model_config = _STRICT

    transform: Literal["identity", "clip", "sigmoid"] = Field("identity", description="identity: the raw score; clip: min(score, threshold); sigmoid: sigmoid((score - threshold) / temperature)")
    threshold: float | None = Field(None, description="calibrated RM score (see `synpref reward score`'s report)")
    # A tiny temperature makes the sigmoid a step; below 1e-6 it only overflows.
    temperature: float = Field(1.0, ge=1e-6, description="sigmoid only: RM-score units per unit of logit")

    @model_validator(mode="after")
    def _threshold_needed(self) -> RmTransform:
        if self.transform != "identity" and self.threshold is None:
            raise ValueError(f"rm.transform {self.transform} needs rm.threshold")
        return self


class TaskSpec(BaseModel):
    model_config = _STRICT

    verifier: str | None = Field(None, description="verifier name; null: no rule, the RM alone")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword options of the verifier (e.g. choice: {letters: ABCD})")
    combine: Literal["rule", "rm", "hybrid"] = Field("hybrid", description="rule: the verifier alone; rm: f(rm) alone; hybrid: w_rm * f(rm) + w_rule * rule")
    w_rm: float = 1.0
    w_rule: float = 1.0
    rm: RmTransform = Field(default_factory=RmTransform)
    unparseable_penalty: float = Field(0.0, ge=0, description="subtracted from the reward when the verifier reads no answer")

    @model_validator(mode="after")
    def _verifier_usable(self) -> TaskSpec:
        from synpref.reward.verifiers import get_verifier

        if self.verifier is None:
            if self.combine != "rm":
                raise ValueError(f"combine: {self.combine} needs a verifier")
            return self
        get_verifier(self.verifier, self.options)  # a ValueError names an unknown verifier or option
        return self


class VerifierLimits(BaseModel):
    """Where verifiers run: worker processes that a hostile reply cannot take down with them."""

    model_config = _STRICT

    time_s: float = Field(2.0, gt=0, le=60, description="wall time per item; past it the worker is killed and the item is unparseable")
    memory_mb: int = Field(1024, ge=256, description="address space of a verifier process; past it the item is unparseable")
    workers: int = Field(2, ge=1, le=64, description="verifier processes (each verifies one batch at a time)")


class RewardSpec(BaseModel):
    model_config = _STRICT

    default_task: str
    tasks: dict[str, TaskSpec] = Field(min_length=1)
    limits: VerifierLimits = Field(default_factory=VerifierLimits)

    @model_validator(mode="after")
    def _default_known(self) -> RewardSpec:
        if self.default_task not in self.tasks:
            raise ValueError(f"default_task {self.default_task!r} is not among the tasks ({', '.join(self.tasks)})")
        return self

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def digest(self) -> str:
        """Short hash of the resolved spec, logged so a run's rewards can be traced to it."""
        return hashlib.sha256(self.to_yaml().encode()).hexdigest()[:12]


def load_spec(path: Path) -> RewardSpec:
    return validated(RewardSpec, load_yaml(path, f"reward spec {path}"), f"reward spec {path}", whole="spec")


def save_spec(spec: RewardSpec, directory: Path) -> Path:
    """Write the resolved spec as `reward-spec.yaml` in `directory` (beside logs or results)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "reward-spec.yaml"
    path.write_text(f"# sha256 {spec.digest()}\n" + spec.to_yaml())
    return path
