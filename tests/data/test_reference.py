"""A pair's reference answer: read from the columns data sets use, stored, never part of the id."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from synpref.data.ingest import IngestOptions, ingest
from synpref.data.models import Message, PreferencePair, Reference, pair_id
from synpref.data.workspace import Workspace
from tests.conftest import write_jsonl


def _record(prompt: str, **extra) -> dict:
    return {"prompt": prompt, "chosen": f"{prompt} right", "rejected": f"{prompt} wrong", **extra}


def test_references_from_common_columns_gsm8k_and_map(tmp_path):
    workspace = Workspace.init(tmp_path / "ws")
    records = [
        _record("a", reference="42"),
        _record("b", ground_truth=3.5),
        _record("c", gold_answer="Paris"),
        _record("d", answer="Half of 84 is 42.\n#### 1,042"),
        _record("e", answer="no final marker"),  # not GSM8K: kept in meta
        _record("f", reference={"answer": "x{2}", "verifier": "regex"}),
        _record("g", solution="7"),  # mapped below
        _record("h"),
    ]
    ingest(workspace, IngestOptions([str(write_jsonl(tmp_path / "in.jsonl", records))], workers=1, mapping={"reference": "solution"}))
    pairs = {p.conversation[0].content: p for _, p in workspace.iter_pairs()}
    assert {prompt: p.reference for prompt, p in pairs.items()} == {
        "a": Reference(answer="42", verifier="math"), "b": Reference(answer="3.5", verifier="math"),
        "c": Reference(answer="Paris", verifier="normalised"), "d": Reference(answer="1042", verifier="math"),
        "e": None, "f": Reference(answer="x{2}", verifier="regex"), "g": Reference(answer="7", verifier="math"), "h": None,
    }
    assert pairs["e"].meta == {"answer": "no final marker"} and pairs["a"].meta == {} and pairs["d"].meta == {}
    for pair in pairs.values():  # the id is the content hash of the triple alone
        assert pair.id == pair_id(pair.conversation, pair.chosen, pair.rejected)


def test_a_bad_reference_is_quarantined_with_its_field(tmp_path):
    workspace = Workspace.init(tmp_path / "ws")
    run = ingest(workspace, IngestOptions([str(write_jsonl(tmp_path / "in.jsonl", [_record("a", reference=[1, 2])]))], workers=1))
    assert run.sources[0].quarantined == 1
    entry = json.loads(next(workspace.quarantine_dir.iterdir()).read_text())
    assert entry["field"] == "reference" and "expected an answer" in entry["reason"]


def test_old_shards_without_a_reference_read_as_none_and_swapping_keeps_it(tmp_path):
    workspace = Workspace.init(tmp_path / "ws")
    ingest(workspace, IngestOptions([str(write_jsonl(tmp_path / "in.jsonl", [_record("a", reference="1")]))], workers=1))
    (shard,) = workspace.shards()
    table = pq.read_table(shard)
    assert table.schema.names == ["id", "split", "source", "conversation", "chosen", "rejected", "meta"]  # same columns as before
    old = table.set_column(6, "meta", [["{}"]])  # as a workspace written before references were stored
    pq.write_table(old, shard)
    ((_, pair),) = workspace.iter_pairs()
    assert pair.reference is None
    message = Message(role="user", content="q")
    pair = PreferencePair(conversation=[message], chosen=Message(role="assistant", content="1"),
                          rejected=Message(role="assistant", content="2"), source="t", reference=Reference(answer="1"))
    assert pair.swapped().reference == pair.reference
    workspace.add_pairs([("gold", pair)], "manual-1", spec="test", format="synpref")
    stored = {p.id: p for _, p in workspace.iter_pairs("gold")}[pair.id]
    assert (stored.reference, stored.meta) == (Reference(answer="1"), {})
