"""Save a reward model as a directory that other tools score exactly as synpref does.

Every reward model synpref writes (`synpref train`, head-only decoders) goes through
`save_reward_model`, so each directory

- carries the reward-model chat template (`synpref.rm.formatting.reward_chat_template`): plain
  `apply_chat_template`, the Skywork-Reward-V2 model-card recipe, TRL, rewardbench and the
  queries an RLHF trainer builds from this tokenizer render synpref's input format;
- has no BOS token when the BOS is a chat header (SmolLM2's `<|im_start|>`), so that recipes
  which strip "a duplicated BOS" do not cut the first message's header;
- loads in transformers 4.51 (what rewardbench pins) as well as 5.x: 5.x writes a tokenizer
  class, a null quantization entry and a rope layout that 4.51 refuses or, worse, misreads
  (without a top-level `rope_theta` 4.51 silently uses its default base and scores wrongly).

`make_compatible` applies the last point alone, to directories that are not reward models (the
SmolLM2 base model synpref converts into its model cache).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from synpref.rm.formatting import bos_is_chat_header, reward_chat_template

# Tokenizer classes transformers 5 writes that 4.x does not know, and the 4.x class that reads
# the same tokenizer.json.
_TOKENIZER_CLASSES_4X = {"TokenizersBackend": "PreTrainedTokenizerFast"}


def save_reward_model(model: Any, tokenizer: Any, output: str | Path, state_dict: dict[str, Any] | None = None) -> None:
    """Write `model` (a sequence classifier) and `tokenizer` as a standard directory; with
    `state_dict`, these weights instead of the model's own (the config names their dtype)."""
    output = Path(output)
    model.save_pretrained(output, safe_serialization=True, state_dict=state_dict)
    save_reward_tokenizer(tokenizer, output)
    dtype = None
    if state_dict is not None:
        dtype = next(str(v.dtype).removeprefix("torch.") for v in state_dict.values() if v.is_floating_point())
    _compatible_config(output / "config.json", dtype)


def save_reward_tokenizer(tokenizer: Any, output: str | Path) -> None:
    """Write `tokenizer` with the reward-model template and special-token settings.

    Also the tokenizer to hand other trainers (TRL's RewardTrainer) so they see synpref's ids.
    The caller's tokenizer is left as it is: the files are edited after saving.
    """
    output = Path(output)
    tokenizer.save_pretrained(output)
    path = output / "tokenizer_config.json"
    config = json.loads(path.read_text())
    if getattr(tokenizer, "chat_template", None):
        template = reward_chat_template(tokenizer)
        # Both places: transformers 5 reads chat_template.jinja, 4.x the config entry.
        (output / "chat_template.jinja").write_text(template)
        config["chat_template"] = template
        if bos_is_chat_header(tokenizer):
            config["bos_token"] = None
    path.write_text(json.dumps(_compatible_tokenizer_config(config, tokenizer.model_input_names), indent=2, ensure_ascii=False) + "\n")


def make_compatible(directory: str | Path, tokenizer: Any) -> None:
    """Rewrite the 5.x-only entries of a saved model directory (config.json, tokenizer_config.json)
    so that transformers 4.51 loads it as 5.x does; `tokenizer` is the one saved there. Each file
    is replaced whole: other processes may be loading the directory (a shared model cache)."""
    directory = Path(directory)
    path = directory / "tokenizer_config.json"
    config = _compatible_tokenizer_config(json.loads(path.read_text()), tokenizer.model_input_names)
    template = directory / "chat_template.jinja"
    if template.is_file():  # transformers 5 reads the file, 4.x the config entry
        config.setdefault("chat_template", template.read_text())
    _replace(path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    _compatible_config(directory / "config.json")


def needs_compatible(directory: str | Path) -> bool:
    """Whether a saved directory holds a tokenizer class that transformers 4.x does not know."""
    path = Path(directory) / "tokenizer_config.json"
    return path.is_file() and json.loads(path.read_text()).get("tokenizer_class") in _TOKENIZER_CLASSES_4X


def _compatible_tokenizer_config(config: dict[str, Any], model_input_names: list[str]) -> dict[str, Any]:
    config["tokenizer_class"] = _TOKENIZER_CLASSES_4X.get(config.get("tokenizer_class"), config.get("tokenizer_class"))
    # 4.x's generic fast tokenizer would otherwise also return token_type_ids, which Llama refuses.
    config["model_input_names"] = list(model_input_names)
    extra = config.get("extra_special_tokens")
    if isinstance(extra, list):  # 4.x expects a {name: token} mapping here
        config.pop("extra_special_tokens")
        config.setdefault("additional_special_tokens", extra)
    return config


def _compatible_config(path: Path, dtype: str | None = None) -> None:
    """Rewrite the 5.x-only entries of config.json so that 4.51 reads the same model."""
    config = json.loads(path.read_text())
    if dtype is not None:
        config["dtype"] = config["torch_dtype"] = dtype
    if "quantization_config" in config and config["quantization_config"] is None:
        del config["quantization_config"]  # 4.51 calls .get on it
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        config.setdefault("rope_scaling", None if scaling.get("rope_type", "default") == "default" else scaling)
    if "dtype" in config:
        config.setdefault("torch_dtype", config["dtype"])
    _replace(path, json.dumps(config, indent=2) + "\n")


def _replace(path: Path, text: str) -> None:
    """Write `path` through a temporary file, so that a reader sees the old file or the new one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def write_gold_rewards(output: Path, chosen: list[float], rejected: list[float]) -> None:
    """The saved model's rewards of the gold pairs, in gold order (written with the model)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = Path(output) / "gold_rewards.parquet.tmp"
    pq.write_table(pa.table({"chosen": pa.array(chosen, pa.float64()), "rejected": pa.array(rejected, pa.float64())}), tmp)
    tmp.replace(Path(output) / "gold_rewards.parquet")


def with_gold_rewards(summary: dict[str, Any], output: Path) -> dict[str, Any]:
    """`summary` with `gold_rewards`: (chosen, rejected) of the saved model, when it had gold."""
    import pyarrow.parquet as pq

    path = Path(output) / "gold_rewards.parquet"
    if not path.is_file():
        return summary
    table = pq.read_table(path)
    return {**summary, "gold_rewards": (table.column("chosen").to_pylist(), table.column("rejected").to_pylist())}
