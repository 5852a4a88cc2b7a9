"""Saved reward-model directories (issue 16): the reward-model template and token settings, the
files transformers 4.51 needs, and (acceptance 4) the same scores in transformers 4.51.

The 4.51 check needs a second environment, which tests cannot install offline; it runs when
SYNPREF_TF451_PYTHON names its interpreter, e.g.

    python3 -m venv /tmp/tf451
    /tmp/tf451/bin/pip install torch==2.13.0 'transformers==4.51.*' safetensors
    SYNPREF_TF451_PYTHON=/tmp/tf451/bin/python pytest tests/rm/test_rm_saving.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).with_name("plain_transformers_scores.py")
CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello there!"}, {"role": "user", "content": "Name a colour."},
     {"role": "assistant", "content": "Blue."}],
    [{"role": "user", "content": "Tell me a joke."}, {"role": "assistant", "content": "No."}],
]  # fmt: skip


def save(name: str, directory: Path) -> Path:
    from synpref.rm.models import load_reward_model
    from synpref.rm.saving import save_reward_model

    model, tokenizer = load_reward_model(name, seed=0)
    save_reward_model(model, tokenizer, directory)
    return directory


def test_a_saved_smollm2_directory_carries_the_reward_format(tiny_llama_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from synpref.rm.formatting import TEMPLATE_MARK
    from synpref.rm.saving import save_reward_model

    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    save_reward_model(model, tokenizer, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["rope_theta"], config["rope_scaling"]) == (config["rope_parameters"]["rope_theta"], None)
    tokenizer_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tokenizer_config["bos_token"] is None  # <|im_start|> opens every message
    assert tokenizer_config["model_input_names"] == ["input_ids", "attention_mask"]
    template = (tmp_path / "chat_template.jinja").read_text()
    assert template.startswith(TEMPLATE_MARK) and tokenizer_config["chat_template"] == template
    saved = AutoTokenizer.from_pretrained(tmp_path)
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert saved.apply_chat_template(conversation, tokenize=False) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>"
    assert saved.apply_chat_template(conversation[:1], tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.bos_token == "<|im_start|>"  # the caller's tokenizer is left alone


def plain_scores(python: str, directory: Path, conversations_path: Path) -> list[float]:
    result = subprocess.run([python, str(SCRIPT), str(directory), str(conversations_path)],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.environ.get("SYNPREF_TF451_PYTHON"), reason="set SYNPREF_TF451_PYTHON to a python with transformers 4.51")
@pytest.mark.parametrize("backbone", ["smollm2-135m", "minilm-l6"])
def test_transformers_4_51_scores_a_saved_model_the_same(backbone, tmp_path):
    from synpref.data.models import Message
    from synpref.rm.scorer import RewardScorer

    directory = save(backbone, tmp_path / backbone)
    conversations_path = tmp_path / "conversations.json"
    conversations_path.write_text(json.dumps(CONVERSATIONS))
    older = plain_scores(os.environ["SYNPREF_TF451_PYTHON"], directory, conversations_path)
    current = plain_scores(sys.executable, directory, conversations_path)
    ours = RewardScorer.from_pretrained(str(directory), device="cpu").score([[Message(**m) for m in c] for c in CONVERSATIONS])
    assert older == pytest.approx(current, abs=1e-5)
    assert older == pytest.approx(ours, abs=1e-5)
