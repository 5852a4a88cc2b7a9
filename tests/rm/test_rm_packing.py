"""Packing: padding-free scores and losses equal the padded ones (issue 18, acceptance 1)."""

from __future__ import annotations

import random

import pytest

from synpref.data.models import Message
from synpref.rm.packing import Item, attention_mask, pack, pair_item, pair_items, place, plan_passes

WORDS = "the reward model reads every token of this sentence before it decides on a score".split()


def test_a_pair_tree_shares_the_prefix_and_restarts_positions_after_it():
    item = pair_item([5, 6, 7, 8], [5, 6, 9])
    assert (list(item.prefix), [list(s) for s in item.suffixes]) == ([5, 6], [[7, 8], [9]])
    # Identical or nested inputs still leave each suffix one token to read the reward at.
    assert [list(s) for s in pair_item([5, 6], [5, 6]).suffixes] == [[6], [6]]
    packed = pack([item, Item([3, 4])], reading="last", pad_token_id=0)
    assert packed.inputs["input_ids"].tolist() == [[5, 6, 7, 8, 9], [3, 4, 0, 0, 0]]
    assert packed.inputs["position_ids"].tolist() == [[0, 1, 2, 3, 2], [0, 1, 0, 0, 0]]
    # chosen at its last token (column 3), rejected at 4, the single sequence at row 1 column 1
    assert packed.read_index.tolist() == [3, 4, 6]
    mask = attention_mask(packed.inputs["group"], packed.inputs["branch"], causal=True)[:, 0].int().tolist()
    assert mask[0] == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 0, 0, 1],  # the rejected token sees the prompt, not the chosen reply
    ]
    assert mask[1] == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]


def test_items_fill_the_gaps_of_earlier_rows_and_passes_respect_the_budget():
    assert place([5, 3, 2, 2], width=5) == ([(0, 0), (1, 0), (1, 3), (2, 0)], 3)
    # 100 alone (2 x 100 > 150); then width 60: a row of 60, a row of 40 + 20; a third row of
    # 60 would pass the budget, so the last 20 starts the next pass
    assert list(plan_passes([20, 100, 40, 60, 20], token_budget=150)) == [[1], [3, 2, 0], [4]]
    # encoders: token types restart at each item, 1 after its first separator
    packed = pack([Item([1, 7, 2, 8, 2]), Item([1, 9, 2])], reading="first", pad_token_id=0, separator=2)
    assert packed.inputs["token_type_ids"].tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]]
    assert packed.read_index.tolist() == [0, 5]
    with pytest.raises(ValueError, match="causal"):
        pack([pair_item([1, 2], [1, 3])], reading="first", pad_token_id=0)


def conversations_from_20_to_2000_tokens(formatter, count: int = 50, seed: int = 0) -> list[list[Message]]:
    """Lengths spread over 20..2,000 tokens, most of them short (so the test stays cheap)."""
    rng = random.Random(seed)
    conversations = []
    for index in range(count):
        target = int(20 * 100 ** ((index / (count - 1)) ** 2))
        turns = 1 + index % 3
        messages = []
        for turn in range(turns):
            messages.append(Message(role="user", content=f"Question {index}.{turn}: " + " ".join(rng.choices(WORDS, k=3))))
            messages.append(Message(role="assistant", content=" ".join(rng.choices(WORDS, k=2))))
        fixed = len(formatter.encode_messages(messages))
        messages[-1] = Message(role="assistant", content=" ".join(rng.choices(WORDS, k=max(1, target - fixed))))
        conversations.append(messages)
    rng.shuffle(conversations)
    return conversations


@pytest.fixture(scope="module", params=["smollm2-135m", "minilm-l6"])
def backbone(request):
    from synpref.rm.models import load_reward_model

    model, tokenizer = load_reward_model(request.param, seed=0)
    return request.param, model, tokenizer


def test_packed_scores_equal_padded_scores_in_fp32(backbone):
    from synpref.rm.scorer import RewardScorer

    name, model, tokenizer = backbone
    packed = RewardScorer(model, tokenizer, max_length=2048)
    padded = RewardScorer(model, tokenizer, max_length=2048, packing=False)
    assert packed.reading == ("last" if name == "smollm2-135m" else "first") and padded.reading is None
    conversations = conversations_from_20_to_2000_tokens(packed.formatter)
    lengths = [len(packed.formatter.encode_messages(c)) for c in conversations]
    # MiniLM takes 512 positions: both paths get the same truncated ids from the one formatter.
    assert min(lengths) <= 25
    assert 1900 <= max(lengths) <= 2048 if name == "smollm2-135m" else max(lengths) == 512
    packed_scores, padded_scores = packed.score(conversations), padded.score(conversations)
    assert max(abs(a - b) for a, b in zip(packed_scores, padded_scores)) < 1e-4
    assert len({round(s, 5) for s in padded_scores}) > 40  # the order is really being checked


def test_packed_training_loss_equals_padded_on_the_same_batch(backbone):
    """fp32 loss and score-head gradient of one batch; dropout off, since the two paths would
    draw different dropout masks."""
    from synpref.rm.formatting import RewardFormatter
    from synpref.rm.loss import bradley_terry_loss
    from synpref.rm.packing import RewardForward, reward_reading
    from synpref.rm.scorer import segment_separator
    from synpref.rm.trainer import pair_rewards

    name, model, tokenizer = backbone
    formatter = RewardFormatter(tokenizer, max_length=192)
    conversations = conversations_from_20_to_2000_tokens(formatter, count=8, seed=1)[:4]
    pairs = [(formatter.encode_messages(c), formatter.encode_messages(c[:-1] + [Message(role="assistant", content="No.")]))
             for c in conversations]
    width = max(len(ids) for pair in pairs for ids in pair)
    trees = [item for item in pair_items(pairs, lambda tree: len(tree) <= width)[0] if item.suffixes]
    assert len(trees) >= 2  # "pairs" really shares prompts here (the longest pair goes unshared)
    forward = RewardForward(model, reward_reading(model)).eval()
    head = model.score.weight if name == "smollm2-135m" else model.classifier.weight
    results = {}
    for packing in ("off", "sequences", "pairs"):
        model.zero_grad()
        chosen, rejected = pair_rewards(forward, pairs, packing=packing, pad_token_id=tokenizer.pad_token_id,
                                        separator=segment_separator(model, tokenizer), device="cpu")
        loss = bradley_terry_loss(chosen, rejected)
        loss.backward()
        results[packing] = (loss.item(), head.grad.clone())
    model.zero_grad()
    for packing in ("sequences", "pairs"):
        assert results[packing][0] == pytest.approx(results["off"][0], abs=1e-4)
        assert (results[packing][1] - results["off"][1]).abs().max().item() < 1e-4
    assert results["off"][0] > 0.01  # a real loss, not a saturated one


def test_pairs_scored_as_trees_equal_the_padded_pairs(tiny_llama_dir):
    from synpref.data.models import PreferencePair
    from synpref.rm.models import load_reward_model
    from synpref.rm.scorer import RewardScorer

    model, tokenizer = load_reward_model(str(tiny_llama_dir))
    rng = random.Random(2)
    pairs = []
    for index in range(12):
        history = [Message(role="user", content=" ".join(rng.choices(WORDS, k=5 + 40 * (index % 3))))]
        replies = [Message(role="assistant", content=" ".join(rng.choices(WORDS, k=side + index * 2 * side))) for side in (1, 3)]
        pairs.append(PreferencePair(conversation=history, chosen=replies[index % 2], rejected=replies[1 - index % 2], source="t"))
    packed = RewardScorer(model, tokenizer, token_budget=256)
    encoded = [(packed.formatter.encode(p.conversation, p.chosen), packed.formatter.encode(p.conversation, p.rejected)) for p in pairs]
    shared = [item for item in pair_items(encoded, lambda tree: len(tree.prefix) > min(map(len, tree.suffixes)))[0] if item.suffixes]
    assert 3 <= len(shared) < 12  # some pairs share their prompt, some do not
    chosen, rejected = packed.score_pairs(pairs)
    padded_chosen, padded_rejected = RewardScorer(model, tokenizer, packing=False).score_pairs(pairs)
    assert max(abs(a - b) for a, b in zip(chosen + rejected, padded_chosen + padded_rejected)) < 1e-5
    assert len({round(r, 4) for r in padded_chosen + padded_rejected}) == 24


@pytest.mark.parametrize("heads, kv_heads", [(9, 3), (4, 4)])
def test_chunked_causal_attention_equals_one_masked_sdpa_call_with_gradients(heads, kv_heads):
    """`causal_attention` (256-query chunks, query heads folded onto their key/value head) gives
    SDPA's output and gradients on a packed mask of pair trees and sequences 600 tokens wide."""
    import torch

    from synpref.rm.packing import QUERY_CHUNK, causal_attention

    rng = random.Random(3)
    items = [pair_item([7] * 300 + [rng.randrange(9) for _ in range(250)], [7] * 300 + [rng.randrange(9) for _ in range(40)]),
             Item([1] * 600), Item([2] * 260), Item([3] * 200), Item([4] * 90)]
    packed = pack(items, reading="last", pad_token_id=0)
    assert packed.inputs["input_ids"].shape == (3, 600) and 600 > 2 * QUERY_CHUNK  # three chunks, the last one short
    mask = attention_mask(packed.inputs["group"], packed.inputs["branch"], causal=True)
    torch.manual_seed(0)
    query = torch.randn(3, heads, 600, 16, dtype=torch.float64, requires_grad=True)
    key, value = (torch.randn(3, kv_heads, 600, 16, dtype=torch.float64, requires_grad=True) for _ in range(2))
    weights = torch.randn(3, 600, heads, 16, dtype=torch.float64)

    class Attention(torch.nn.Module):
        num_key_value_groups = heads // kv_heads

    out, _ = causal_attention(Attention(), query, key, value, mask, scaling=0.25)
    (out * weights).sum().backward()
    chunked = [out.detach()] + [t.grad.clone() for t in (query, key, value)]
    for t in (query, key, value):
        t.grad = None
    groups = heads // kv_heads
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1), attn_mask=mask, scale=0.25)
    expected = expected.transpose(1, 2)
    (expected * weights).sum().backward()
    reference = [expected.detach()] + [t.grad for t in (query, key, value)]
    assert out.shape == (3, 600, heads, 16)
    for got, want in zip(chunked, reference):
        assert (got - want).abs().max().item() < 1e-10


def test_packed_decoder_passes_use_the_chunked_attention_and_give_sdpa_back(tiny_llama_dir):
    """The attention implementation is swapped for the packed pass only (and not under
    activation checkpointing, whose recomputation in the backward pass must repeat SDPA)."""
    import torch

    from synpref.rm.models import load_reward_model
    from synpref.rm.packing import CAUSAL_ATTENTION, RewardForward, reward_reading
    from synpref.rm.trainer import pair_rewards

    model, tokenizer = load_reward_model(str(tiny_llama_dir))
    seen = []
    model.model.layers[0].self_attn.register_forward_hook(lambda module, args, out: seen.append(module.config._attn_implementation))
    forward = RewardForward(model, reward_reading(model))
    pairs = [([5, 6, 7] * 100, [5, 6, 8] * 90), ([9] * 40, [9, 10] * 30)]
    kwargs = {"pad_token_id": tokenizer.pad_token_id, "separator": None, "device": "cpu"}
    losses = {}
    for checkpointing in (False, True):
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.train()
        chosen, rejected = pair_rewards(forward, pairs, packing="pairs", **kwargs)
        loss = torch.nn.functional.softplus(rejected - chosen).mean()
        loss.backward()  # recomputes under checkpointing: would raise if the forward pass differed
        losses[checkpointing] = loss.item()
    assert seen == [CAUSAL_ATTENTION, "sdpa", "sdpa"]  # the last one is the checkpoint's recomputation
    assert model.config._attn_implementation == "sdpa"
    assert losses[True] == pytest.approx(losses[False], abs=1e-6)


def test_chunked_attention_hands_what_it_does_not_do_to_transformers_sdpa():
    import torch

    from synpref.rm.packing import causal_attention

    class Attention(torch.nn.Module):
        num_key_value_groups = 1
        is_causal = True

    torch.manual_seed(0)
    query, key, value = (torch.randn(1, 2, 5, 4) for _ in range(3))
    # No mask: transformers' path, causal by itself.
    out, _ = causal_attention(Attention(), query, key, value, None)
    expected = torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True).transpose(1, 2)
    assert (out - expected).abs().max().item() < 1e-6
    # A term SDPA cannot add (Gemma 2's logit soft-capping) is refused, not dropped.
    mask = torch.ones(5, 5, dtype=torch.bool).tril()[None, None]
    with pytest.raises(ValueError, match="softcap"):
        causal_attention(Attention(), query, key, value, mask, softcap=50.0)
