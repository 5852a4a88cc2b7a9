"""Issue 16, acceptance 5: TRL's RewardTrainer on `synpref export --format trl` sees the token
ids synpref's trainer sees, for 5 pairs with the SmolLM2 tokenizer.

TRL renders each conversation with the tokenizer it is given (`apply_chat_template`), so it is
given the tokenizer synpref saves (`save_reward_tokenizer`, the one in every trained model's
directory); synpref's trainer formats with the base SmolLM2 tokenizer through `RewardFormatter`.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
trl = pytest.importorskip("trl", reason="TRL is the optional `bench` extra: pip install 'trl>=0.20'")

from synpref.data.export import export  # noqa: E402
from synpref.data.ingest import IngestOptions, ingest  # noqa: E402
from tests.conftest import assistant, user, write_jsonl  # noqa: E402


def five_pairs() -> list[dict]:
    """1 and 2 turns, with and without a system message."""
    system = {"role": "system", "content": "Answer in one line."}
    return [
        {"conversation": [user("What is 2 + 2?")], "chosen": assistant("4."), "rejected": assistant("5.")},
        {"conversation": [system, user("Capital of France?")], "chosen": assistant("Paris."), "rejected": assistant("Lyon.")},
        {"conversation": [user("Hi"), assistant("Hello!"), user("Name a prime.")],
         "chosen": assistant("7 is prime."), "rejected": assistant("8 is prime.")},
        {"conversation": [system, user("Spell cat."), assistant("c-a-t"), user("Backwards?")],
         "chosen": assistant("t-a-c"), "rejected": assistant("c-a-t")},
        {"conversation": [user("Is the sky green?")], "chosen": assistant("No, it is blue."), "rejected": assistant("Yes.")},
    ]  # fmt: skip


def test_trl_reward_trainer_sees_synpref_token_ids(workspace, tmp_path, tiny_llama_dir, smollm2_dir):
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from synpref.rm.data import encode_pairs, load_pairs
    from synpref.rm.formatting import RewardFormatter
    from synpref.rm.saving import save_reward_tokenizer

    ingest(workspace, IngestOptions([str(write_jsonl(tmp_path / "pairs.jsonl", five_pairs()))], workers=1))
    path, count = export(workspace, "trl", tmp_path / "pairs.trl.jsonl")
    assert count == 5

    save_reward_tokenizer(AutoTokenizer.from_pretrained(smollm2_dir), tmp_path / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    dataset = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    args = trl.RewardConfig(output_dir=str(tmp_path / "trl"), report_to=[], max_length=None, bf16=False, use_cpu=True)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama_dir, num_labels=1)
    trainer = trl.RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    seen_by_trl = {row["id"]: (row["chosen_ids"], row["rejected_ids"]) for row in trainer.train_dataset}

    pairs = load_pairs(workspace.root)
    base_tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert base_tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False).startswith(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM"
    )  # the base template injects a system prompt; neither trainer may see it
    seen_by_synpref = dict(zip([p.id for p in pairs], encode_pairs(pairs, RewardFormatter(base_tokenizer))))
    assert seen_by_trl == {k: tuple(v) for k, v in seen_by_synpref.items()}
    two_plus_two = next(p for p in pairs if p.conversation[0].content == "What is 2 + 2?")
    assert tokenizer.decode(seen_by_trl[two_plus_two.id][0]) == (
        "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n4.<|im_end|>"
    )
