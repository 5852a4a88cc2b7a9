"""Head-only reward models: the fit, the saved model in standard tools, the resumable cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from synpref.data.models import Message, PreferencePair
from synpref.rm.features import FeatureSpec, Featurizer, pair_inputs
from synpref.rm.head import HeadScorer, fit_bt_head, fit_head_model, pairwise_accuracy, select_head

REPO = Path(__file__).resolve().parents[2]


def _pair(question: str, chosen: str, rejected: str, system: str | None = None) -> PreferencePair:
    history = ([Message(role="system", content=system)] if system else []) + [Message(role="user", content=question)]
    return PreferencePair.model_construct(id=f"{question}|{chosen}|{rejected}", conversation=history, source="t", meta={},
                                          chosen=Message(role="assistant", content=chosen),
                                          rejected=Message(role="assistant", content=rejected))


def advice_pairs(count: int, seed: int) -> list[PreferencePair]:
    """Separable pairs: a helpful, on-topic answer beats a curt refusal."""
    import random

    from synpref.demo.data import _open_ended

    rng = random.Random(seed)
    return [_pair(*_open_ended(rng)) for _ in range(count)]


def test_the_fit_recovers_a_known_direction_and_reports_pairwise_accuracy_exactly():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=8)
    chosen, rejected = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    swap = chosen @ truth < rejected @ truth
    chosen[swap], rejected[swap] = rejected[swap].copy(), chosen[swap].copy()
    head = fit_bt_head(chosen, rejected, l2=1e-4)
    cosine = head.weight @ truth / np.linalg.norm(head.weight) / np.linalg.norm(truth)
    assert cosine > 0.95
    assert pairwise_accuracy(head.rewards(chosen), head.rewards(rejected)) >= 0.99
    # Ties are wrong: 2 right of 4, one tie.
    assert pairwise_accuracy([3.0, 1.0, 2.0, 0.0], [1.0, 1.0, 0.0, 5.0]) == 0.5


def test_l2_is_picked_by_gold_accuracy_and_the_strongest_wins_a_tie():
    rng = np.random.default_rng(1)
    chosen, rejected = rng.normal(1.0, 1.0, size=(60, 4)), rng.normal(0.0, 1.0, size=(60, 4))
    head, fits = select_head(chosen, rejected, chosen, rejected, grid=(1e-3, 1e-1))
    assert [f["l2"] for f in fits] == [1e-3, 1e-1]
    best = max(f["gold_accuracy"] for f in fits)
    assert head.l2 == max(f["l2"] for f in fits if f["gold_accuracy"] == best)


def test_a_separable_set_is_learned_to_95_percent_within_a_minute(tmp_path):
    pairs = advice_pairs(300, seed=0)
    train, held_out = pairs[:200], pairs[200:]
    started = time.perf_counter()
    summary = fit_head_model(train, tmp_path / "model", FeatureSpec("minilm-l6", 64), tmp_path / "cache", gold=held_out[:30])
    assert time.perf_counter() - started < 60
    chosen, rejected = HeadScorer(tmp_path / "model", tmp_path / "cache").score_pairs(held_out[30:])
    assert pairwise_accuracy(chosen, rejected) >= 0.95
    assert summary["pairs"] == 200 and summary["mode"] == "head_only"


CONVERSATIONS = [
    _pair("What is the capital of France?", "Paris is the capital of France.", "I think it is Lyon, maybe."),
    _pair("Give me a tip for sleeping better.", "Keep a regular bedtime and avoid screens late.", "Sleep more."),
    _pair("Translate 'cat' to German.", "Katze.", "Hund.", system="You are a careful translator."),
]


def test_encoder_head_scores_the_same_in_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer

    fit_head_model(CONVERSATIONS, tmp_path / "model", FeatureSpec("minilm-l6", 128), tmp_path / "cache", l2=1e-2, log=lambda _: None)
    ours_chosen, ours_rejected = HeadScorer(tmp_path / "model", tmp_path / "cache").score_pairs(CONVERSATIONS)
    # The documented encoder input: a text pair of the history ("Role: content" blocks) and the reply.
    model = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    texts = [["\n\n".join(f"{m.role.capitalize()}: {m.content}" for m in p.conversation), reply.content]
             for reply_of in ("chosen", "rejected") for p in CONVERSATIONS for reply in [getattr(p, reply_of)]]
    theirs = model.encode(texts).reshape(-1)
    assert np.abs(theirs - np.array(ours_chosen + ours_rejected)).max() < 1e-4
    assert model.encode(texts).shape == (6, 1)


def test_decoder_head_scores_the_same_in_plain_transformers(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    pairs = [p for p in CONVERSATIONS if p.conversation[0].role == "system"] * 1
    pairs += [_pair(p.conversation[0].content, p.chosen.content, p.rejected.content, system="Be brief.") for p in CONVERSATIONS[:2]]
    fit_head_model(pairs, tmp_path / "model", FeatureSpec("smollm2-135m", 128), tmp_path / "cache", l2=1e-2, log=lambda _: None)
    ours, _ = HeadScorer(tmp_path / "model", tmp_path / "cache").score_pairs(pairs)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    theirs = []
    for pair in pairs:
        messages = [m.model_dump() for m in [*pair.conversation, pair.chosen]]
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            theirs.append(model(input_ids=ids).logits[0][0].item())
    assert np.abs(np.array(theirs) - np.array(ours)).max() < 1e-4


FEATURISE = """
import sys
from pathlib import Path
import synpref.data.vectors as vectors
vectors.CHUNK = 64
from synpref.rm.features import FeatureSpec, Featurizer, pair_inputs
sys.path.insert(0, {repo!r})
from tests.rm.test_head import advice_pairs
featurizer = Featurizer(FeatureSpec("minilm-l6", 48), Path(sys.argv[1]))
chosen, rejected = pair_inputs(featurizer, advice_pairs(160, seed=3))
featurizer.features(chosen + rejected)
print("computed", featurizer.computed)
"""


def _cache_contents(directory: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    contents = {}
    for part in sorted(directory.rglob("part-*.parquet")):
        table = pq.read_table(part)
        for key, vector in zip(table.column("key").to_pylist(), table.column("vector").to_pylist()):
            contents[key] = np.asarray(vector, dtype=np.float32)
    return contents


def test_sigkill_during_featurisation_loses_only_the_chunk_in_flight(tmp_path):
    script = tmp_path / "featurise.py"
    script.write_text(FEATURISE.format(repo=str(REPO)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    process = subprocess.Popen([sys.executable, str(script), str(killed)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(killed.rglob("part-*.parquet"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = _cache_contents(killed)
    assert 64 <= len(finished) < 320  # at least one chunk was saved, not all of them
    rerun = subprocess.run([sys.executable, str(script), str(killed)], env=env, capture_output=True, text=True, check=True)
    total = len(_cache_contents(killed))
    assert rerun.stdout.split() == ["computed", str(total - len(finished))]
    subprocess.run([sys.executable, str(script), str(clean)], env=env, capture_output=True, check=True)
    resumed, fresh = _cache_contents(killed), _cache_contents(clean)
    assert resumed.keys() == fresh.keys()
    assert all(np.array_equal(resumed[k], fresh[k]) for k in fresh)
    assert sorted(p.name for p in killed.rglob("part-*")) == sorted(p.name for p in clean.rglob("part-*"))


def test_head_only_training_through_the_cli_writes_a_summary_and_a_loadable_model(tmp_path):
    from tests.conftest import write_jsonl

    records = [{"conversation": [m.model_dump() for m in p.conversation], "chosen": p.chosen.model_dump(),
                "rejected": p.rejected.model_dump()} for p in advice_pairs(40, seed=5)]
    data = write_jsonl(tmp_path / "train.jsonl", records)
    result = subprocess.run([sys.executable, "-m", "synpref", "train", "--data", str(data), "--output", str(tmp_path / "rm"),
                             "--model", "minilm-l6", "--max-length", "64", "--head-only", "--l2", "0.01",
                             "--feature-cache", str(tmp_path / "cache")], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "rm" / "training_summary.json").read_text())
    assert summary["pairs"] == 40 and summary["l2"] == 0.01 and summary["train_accuracy"] == 1.0
    assert (tmp_path / "rm" / "modules.json").is_file()
    featurizer = Featurizer(FeatureSpec("minilm-l6", 64), tmp_path / "cache")
    chosen, _ = pair_inputs(featurizer, advice_pairs(40, seed=5))
    featurizer.features(chosen)
    assert featurizer.computed == 0  # the CLI run cached every input


@pytest.mark.parametrize("pooling", ["mean", "mean,mean_sqrt_len_tokens"])
def test_feature_spec_digest_separates_what_changes_the_features(pooling):
    base = FeatureSpec("minilm-l6", 256)
    other = FeatureSpec("minilm-l6", 256, pooling)
    assert (base.digest() == other.digest()) == (pooling == base.pooling)
    assert FeatureSpec("minilm-l6", 128).digest() != base.digest()


def test_a_head_only_encoder_is_refused_where_a_classifier_is_needed_and_scored_by_eval(tmp_path):
    from synpref.errors import SynprefError
    from synpref.rm.scorer import RewardScorer

    fit_head_model(CONVERSATIONS, tmp_path / "model", FeatureSpec("minilm-l6", 128), tmp_path / "cache", l2=1e-2, log=lambda _: None)
    # Loaded as a sequence classifier, the directory would score with a fresh random head.
    with pytest.raises(SynprefError, match="is a head-only encoder reward model"):
        RewardScorer.from_pretrained(str(tmp_path / "model"))
    from synpref.rm.scorers import load_scorer

    scorer = load_scorer(str(tmp_path / "model"), max_length=128)
    expected = HeadScorer(tmp_path / "model", tmp_path / "cache").score_pairs(CONVERSATIONS)[0]
    got = scorer.score([[*p.conversation, p.chosen] for p in CONVERSATIONS])
    assert np.abs(np.array(got) - np.array(expected)).max() < 1e-6
