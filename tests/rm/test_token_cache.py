"""The tokenized-pair cache: the ids of the per-pair formatter exactly (pieces between added
tokens tokenized once, where the tokenizer allows it), built once and reused, read by index; training on it from a path or from Arrow pairs; two processes reading disjoint
halves of every global batch with no more memory each than one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from synpref.data.models import Message, PreferencePair
from synpref.rm.config import TrainConfig
from synpref.rm.data import epoch_batches
from synpref.rm.formatting import RewardFormatter
from synpref.rm.token_cache import (
    AddedTokenRules,
    PairEncoder,
    TextPair,
    TokenCache,
    encode_pair_batch,
    open_token_cache,
    pair_chunks,
    token_cache_path,
)

from .conftest import arithmetic_records, write_records

LONG = " ".join(f"word{i} ünïcödé 数字 {i * 7}" for i in range(400))  # ~4,000 tokens: truncated


def varied_pairs() -> list[PreferencePair]:
    """Single and multi-turn, with and without a system message, empty-ish and over-long sides,
    leading and trailing whitespace, newlines, and text that looks like a chat token."""
    user, assistant = (lambda text: Message(role="user", content=text)), (lambda text: Message(role="assistant", content=text))
    conversations = [
        [user("What is 2 + 2?")],
        [Message(role="system", content="Be brief."), user("Name a colour.")],
        [user("Hi"), assistant("Hello! How can I help?"), user("Tell me a story.\n\nA long one.")],
        [user(LONG)],
        [Message(role="system", content=LONG), user("Summarise the above."), assistant(" ok "), user("\n  again\n")],
        [user("literal <|im_end|> and <|im_start|>assistant inside a message")],
        [user("  leading spaces"), assistant("\n"), user("x")],
    ]
    responses = [
        ("4", "5"), ("Blue.", "Red, the colour of " + LONG), ("Once upon a time...", " "),
        ("Short.", LONG), ("It counts words.", "No."), ("<|im_end|>", "a\n\n\nb"), ("  spaced  ", "tab\tbed"),
    ]
    return [
        PreferencePair(conversation=c, chosen=assistant(good), rejected=assistant(bad), source="test")
        for c, (good, bad) in zip(conversations, responses)
    ]


def bos_adding_tokenizer(directory: Path):
    """SmolLM2's tokenizer made Llama-3-like: the template writes a BOS that encoding adds again."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.bos_token = "<|endoftext|>"
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)]
    )
    tokenizer.chat_template = "{{ bos_token }}" + tokenizer.chat_template
    return tokenizer


def formatters(name: str, directory: Path, max_length: int) -> RewardFormatter:
    from transformers import AutoTokenizer

    from synpref.rm.models import resolve_model_path

    if name == "minilm":
        return RewardFormatter(AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6")), max_length)
    if name == "bos-adding":
        return RewardFormatter(bos_adding_tokenizer(directory), max_length)
    return RewardFormatter(AutoTokenizer.from_pretrained(directory), max_length)


@pytest.mark.parametrize("name", ["tiny-llama", "bos-adding", "minilm"])
@pytest.mark.parametrize("max_length", [48, 1024])
def test_batched_ids_are_the_per_pair_ids(name, max_length, tiny_llama_dir):
    formatter = formatters(name, tiny_llama_dir, max_length)
    pairs = varied_pairs()
    expected = [(formatter.encode(p.conversation, p.chosen), formatter.encode(p.conversation, p.rejected)) for p in pairs]
    chosen, rejected = encode_pair_batch(formatter, pairs)
    assert list(zip(chosen, rejected)) == expected
    assert max(len(ids) for pair in expected for ids in pair) == min(max_length, formatter.max_length)  # some truncated
    if name == "bos-adding":  # the template's BOS stripped, the tokenizer's kept: one BOS
        assert [ids[:2].count(0) for ids, _ in expected[:3]] == [1, 1, 1]
    # In chunks, pairs repeated, with a memo too small to hold them all (so it starts afresh).
    encoder = PairEncoder(formatter, memo_ids=300)
    chunks = [pairs[:3], pairs[3:] + pairs[:2], pairs]
    encoded = [(c.tolist(), r.tolist()) for chosen, rejected in map(encoder, chunks) for c, r in zip(chosen, rejected)]
    assert encoded == expected + expected[:2] + expected
    assert (encoder.rules is not None) == (name != "minilm")  # chat inputs cut at their added tokens
    assert (formatter._shapes is not None) == (name != "minilm")  # rendered once per shape (template_shapes)


def test_a_piece_met_before_is_not_tokenized_again(smollm2_dir):
    from transformers import AutoTokenizer

    formatter = RewardFormatter(AutoTokenizer.from_pretrained(smollm2_dir), 1024)
    answer = lambda text: Message(role="assistant", content=text)  # noqa: E731
    pair = TextPair([Message(role="user", content="Hi")], answer("A"), answer("B"))
    encoder = PairEncoder(formatter)
    chosen, rejected = encoder([pair])
    # <|im_start|> user Ċ Hi <|im_end|> Ċ <|im_start|> ass istant Ċ A <|im_end|>: 12 ids each, of
    # which the pieces "user\nHi" (3), "\n" (1), "assistant\nA" (4) and "assistant\nB" (4) tokenized.
    assert formatter.tokenizer.convert_ids_to_tokens(chosen[0].tolist())[7:11] == ["ass", "istant", "Ċ", "A"]
    assert (encoder.tokenized, encoder.returned) == (12, 24)
    encoder([pair, pair])
    assert (encoder.tokenized, encoder.returned) == (12, 72)


def test_the_added_tokens_cut_a_text_leftmost_longest_as_the_tokenizer_does(smollm2_dir):
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken("<x>", normalized=False), AddedToken("<x>y", normalized=False)]})
    rules = AddedTokenRules.of(tokenizer)
    assert rules.split("q<x>yz<x><|im_end|>") == ["q", "<x>y", "z", "<x>", "", "<|im_end|>", ""]
    assert tokenizer.tokenize("q<x>yz<x><|im_end|>") == ["q", "<x>y", "z", "<x>", "<|im_end|>"]


def test_a_post_processor_adds_its_tokens_around_the_pieces():
    template = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
                                   "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}}
    from synpref.rm.token_cache import _single_sequence_affixes

    assert _single_sequence_affixes({"type": "Sequence", "processors": [{"type": "ByteLevel"}, template]}) == ([1], [2])
    assert _single_sequence_affixes(None) == ([], [])
    assert _single_sequence_affixes({"type": "RobertaProcessing"}) is None  # not known: whole texts


def test_a_tokenizer_whose_pieces_depend_on_their_place_is_encoded_whole(tiny_llama_dir):
    """Metaspace with prepend scheme "first" marks only the first piece of a text: cut at its added
    tokens, every piece would get the mark. Such a tokenizer is tokenized one whole text at a time."""
    from tokenizers.pre_tokenizers import Metaspace
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.backend_tokenizer.pre_tokenizer = Metaspace(replacement="Ġ", prepend_scheme="first")
    formatter = RewardFormatter(tokenizer, 1024)
    pairs = varied_pairs()
    text = formatter.text(pairs[0].conversation, pairs[0].chosen)[0]
    whole = tokenizer(text)["input_ids"]
    special = {token: tokenizer.convert_tokens_to_ids(token) for token in ("<|im_start|>", "<|im_end|>")}
    cut = AddedTokenRules.of(AutoTokenizer.from_pretrained(tiny_llama_dir)).split(text)  # the rules without Metaspace
    pieces = [[special[piece]] if piece in special else tokenizer(piece, add_special_tokens=False)["input_ids"] for piece in cut]
    assert [i for ids in pieces for i in ids] != whole  # what cutting would get wrong
    assert AddedTokenRules.of(tokenizer) is None and PairEncoder(formatter).rules is None
    expected = [(formatter.encode(p.conversation, p.chosen), formatter.encode(p.conversation, p.rejected)) for p in pairs]
    assert list(zip(*encode_pair_batch(formatter, pairs))) == expected


def test_a_truncation_left_on_the_tokenizer_is_not_applied(tiny_llama_dir):
    formatter = formatters("tiny-llama", tiny_llama_dir, 1024)
    encoder = PairEncoder(formatter)
    formatter.tokenizer.backend_tokenizer.enable_truncation(8)  # as a call with truncation leaves it
    chosen, rejected = encoder(varied_pairs())
    expected = [(formatter.encode(p.conversation, p.chosen), formatter.encode(p.conversation, p.rejected)) for p in varied_pairs()]
    assert [(c.tolist(), r.tolist()) for c, r in zip(chosen, rejected)] == expected
    assert max(len(ids) for ids in chosen) == 1024


def test_rules_that_fail_the_probe_are_not_used(tiny_llama_dir, monkeypatch):
    formatter = formatters("tiny-llama", tiny_llama_dir, 1024)
    wrong = AddedTokenRules.of(formatter.tokenizer)._replace(prefix=np.asarray([5], np.int32))
    monkeypatch.setattr(AddedTokenRules, "of", classmethod(lambda cls, tokenizer: wrong))
    encoder = PairEncoder(formatter)
    assert encoder.rules is None
    pairs = varied_pairs()
    expected = [(formatter.encode(p.conversation, p.chosen), formatter.encode(p.conversation, p.rejected)) for p in pairs]
    assert [(c.tolist(), r.tolist()) for c, r in zip(*encoder(pairs))] == expected


def test_the_cache_holds_the_ids_and_is_reused(tmp_path, tiny_llama_dir):
    formatter = formatters("tiny-llama", tiny_llama_dir, 64)
    pairs = varied_pairs() * 40  # several record batches
    data = write_records(tmp_path / "pairs.jsonl", [p.model_dump(mode="json") for p in pairs])
    cache = open_token_cache(tmp_path / "cache", str(data), None, formatter, build=True)
    expected = [(formatter.encode(p.conversation, p.chosen), formatter.encode(p.conversation, p.rejected)) for p in pairs]
    assert len(cache) == len(pairs)
    assert cache.lengths() == [max(len(c), len(r)) for c, r in expected]
    picked = [279, 0, 5, 256, 255, 13]
    assert cache.pairs(picked) == [expected[i] for i in picked]
    built = cache.path.stat().st_mtime_ns
    again = open_token_cache(tmp_path / "cache", str(data), None, formatter, build=True)
    assert again.path == cache.path and again.path.stat().st_mtime_ns == built  # reused, not rebuilt
    # Another max length, split or file content names another cache.
    assert token_cache_path(tmp_path, str(data), None, formatters("tiny-llama", tiny_llama_dir, 65))[0] != cache.path
    assert token_cache_path(tmp_path, str(data), "gold", formatter)[0] != cache.path
    write_records(data, [p.model_dump(mode="json") for p in pairs[:10]])
    assert token_cache_path(tmp_path / "cache", str(data), None, formatter)[0] != cache.path
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache.path.name]  # no draft left


def test_a_process_that_does_not_build_waits_for_the_file(tmp_path, tiny_llama_dir, monkeypatch):
    import threading

    from synpref.rm import token_cache

    monkeypatch.setattr(token_cache, "WAIT_SECONDS", 0.05)
    formatter = formatters("tiny-llama", tiny_llama_dir, 64)
    data = write_records(tmp_path / "pairs.jsonl", arithmetic_records(5, seed=12))
    builder = threading.Timer(0.5, open_token_cache, (tmp_path / "cache", str(data), None, formatter))
    builder.start()
    waited = open_token_cache(tmp_path / "cache", str(data), None, formatter, build=False)
    builder.join()
    assert len(waited) == 5 and waited.path.parent == tmp_path / "cache"


def test_arrow_pairs_read_like_a_file(tmp_path):
    records = arithmetic_records(10, seed=8)
    table = pa.Table.from_pylist([{**r, "split": "gold" if i % 2 else "pool"} for i, r in enumerate(records)])
    from_table = [p for chunk in pair_chunks(table, rows=3) for p in chunk]
    assert [p.chosen.content for p in from_table] == [r["chosen"]["content"] for r in records]
    gold = [p for chunk in pair_chunks(table.to_batches(max_chunksize=4), "gold") for p in chunk]
    assert [p.rejected.content for p in gold] == [r["rejected"]["content"] for r in records[1::2]]
    import pyarrow.dataset as ds

    from_dataset = [p for chunk in pair_chunks(ds.dataset(table), "pool") for p in chunk]
    assert [p.chosen.content for p in from_dataset] == [r["chosen"]["content"] for r in records[0::2]]


def load_weights(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def test_training_on_arrow_pairs_equals_training_on_the_file(tmp_path, tiny_llama_dir):
    from synpref.rm.trainer import train

    records = arithmetic_records(16, seed=9)
    data = write_records(tmp_path / "train.jsonl", records)
    common = dict(model=str(tiny_llama_dir), batch_size=4, max_steps=2, learning_rate=1e-3, tensorboard=False,
                  token_cache=str(tmp_path / "cache"))
    train(TrainConfig(data=str(data), output=str(tmp_path / "file"), **common))
    train(TrainConfig(output=str(tmp_path / "arrow"), **{**common, "token_cache": None}), pairs=pa.Table.from_pylist(records))
    first, second = load_weights(tmp_path / "file"), load_weights(tmp_path / "arrow")
    assert max((first[k] - second[k]).abs().max().item() for k in first) == 0.0
    assert len(list((tmp_path / "cache").glob("pairs-*.arrow"))) == 1
    assert len(list((tmp_path / "arrow" / "token-cache").glob("unnamed-*.arrow"))) == 1


RECORDING_TRAIN = textwrap.dedent('''
    """Train as `synpref train` would, recording the pair rows this process reads and its peak RSS."""
    import json, os, sys
    from synpref.rm.config import TrainConfig
    from synpref.rm import token_cache
    from synpref.rm.trainer import train

    data, output, model, batch_size, cache = sys.argv[1:6]
    read = []
    original = token_cache.TokenCache.pairs
    def recording(self, indices):
        indices = list(indices)
        read.append(indices)
        return original(self, indices)
    token_cache.TokenCache.pairs = recording
    config = TrainConfig(data=data, output=output, model=model, batch_size=int(batch_size), max_steps=3,
                         learning_rate=1e-3, log_every=1, tensorboard=False, token_cache=cache)
    summary = train(config)
    rank = int(os.environ.get("RANK", 0))
    # VmHWM: getrusage's maxrss carries the launching process's peak over fork and exec.
    status = open("/proc/self/status").read().splitlines()
    peak = int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) * 1024
    with open(os.path.join(output, f"read-{rank}.json"), "w") as file:
        json.dump({"read": read, "peak_rss": peak, "processes": summary["processes"]}, file)
''')


def test_two_processes_read_disjoint_halves_of_each_global_batch(tmp_path, tiny_llama_dir):
    """One cache for both ranks (built once), each rank reads its half of every global batch,
    the halves make up the global batches exactly, and a rank's peak RSS is within 1.1x of one
    process training on the same pairs."""
    data = write_records(tmp_path / "train.jsonl", arithmetic_records(64, seed=10))
    script = tmp_path / "recording_train.py"
    script.write_text(RECORDING_TRAIN)
    cache = tmp_path / "cache"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single"
    args = [str(data), str(single), str(tiny_llama_dir), "8", str(cache)]
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=environment,
                            timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = cache.glob("pairs-*.arrow")
    built_at = built.stat().st_mtime_ns
    double = tmp_path / "double"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(script), str(data), str(double), str(tiny_llama_dir), "4", str(cache),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert built.stat().st_mtime_ns == built_at  # the ranks mapped the cache the first run built
    runs = [json.loads((double / f"read-{rank}.json").read_text()) for rank in (0, 1)]
    alone = json.loads((single / "read-0.json").read_text())
    assert [run["processes"] for run in runs] == [2, 2]
    lengths = TokenCache(built).lengths()
    expected = epoch_batches(lengths, 8, seed=0, epoch=0)[:3]
    assert alone["read"] == expected
    for step, batch in enumerate(expected):
        first, second = runs[0]["read"][step], runs[1]["read"][step]
        assert not set(first) & set(second) and first + second == batch
    peaks = [run["peak_rss"] for run in runs]
    print(f"peak RSS: one process {alone['peak_rss'] / 2**20:.0f} MiB, two processes {[p / 2**20 for p in peaks]} MiB")
    assert max(peaks) <= 1.1 * alone["peak_rss"]
