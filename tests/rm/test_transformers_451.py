"""Models synpref caches and saves load in transformers 4.51 (what rewardbench pins) and give the
same outputs as in 5.x (issue 28): the SmolLM2 base model converted into the model cache, and a
reward model trained by `synpref.rm.trainer`.

The 4.51 side runs in a second environment, built once per session in a temporary folder from
this environment's torch, transformers 4.51, tokenizers and safetensors (about 40 s with a warm
pip cache), or the interpreter SYNPREF_TF451_PYTHON names. Skipped, with pip's reason, where it
cannot be built (no network).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rm.conftest import arithmetic_records, write_records
from tests.rm.test_rm_saving import CONVERSATIONS

pytest.importorskip("torch")

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def tf451_python(tmp_path_factory) -> str:
    if os.environ.get("SYNPREF_TF451_PYTHON"):
        return os.environ["SYNPREF_TF451_PYTHON"]
    venv = tmp_path_factory.mktemp("transformers-4.51") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    torch = "torch==" + importlib.metadata.version("torch").split("+")[0]  # the one installed here, never a CUDA build
    result = subprocess.run([python, "-m", "pip", "install", "--quiet", torch, "transformers==4.51.*", "tokenizers", "safetensors"],
                            capture_output=True, text=True, timeout=1200)  # fmt: skip
    if result.returncode != 0:
        reason = [line for line in result.stderr.splitlines() if line.startswith("ERROR")] or result.stderr.splitlines()[-1:]
        pytest.skip(f"cannot build a transformers 4.51 environment: {' '.join(reason)[:300]}")
    return python


def run_script(python: str, script: str, model_dir: Path, tmp_path: Path, conversations: list) -> list:
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(conversations))
    result = subprocess.run([python, str(HERE / script), str(model_dir), str(path)],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_cached_base_model_loads_in_4_51_with_the_same_outputs(tf451_python, smollm2_dir, tmp_path):
    config = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"  # 5.x writes TokenizersBackend, unknown to 4.x
    prompts = [conversation[:-1] for conversation in CONVERSATIONS]
    older = run_script(tf451_python, "base_model_logits.py", smollm2_dir, tmp_path, prompts)
    current = run_script(sys.executable, "base_model_logits.py", smollm2_dir, tmp_path, prompts)
    for old, new in zip(older, current, strict=True):
        assert old["ids"] == new["ids"]  # the same chat template and tokens
        assert old["argmax"] == new["argmax"]
        assert old["logits"] == pytest.approx(new["logits"], abs=1e-4)


def test_a_trained_model_scores_the_same_in_4_51(tf451_python, tiny_llama_dir, tmp_path):
    from synpref.data.models import Message
    from synpref.rm.config import TrainConfig
    from synpref.rm.scorer import RewardScorer
    from synpref.rm.trainer import train

    data = write_records(tmp_path / "train.jsonl", arithmetic_records(16, seed=3))
    model_dir = tmp_path / "trained"
    train(TrainConfig(data=str(data), output=str(model_dir), model=str(tiny_llama_dir), batch_size=4, learning_rate=1e-3,
                      warmup_ratio=0.25, max_steps=2, tensorboard=False))  # fmt: skip
    older = run_script(tf451_python, "plain_transformers_scores.py", model_dir, tmp_path, CONVERSATIONS)
    current = run_script(sys.executable, "plain_transformers_scores.py", model_dir, tmp_path, CONVERSATIONS)
    ours = RewardScorer.from_pretrained(str(model_dir), device="cpu").score([[Message(**m) for m in c] for c in CONVERSATIONS])
    assert older == pytest.approx(current, abs=1e-4)
    assert older == pytest.approx(ours, abs=1e-4)
    assert len({round(score, 4) for score in ours}) == 3  # distinct scores: the comparison can fail
