"""Training: learning, exact resume, multi-process equivalence, plain-transformers loading
(acceptance 4, 5, 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from synpref.data.models import Message
from synpref.rm.config import TrainConfig
from synpref.rm.trainer import train

from .conftest import arithmetic_records, write_records

CONVERSATIONS = [
    [Message(role="user", content="What is 3 + 4?"), Message(role="assistant", content="3 + 4 = 7")],
    [Message(role="user", content="What is 3 + 4?"), Message(role="assistant", content="3 + 4 = 77")],
    [
        Message(role="user", content="Hi"),
        Message(role="assistant", content="Hello!"),
        Message(role="user", content="Name a colour."),
        Message(role="assistant", content="Blue, the colour of a clear sky."),
    ],
]


def load_weights(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def max_difference(first: dict, second: dict) -> float:
    assert first.keys() == second.keys()
    return max((first[k] - second[k]).abs().max().item() for k in first)


@pytest.fixture(scope="module")
def arithmetic_files(tmp_path_factory) -> tuple[Path, Path]:
    """160 training pairs and 100 held-out gold pairs with questions never seen in training."""
    directory = tmp_path_factory.mktemp("arithmetic")
    records = arithmetic_records(260, seed=0)
    return (
        write_records(directory / "train.jsonl", records[:160]),
        write_records(directory / "gold.jsonl", records[160:]),
    )


@pytest.fixture(scope="module")
def trained_minilm(tmp_path_factory, arithmetic_files) -> tuple[Path, dict]:
    train_file, gold_file = arithmetic_files
    output = tmp_path_factory.mktemp("minilm-run")
    config = TrainConfig(
        data=str(train_file), gold=str(gold_file), output=str(output), model="minilm-l6",
        batch_size=16, learning_rate=1e-4, warmup_ratio=0.1, eval_every=5, log_every=5,
    )
    return output, train(config)


def test_a_real_backbone_learns_a_separable_task(trained_minilm, arithmetic_files):
    """all-MiniLM-L6-v2, one epoch of 160 pairs: >= 95% on 100 held-out questions."""
    from synpref.data.models import PreferencePair
    from synpref.rm.scorer import RewardScorer

    output, summary = trained_minilm
    print(f"minilm arithmetic: {summary}")
    assert summary["steps"] == 10 and summary["best_gold_accuracy"] >= 0.95
    # The saved model (the best by gold accuracy) scores the held-out pairs the same way.
    gold = [PreferencePair(**json.loads(line)) for line in arithmetic_files[1].read_text().splitlines()]
    chosen, rejected = RewardScorer.from_pretrained(str(output)).score_pairs(gold)
    accuracy = sum(c > r for c, r in zip(chosen, rejected)) / len(gold)
    assert accuracy == summary["best_gold_accuracy"]
    logged = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged if m["kind"] == "gold"] == [5, 10]
    assert [m["step"] for m in logged if m["kind"] == "train"] == [5, 10]
    assert set(logged[0]) >= {"loss", "accuracy", "margin", "reward_mean", "reward_std", "lr"}
    # The rate each logged step used: 1 warmup step of 10, then linear decay: (10 - i) / 9 at index i.
    assert [m["lr"] for m in logged if m["kind"] == "train"] == pytest.approx([1e-4 * 6 / 9, 1e-4 * 1 / 9])
    assert list((output / "tensorboard").glob("events.out.tfevents.*"))


def tiny_config(model_dir: Path, data: Path, output: Path, **overrides) -> TrainConfig:
    values = dict(
        data=str(data), output=str(output), model=str(model_dir), batch_size=4,
        learning_rate=1e-3, warmup_ratio=0.25, log_every=1, tensorboard=False,
    )
    return TrainConfig(**{**values, **overrides})


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_resume_gives_the_same_weights_as_a_straight_run(precision, tmp_path, tiny_llama_with_dropout_dir):
    """3 steps, stop, resume for 3 more == 6 straight (dropout on: RNG state must resume too;
    bf16: the fp32 master weights must resume, not the model's bf16 rounding of them)."""
    import shutil

    data = write_records(tmp_path / "train.jsonl", arithmetic_records(40, seed=1))
    straight = tmp_path / "straight"
    train(tiny_config(tiny_llama_with_dropout_dir, data, straight, max_steps=6, save_every=3, mixed_precision=precision))
    # The stopped run: only its step-3 checkpoint survives.
    resumed = tmp_path / "resumed"
    shutil.copytree(straight / "checkpoints", resumed / "checkpoints")
    assert [p.name for p in (resumed / "checkpoints").iterdir()] == ["step-00000003"]
    summary = train(tiny_config(tiny_llama_with_dropout_dir, data, resumed, max_steps=6, resume=True,
                                mixed_precision=precision))
    assert summary["steps"] == 6
    difference = max_difference(load_weights(straight), load_weights(resumed))
    print(f"straight vs resumed: largest weight difference {difference:.2e}")
    assert difference <= 1e-6
    assert {value.dtype for value in load_weights(resumed).values()} == {torch_dtype("float32")}
    # Resuming matters: three more steps from scratch land elsewhere.
    fresh = tmp_path / "fresh"
    train(tiny_config(tiny_llama_with_dropout_dir, data, fresh, max_steps=3, mixed_precision=precision))
    assert max_difference(load_weights(straight), load_weights(fresh)) > 1e-3


def test_a_one_step_run_logs_the_rate_it_used(tmp_path, tiny_llama_dir):
    """Not the rate after the scheduler's step (0 at the end of a linear decay)."""
    data = write_records(tmp_path / "train.jsonl", arithmetic_records(8, seed=2))
    train(tiny_config(tiny_llama_dir, data, tmp_path / "run", max_steps=1, warmup_ratio=0.0))
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(m["step"], m["lr"]) for m in logged if m["kind"] == "train"] == [(1, 1e-3)]


def torch_dtype(name: str):
    import torch

    return getattr(torch, name)


def test_bf16_master_weights_train_like_autocast_and_save_fp32(tmp_path, tiny_llama_dir):
    """The same 6 steps in bf16 with master weights (the default) and under autocast: the same
    losses to bf16 precision; the saved model holds the fp32 master weights and says so."""
    import torch

    data = write_records(tmp_path / "train.jsonl", arithmetic_records(40, seed=4))
    runs = {}
    for name, master in (("master", True), ("autocast", False)):
        output = tmp_path / name
        train(tiny_config(tiny_llama_dir, data, output, max_steps=6, mixed_precision="bf16", master_weights=master))
        logged = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
        runs[name] = [m["loss"] for m in logged if m["kind"] == "train"]
        assert {v.dtype for v in load_weights(output).values()} == {torch.float32}
        assert json.loads((output / "config.json").read_text())["torch_dtype"] == "float32"
    print(f"losses: master {runs['master']} autocast {runs['autocast']}")
    assert len(runs["master"]) == 6
    assert runs["master"] == pytest.approx(runs["autocast"], abs=0.01)
    assert runs["master"][0] != runs["master"][-1]  # it trained


def test_two_processes_match_one_with_the_same_global_batch(tmp_path, tiny_llama_dir):
    """Two CPU processes under `accelerate launch`, batch 2 each == 1 process, batch 4.

    accelerate 1.x runs `--cpu --num_processes 2` as ONE process unless an MPI hostfile is
    given, so the test launches with `--multi_gpu`, which starts the workers with torchrun; on
    a machine without GPUs the trainer puts them on CPU and they all-reduce over gloo.
    Tolerance 1e-5 on every weight: each process pads its half of the batch to its own
    longest sequence and gradients are averaged by all-reduce, so float sums differ in order.
    """
    data = write_records(tmp_path / "train.jsonl", arithmetic_records(24, seed=2))
    single = tmp_path / "single"
    train(tiny_config(tiny_llama_dir, data, single, max_steps=4, batch_size=4, gradient_accumulation_steps=2))
    double = tmp_path / "double"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "synpref", "train", "--data", str(data), "--output", str(double),
        "--model", str(tiny_llama_dir), "--batch-size", "2", "--gradient-accumulation-steps", "2",
        "--max-steps", "4", "--learning-rate", "1e-3", "--warmup-ratio", "0.25", "--log-every", "1",
        "--no-tensorboard",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((double / "training_summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 4
    difference = max_difference(load_weights(single), load_weights(double))
    print(f"1 process vs 2 processes: largest weight difference {difference:.2e}")
    assert difference <= 1e-5
    single_loss = json.loads((single / "training_summary.json").read_text())["final_loss"]
    assert summary["final_loss"] == pytest.approx(single_loss, abs=1e-5)


PLAIN_SCORER = textwrap.dedent('''
    """Score with plain transformers, the way any tool would: no synpref import."""
    import json, sys
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # SmolLM2's template injects this when a conversation has no system message; we drop it.
    DEFAULT_SYSTEM = "<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n"
    model_dir, conversations = sys.argv[1], json.loads(sys.argv[2])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    scores = []
    for conversation in conversations:
        if tokenizer.chat_template:
            text = tokenizer.apply_chat_template(conversation, tokenize=False).removeprefix(DEFAULT_SYSTEM)
            inputs = tokenizer(text, return_tensors="pt")
        else:  # encoders: "Role: content" blocks as the first text, the reply as the second
            prompt = "\\n\\n".join(m["role"].capitalize() + ": " + m["content"] for m in conversation[:-1])
            inputs = tokenizer(prompt, conversation[-1]["content"], return_tensors="pt")
        with torch.no_grad():
            scores.append(model(**inputs).logits[0, 0].item())
    assert not any(name.startswith("synpref") for name in sys.modules)
    print(json.dumps(scores))
''')


def plain_transformers_scores(model_dir: Path, tmp_path: Path) -> list[float]:
    script = tmp_path / "plain_scorer.py"
    script.write_text(PLAIN_SCORER)
    conversations = [[m.model_dump() for m in c] for c in CONVERSATIONS]
    result = subprocess.run(
        [sys.executable, str(script), str(model_dir), json.dumps(conversations)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("backbone", ["tiny-llama", "minilm"])
def test_a_saved_model_scores_the_same_in_plain_transformers(backbone, tmp_path, tiny_llama_dir, trained_minilm):
    from synpref.rm.scorer import RewardScorer

    if backbone == "minilm":
        model_dir = trained_minilm[0]
    else:
        data = write_records(tmp_path / "train.jsonl", arithmetic_records(16, seed=3))
        model_dir = tmp_path / "tiny-run"
        train(tiny_config(tiny_llama_dir, data, model_dir, max_steps=2))
    ours = RewardScorer.from_pretrained(str(model_dir)).score(CONVERSATIONS)
    theirs = plain_transformers_scores(model_dir, tmp_path)
    print(f"{backbone}: synpref {ours} plain transformers {theirs}")
    assert theirs == pytest.approx(ours, abs=1e-4)
    assert len({round(s, 4) for s in ours}) == 3  # distinct scores: order and formatting both matter


def test_gradient_checkpointing_changes_memory_not_results(tmp_path, tiny_llama_dir):
    data = write_records(tmp_path / "train.jsonl", arithmetic_records(16, seed=7))
    plain, checkpointed = tmp_path / "plain", tmp_path / "checkpointed"
    train(tiny_config(tiny_llama_dir, data, plain, max_steps=2))
    train(tiny_config(tiny_llama_dir, data, checkpointed, max_steps=2, gradient_checkpointing=True))
    losses = [[json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
               if "loss" in json.loads(line)] for run in (plain, checkpointed)]
    assert len(losses[0]) == 2 and losses[1] == pytest.approx(losses[0], abs=1e-6)
    # Under checkpointing the packed attention is one SDPA call, not the chunked one (its
    # recomputation must repeat the forward pass), so the gradients differ in rounding only;
    # Adam's first steps turn that into at most 1e-4 of weights that 2 steps at lr 1e-3 move by ~2e-3.
    moved = max_difference(load_weights(plain), load_weights(tiny_llama_dir))
    assert moved > 1e-3
    assert max_difference(load_weights(plain), load_weights(checkpointed)) <= 1e-4
