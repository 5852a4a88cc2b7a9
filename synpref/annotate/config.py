"""The judges file given to `synpref annotate --judges CONFIG`: who judges, and how.

Example (YAML):

    judges:
      - name: qwen
        backend: openai
        model: Qwen/Qwen3-8B
        base_url: http://localhost:8000/v1
        api_key_env: VLLM_API_KEY
        concurrency: 16
        samples: 3
        temperature: 0.7
    combine: majority
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from synpref.config import load_yaml, validated


class JudgeConfig(BaseModel):
    """One LLM judge: a backend, a model and how to call it."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""  # how results and reports name this judge (default: the model)
    backend: str = "openai"  # a name in the backend registry: openai | local
    model: str = "smollm2-135m"  # server model id; for `local`, a path or an embedded name
    base_url: Optional[str] = None  # OpenAI-compatible endpoint, e.g. http://localhost:8000/v1
    api_key_env: Optional[str] = "OPENAI_API_KEY"  # environment variable holding the key; null: none
    concurrency: int = Field(8, ge=1)  # requests in flight at once for this model
    samples: int = Field(1, ge=1)  # answers per pair, reduced by majority (self-consistency)
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(512, ge=1)  # completion budget per answer
    seed: int = 0  # sample i is asked with seed + i, so samples differ and reruns hit the cache
    timeout: float = Field(60.0, gt=0)  # seconds before a request counts as hung and is retried
    max_retries: int = Field(5, ge=0)  # retries on 429, 5xx, timeouts and broken responses
    backoff_base: float = Field(1.0, ge=0)  # first retry waits up to this many seconds (doubling)
    backoff_max: float = Field(60.0, ge=0)  # no backoff or Retry-After wait is longer than this
    structured_output: Literal["json_schema", "json_object", "none"] = "json_schema"
    price_input: float = Field(0.0, ge=0)  # cost per prompt token, in your currency
    price_output: float = Field(0.0, ge=0)  # cost per completion token
    weight: float = Field(1.0, ge=0)  # weighted combining, until agreement with gold is measured
    # local backend: bfloat16 is ~3x faster than float32 on CPUs with bf16 units (AMX, AVX512-BF16)
    dtype: Literal["float32", "bfloat16"] = "bfloat16"

    @model_validator(mode="after")
    def _default_name(self) -> JudgeConfig:
        self.name = self.name or self.model
        return self


class JobConfig(BaseModel):
    """Everything one annotation job needs besides the pairs."""

    model_config = ConfigDict(extra="forbid")

    judges: list[JudgeConfig] = Field(min_length=1)
    combine: Literal["majority", "weighted"] = "majority"  # how models' verdicts are combined
    min_agreement: float = Field(0.5, ge=0, le=1)  # below this share of the vote: unsure
    both_orders: bool = False  # ask each sample twice, candidates swapped, against position bias
    examples: int = Field(8, ge=0, le=8)  # similar human-labelled pairs shown to the judge
    parse_retries: int = Field(2, ge=0)  # malformed answers asked again before failing
    retry_temperature: float = Field(0.7, ge=0)  # a greedy retry would repeat the same answer
    max_text_chars: int = Field(4000, ge=100)  # longer messages are cut, to bound prompt size
    seed: int = 0  # candidate order and example shuffling
    objective_only: bool = True  # preverify: only pairs whose attributes say objective

    @model_validator(mode="after")
    def _unique_names(self) -> JobConfig:
        names = [judge.name for judge in self.judges]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"judge names must be unique; repeated: {', '.join(duplicates)}")
        return self


def load_job_config(path: str | Path) -> JobConfig:
    """Read and validate a judges file; errors name the file and the field."""
    data = load_yaml(path, f"{path}: cannot read judges config") or {}
    return validated(JobConfig, data, str(path))
