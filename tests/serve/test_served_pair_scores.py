"""Pairs scored through a live `synpref serve` process equal the same model scored in-process."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi")

from synpref.data.models import Message, PreferencePair  # noqa: E402
from synpref.rm.scorers import load_scorer  # noqa: E402
from tests.conftest import served_process  # noqa: E402

MAX_LENGTH = 64


def _pairs() -> list[PreferencePair]:
    """Short pairs, multi-turn ones, and replies past MAX_LENGTH (cut on both sides the same way)."""
    pairs = []
    for a in range(1, 13):
        history = [Message(role="user", content=f"What is {a} + {a}?")]
        if a % 3 == 0:
            history += [Message(role="assistant", content="Let me think."), Message(role="user", content="Go on.")]
        chosen = f"It is {2 * a}." + (" Indeed." * a if a % 4 == 0 else "")
        rejected = f"It is {2 * a + 1}, I believe." + (" word" * 80 if a % 5 == 0 else "")
        pairs.append(PreferencePair(conversation=history, chosen=Message(role="assistant", content=chosen),
                                    rejected=Message(role="assistant", content=rejected), source="t"))
    return pairs


def test_pair_rewards_through_a_live_server_equal_in_process_rewards(tmp_path, tiny_llama_dir):
    from synpref.rm.scorer import RewardScorer

    pairs = _pairs()
    local = load_scorer(str(tiny_llama_dir), max_length=MAX_LENGTH)
    assert isinstance(local, RewardScorer)
    local_chosen, local_rejected = local.score_pairs(pairs)
    with served_process(["--model", str(tiny_llama_dir), "--max-length", str(MAX_LENGTH)], tmp_path / "serve.log") as (url, _):
        remote_chosen, remote_rejected = load_scorer(url).score_pairs(pairs)
    assert (len(remote_chosen), len(remote_rejected)) == (len(pairs), len(pairs))
    difference = max(abs(remote - local) for remote, local in zip(remote_chosen + remote_rejected, local_chosen + local_rejected))
    print(f"max |remote - local| reward: {difference:.3g}")
    assert difference < 1e-5
    margins = [c - r for c, r in zip(local_chosen, local_rejected)]
    # The ordering check means something only where float error cannot flip it.
    assert min(map(abs, margins)) > 1e-4
    assert [c > r for c, r in zip(remote_chosen, remote_rejected)] == [m > 0 for m in margins]
