"""`synpref eval` against a live reward server, over both protocols it speaks."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from synpref.rm.remote import RemoteScorer  # noqa: E402
from synpref.serve.app import create_app  # noqa: E402
from synpref.serve.config import ServeConfig  # noqa: E402
from tests.conftest import live_server  # noqa: E402
from tests.serve.test_server import CONVERSATIONS, messages  # noqa: E402


@pytest.mark.parametrize("protocol", ["synpref", "openrlhf"])
def test_remote_scores_equal_local_scores(tiny_llama_dir, protocol):
    from synpref.rm.scorer import RewardScorer

    scorer = RewardScorer.from_pretrained(str(tiny_llama_dir), max_length=64)
    conversations = [messages(c) for c in CONVERSATIONS[:10]]
    with live_server(create_app(scorer, ServeConfig(api_keys=["k"]))) as url:
        remote = RemoteScorer(url, protocol, tokenizer=str(tiny_llama_dir), api_key="k", batch_size=4)
        assert remote.score(conversations) == pytest.approx(scorer.score(conversations), abs=1e-5)


def test_remote_eval_cuts_long_inputs_as_local_scoring_does(tiny_llama_dir):
    """Benchmark responses are often longer than the limit: local scoring cuts them, and so must
    scoring through `synpref serve` (which refuses them with 422 unless asked to truncate)."""
    from synpref.data.models import Message
    from synpref.rm.scorer import RewardScorer

    scorer = RewardScorer.from_pretrained(str(tiny_llama_dir), max_length=64)
    long = [Message(role="user", content="hi"), Message(role="assistant", content="word " * 200)]
    assert len(scorer.formatter.tokenizer(scorer.formatter.text(long[:1], long[1])[0])["input_ids"]) > 64
    with live_server(create_app(scorer, ServeConfig())) as url:
        assert RemoteScorer(url).score([long]) == pytest.approx(scorer.score([long]), abs=1e-5)
