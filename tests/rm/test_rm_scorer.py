"""`RewardScorer`: batched scores equal one-at-a-time scores, in input order (acceptance 2)."""

from __future__ import annotations

import random

import pytest

from synpref.data.models import Message
from synpref.rm.scorer import RewardScorer, pad_batch, token_budget_batches

WORDS = "the reward model reads every token of this sentence before it decides on a score".split()


def conversations_of_many_lengths(count: int, seed: int = 0) -> list[list[Message]]:
    """From a one-word reply to ~230 words (20 to ~280 tokens) over up to three turns, shuffled."""
    rng = random.Random(seed)
    conversations = []
    for index in range(count):
        words = max(1, int(2 ** (index / count * 8.0)))
        turns = 1 + index % 3
        messages = []
        for turn in range(turns):
            messages.append(Message(role="user", content=f"Question {index}.{turn}: " + " ".join(rng.choices(WORDS, k=3))))
            reply_words = words if turn == turns - 1 else 5
            messages.append(Message(role="assistant", content=" ".join(rng.choices(WORDS, k=reply_words))))
        conversations.append(messages)
    rng.shuffle(conversations)
    return conversations


@pytest.fixture(scope="module")
def smollm2_scorer(smollm2_dir):
    from synpref.rm.models import load_reward_model

    model, tokenizer = load_reward_model(str(smollm2_dir), seed=0)
    return RewardScorer(model, tokenizer, token_budget=2048)


def test_batched_scores_equal_one_at_a_time_in_input_order(smollm2_scorer):
    conversations = conversations_of_many_lengths(50)
    lengths = [len(smollm2_scorer.formatter.encode_messages(c)) for c in conversations]
    assert min(lengths) < 40 and max(lengths) > 250  # very different lengths
    batched = smollm2_scorer.score(conversations)
    # Several batches of different sizes were formed, so padding really happened.
    batches = list(token_budget_batches(lengths, smollm2_scorer.token_budget))
    assert len(batches) >= 4 and len({len(b) for b in batches}) > 2
    one_at_a_time = [smollm2_scorer.score([c])[0] for c in conversations]
    assert len(batched) == 50
    assert max(abs(a - b) for a, b in zip(batched, one_at_a_time)) < 1e-4
    # Scores differ from conversation to conversation, so order is really being checked.
    assert len({round(s, 3) for s in one_at_a_time}) > 40


def test_token_budget_batches_longest_first_within_budget():
    lengths = [5, 100, 20, 60, 20, 1000]
    assert list(token_budget_batches(lengths, 200)) == [[5], [1, 3], [2, 4, 0]]
    batches = list(token_budget_batches(lengths, 200))
    assert sorted(i for b in batches for i in b) == list(range(6))


def test_pad_batch_pads_on_the_right():
    input_ids, attention_mask = pad_batch([[5, 6, 7], [8]], pad_token_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_the_score_is_read_at_the_last_real_token(tiny_llama_dir):
    """Padding a sequence must not change its score: the pad token differs from EOS."""
    from synpref.rm.models import load_reward_model

    model, tokenizer = load_reward_model(str(tiny_llama_dir))
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    scorer = RewardScorer(model, tokenizer)
    short = [Message(role="user", content="hi"), Message(role="assistant", content="hello")]
    long = [Message(role="user", content="hi " * 50), Message(role="assistant", content="hello " * 50)]
    together = scorer.score([short, long])
    assert together[0] == pytest.approx(scorer.score([short])[0], abs=1e-5)


def test_a_conversation_must_end_with_an_assistant_message(tiny_llama_dir):
    from synpref.rm.models import load_reward_model

    scorer = RewardScorer(*load_reward_model(str(tiny_llama_dir)))
    with pytest.raises(ValueError, match="final assistant message"):
        scorer.score([[Message(role="user", content="hi")]])


def test_default_token_budget_follows_the_device(tiny_llama_dir):
    """Unset, the forward-pass size is 1,024 tokens on CPU (larger CPU batches are slower:
    bench/RESULTS.md) and 16,384 on a GPU; an explicit budget always wins."""
    from synpref.rm.scorer import default_token_budget

    assert (default_token_budget("cpu"), default_token_budget("cuda")) == (1024, 16384)
    scorer = RewardScorer.from_pretrained(str(tiny_llama_dir), device="cpu")
    assert next(scorer.model.parameters()).device.type == "cpu"
    assert scorer.token_budget == 1024
    assert RewardScorer.from_pretrained(str(tiny_llama_dir), device="cpu", token_budget=300).token_budget == 300


def long_conversation(words: int) -> list[Message]:
    return [Message(role="user", content="Tell me a story."), Message(role="assistant", content="once " * words)]


def test_inputs_longer_than_the_model_positions_are_cut_to_them():
    """MiniLM has 512 positions; at the default max length of 4,096 a 1,000-token input used to
    crash the forward pass ("size of tensor a (1006) must match ... (512)")."""
    scorer = RewardScorer.from_pretrained("minilm-l6", device="cpu")
    assert scorer.formatter.max_length == 512
    long = long_conversation(1000)
    assert len(scorer.formatter.encode_messages(long)) == 512
    scores = scorer.score([long, long_conversation(3)])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)


def test_the_length_cap_is_set_where_models_are_loaded():
    """The trainer builds its own formatter from the loaded tokenizer: it gets the cap too."""
    from synpref.rm.formatting import RewardFormatter
    from synpref.rm.models import load_reward_model

    model, tokenizer = load_reward_model("minilm-l6")
    assert (model.config.max_position_embeddings, tokenizer.model_max_length) == (512, 512)
    assert RewardFormatter(tokenizer, max_length=4096).max_length == 512
    assert RewardFormatter(tokenizer, max_length=128).max_length == 128


def test_a_fresh_score_head_is_seeded_and_leaves_the_callers_random_state_alone():
    """A base model's head is random: two loads must still score alike (47.3 vs 50.3 before)."""
    import torch

    conversations = [long_conversation(n) for n in (1, 5, 20)]
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = RewardScorer.from_pretrained("minilm-l6", device="cpu").score(conversations)
    assert torch.equal(torch.random.get_rng_state(), state)
    second = RewardScorer.from_pretrained("minilm-l6", device="cpu").score(conversations)
    assert first == second
