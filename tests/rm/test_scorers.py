"""`load_scorer`: which scorer each kind of `--model` value gets, and the length baseline's rewards."""

from __future__ import annotations

import json

import pytest

from synpref.data.models import Message, PreferencePair
from synpref.errors import SynprefError
from synpref.rm.scorers import LengthScorer, load_scorer


def _pair(question: str, chosen: str, rejected: str) -> PreferencePair:
    return PreferencePair(conversation=[Message(role="user", content=question)], source="t",
                          chosen=Message(role="assistant", content=chosen), rejected=Message(role="assistant", content=rejected))


PAIRS = [
    _pair("What is 2 + 2?", "4", "It is 5."),  # 1 vs 8 characters
    _pair("Say hi.", "Hello there!", "Hi"),  # 12 vs 2
    _pair("Greet in French.", "Café — déjà vu", "salut"),  # 14 characters (not UTF-8 bytes: 18) vs 5
]


def _flat(chosen_and_rejected: tuple[list[float], list[float]]) -> list[float]:
    return [*chosen_and_rejected[0], *chosen_and_rejected[1]]


@pytest.mark.parametrize("where", ["name", "directory"])
def test_the_length_baseline_rewards_the_response_length_in_characters(tmp_path, where):
    if where == "directory":
        (tmp_path / "baseline.json").write_text(json.dumps({"kind": "length"}))
    scorer = load_scorer("length-baseline" if where == "name" else str(tmp_path))
    assert isinstance(scorer, LengthScorer)
    assert scorer.score_pairs(PAIRS) == ([1.0, 12.0, 14.0], [8.0, 2.0, 5.0])
    # the history's length is no part of the reward; dict messages score as Message ones do
    conversations = [[Message(role="user", content="x" * 50), Message(role="assistant", content="abc")],
                     [{"role": "user", "content": "y"}, {"role": "assistant", "content": "déjà"}]]
    assert scorer.score(conversations) == [3.0, 4.0]
    assert scorer.score_pairs([]) == ([], [])


def test_a_baseline_file_of_another_kind_is_refused(tmp_path):
    (tmp_path / "baseline.json").write_text(json.dumps({"kind": "random"}))
    with pytest.raises(SynprefError, match="unknown baseline kind 'random'"):
        load_scorer(str(tmp_path))


def test_a_server_url_gets_a_remote_scorer_with_the_key_from_the_environment(monkeypatch):
    from synpref.rm.remote import RemoteScorer

    monkeypatch.setenv("SYNPREF_API_KEY", "from-env")
    scorer = load_scorer("http://127.0.0.1:9/")  # the synpref protocol connects only when scoring
    assert isinstance(scorer, RemoteScorer)
    assert (scorer.url, scorer.protocol, scorer.http.headers["Authorization"]) == ("http://127.0.0.1:9", "synpref", "Bearer from-env")
    assert load_scorer("https://rm.example", api_key="given").http.headers["Authorization"] == "Bearer given"
    monkeypatch.delenv("SYNPREF_API_KEY")
    assert "Authorization" not in load_scorer("http://127.0.0.1:9").http.headers


def test_a_protocol_or_tokenizer_with_a_local_model_is_refused():
    with pytest.raises(SynprefError, match="for a reward server URL"):
        load_scorer("length-baseline", protocol="openrlhf")
    with pytest.raises(SynprefError, match="for a reward server URL"):
        load_scorer("length-baseline", tokenizer="minilm-l6")


def test_a_plain_model_gets_a_reward_scorer_with_the_options_given(tiny_llama_dir):
    from synpref.rm.scorer import RewardScorer, default_token_budget

    scorer = load_scorer(str(tiny_llama_dir), max_length=64, token_budget=300)
    assert isinstance(scorer, RewardScorer)
    assert (scorer.formatter.max_length, scorer.token_budget, scorer.show_progress) == (64, 300, False)
    expected = RewardScorer.from_pretrained(str(tiny_llama_dir), max_length=64).score_pairs(PAIRS)
    assert _flat(scorer.score_pairs(PAIRS)) == pytest.approx(_flat(expected), abs=1e-6)
    # options left out keep RewardScorer's own defaults: 4,096 tokens, cut to the tiny Llama's 2,048 positions
    defaults = load_scorer(str(tiny_llama_dir))
    assert (defaults.formatter.max_length, defaults.token_budget) == (2048, default_token_budget(defaults.device.type))


def test_a_head_only_model_of_either_kind_scores_from_the_feature_cache_it_is_given(tmp_path, monkeypatch, tiny_llama_dir):
    """One rule for both kinds (curation's `is_head_model`; the CLI used to send only encoders
    here). A decoder head-only directory is also a plain classifier: loaded as one it gives the
    same rewards, so the rule changes no number, only where the features come from."""
    from synpref.rm.features import FeatureSpec
    from synpref.rm.head import HeadScorer, fit_head_model
    from synpref.rm.models import head_kind
    from synpref.rm.scorer import RewardScorer

    pairs = PAIRS * 4
    for kind, backbone in (("encoder", "minilm-l6"), ("decoder", str(tiny_llama_dir))):
        model, cache = tmp_path / f"{kind}-model", tmp_path / f"{kind}-cache"
        fit_head_model(pairs, model, FeatureSpec(backbone, 64), tmp_path / "fit-cache", l2=1e-2, log=lambda _: None)
        assert head_kind(model) == kind
        scorer = load_scorer(str(model), feature_cache=cache, max_length=64)
        assert isinstance(scorer, HeadScorer)
        got = scorer.score_pairs(PAIRS)
        assert _flat(got) == pytest.approx(_flat(HeadScorer(model, tmp_path / "fit-cache").score_pairs(PAIRS)), abs=1e-5)  # features from other batches
        assert any(cache.rglob("*.parquet")), "the features went to the cache given"
    # the decoder, loaded as the plain classifier it also is
    assert _flat(got) == pytest.approx(_flat(RewardScorer.from_pretrained(str(model), max_length=64).score_pairs(PAIRS)), abs=1e-5)
    # without a cache given: the global one
    monkeypatch.setenv("SYNPREF_CACHE_DIR", str(tmp_path / "global"))
    load_scorer(str(model)).score_pairs(PAIRS[:1])
    assert any((tmp_path / "global" / "features").rglob("*.parquet"))
