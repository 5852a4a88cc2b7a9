"""Stage 0 end to end: deduplication, decontamination, resume, export round trips."""

from __future__ import annotations

import json

import pytest

import synpref.data.ingest as ingest_module
from synpref.data.export import FORMATS, export
from synpref.data.ingest import IngestOptions, ingest
from synpref.data.sample import make_records
from synpref.data.stats import workspace_stats
from synpref.data.workspace import Workspace
from tests.conftest import assistant, record, user, write_jsonl


def counts_of(run) -> list[tuple]:
    return [(s.read, s.kept, s.duplicates, s.contaminated, s.quarantined) for s in run.sources]


def test_duplicates_across_sources_and_ingests(workspace, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [record("Q1", "yes", "no"), record("Q2", "yes", "no")])
    b = write_jsonl(
        tmp_path / "b.jsonl.gz",
        [
            record("Q1", " yes ", "no"),  # whitespace variant of a.jsonl's first pair
            record("Q3", "yes", "no"),
            record("Q3", "yes", "no", source="elsewhere"),  # same content, other source
        ],
        gzipped=True,
    )
    run = ingest(workspace, IngestOptions([str(a), str(b)], workers=1))
    assert counts_of(run) == [(2, 2, 0, 0, 0), (3, 1, 2, 0, 0)]
    again = ingest(workspace, IngestOptions([str(b), str(a)], workers=1))
    assert counts_of(again) == [(3, 0, 3, 0, 0), (2, 0, 2, 0, 0)]
    assert len(workspace.existing_ids()) == 3
    assert [m["status"] for m in workspace.manifests()] == ["done", "done"]


BENCH_PROMPT = "the quick brown fox jumps over the lazy dog near the old river bank today"
THIRTEEN = "The QUICK brown fox jumps over the lazy dog near the old river"
TWELVE = "quick brown fox jumps over the lazy dog near the old river"


def test_decontamination_drops_pairs_sharing_one_13_gram(workspace, tmp_path):
    bench_a = write_jsonl(tmp_path / "bench-a.jsonl", [{"prompt": BENCH_PROMPT, "chosen": "x", "rejected": "y"}])
    bench_b = write_jsonl(tmp_path / "bench-b.jsonl", [{"conversation": [user(BENCH_PROMPT), assistant("a"), user("b")]},
                                                       {"question": "too short to ever match"}])
    pool = write_jsonl(
        tmp_path / "pool.jsonl",
        [
            record(f"Please: {THIRTEEN} again", "a", "b"),  # contaminated (case-insensitive)
            record(f"Please: {TWELVE} again", "a", "b"),  # only 12 tokens shared
            record("Tell me a story.", THIRTEEN, "b"),  # overlap in a response, not the conversation
            {"conversation": [user("The quick brown fox jumps over"), assistant("ok"),
                              user("the lazy dog near the old river")], "chosen": assistant("a"), "rejected": assistant("b")},
            {"conversation": [user("Hi"), assistant("Hello"), user(THIRTEEN)], "chosen": assistant("a"), "rejected": assistant("b")},
        ],
    )
    options = IngestOptions([str(pool)], decontaminate_against=[str(bench_a), str(bench_b)], workers=1)
    run = ingest(workspace, options)
    assert counts_of(run) == [(5, 3, 0, 2, 0)]
    assert run.sources[0].contaminated_by == {"bench-a": 2, "bench-b": 2}
    assert run.decontamination == {
        "bench-a": {"prompts": 1, "shorter_than_n": 0},
        "bench-b": {"prompts": 2, "shorter_than_n": 1},
    }
    entries = [json.loads(line) for path in workspace.quarantine_files() for line in path.read_text().splitlines()]
    assert [(e["kind"], e["reason"]) for e in entries] == [
        ("contaminated", "shares a 13-gram with a first-turn prompt of bench-a, bench-b")
    ] * 2
    assert json.loads(entries[0]["raw"])["conversation"][0]["content"] == f"Please: {THIRTEEN} again"
    # Contaminated pairs count as seen: a copy in a second source is a duplicate.
    again = ingest(workspace, IngestOptions([str(pool)], decontaminate_against=[str(bench_a)], workers=1))
    assert counts_of(again) == [(5, 0, 3, 2, 0)]


def test_parallel_workers_match_one_process(tmp_path):
    records = make_records(3000, seed=3)
    records += records[:500]  # known duplicates
    path = write_jsonl(tmp_path / "many.jsonl", records + [b"{broken"])
    results = {}
    for workers in (1, 2):
        workspace = Workspace.init(tmp_path / f"ws{workers}")
        run = ingest(workspace, IngestOptions([str(path)], workers=workers))
        results[workers] = (counts_of(run), workspace.pair_table().to_pylist())
    assert results[1][0] == [(3501, 3000, 500, 0, 1)]
    assert results[1] == results[2]


def interrupt_at_chunk(monkeypatch, number: int):
    """Make ingest raise KeyboardInterrupt (as Ctrl-C does) when it reaches chunk `number`;
    returns the real chunk accounting function, to put back."""
    original = ingest_module._account
    calls = {"n": 0}

    def interrupt(*args):
        calls["n"] += 1
        if calls["n"] == number:
            raise KeyboardInterrupt
        original(*args)

    monkeypatch.setattr(ingest_module, "_account", interrupt)
    return original


def test_interrupted_ingest_resumes_without_redoing_work(tmp_path, monkeypatch):
    records = make_records(5000, seed=7)
    path = write_jsonl(tmp_path / "big.jsonl", records + records[:1000])
    monkeypatch.setattr(ingest_module, "CHUNK_ITEMS", 500)
    monkeypatch.setattr(ingest_module, "CHECKPOINT_ITEMS", 1000)  # commit every 2 chunks

    straight = Workspace.init(tmp_path / "straight")
    expected = ingest(straight, IngestOptions([str(path)], workers=1))

    workspace = Workspace.init(tmp_path / "ws")
    original = interrupt_at_chunk(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        ingest(workspace, IngestOptions([str(path)], workers=1))
    [manifest] = workspace.manifests()
    assert (manifest["status"], manifest["sources"][0]["position"]) == ("running", 3000)
    assert len(workspace.existing_ids()) == 3000  # only committed work is visible

    monkeypatch.setattr(ingest_module, "_account", original)
    processed = []
    real_prepare = ingest_module.prepare_chunk
    monkeypatch.setattr(ingest_module, "prepare_chunk", lambda task: processed.append(len(task.items)) or real_prepare(task))
    resumed = ingest(workspace, IngestOptions([str(path)], workers=1))
    assert sum(processed) == 3000  # the remaining half only
    assert counts_of(resumed) == counts_of(expected) == [(6000, 5000, 1000, 0, 0)]
    assert resumed.run_id == manifest["run_id"]
    assert sorted(workspace.existing_ids()) == sorted(straight.existing_ids())
    assert sorted(p.name for p in workspace.pairs_dir.iterdir()) == sorted(p.name for p in workspace.shards())


def test_interrupted_run_with_other_arguments_is_rolled_back(workspace, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "a.jsonl", make_records(1200))
    monkeypatch.setattr(ingest_module, "CHUNK_ITEMS", 500)
    monkeypatch.setattr(ingest_module, "CHECKPOINT_ITEMS", 500)
    original = interrupt_at_chunk(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        ingest(workspace, IngestOptions([str(path)], workers=1))
    monkeypatch.setattr(ingest_module, "_account", original)
    run = ingest(workspace, IngestOptions([str(path)], split="gold", workers=1))
    assert counts_of(run) == [(1200, 1200, 0, 0, 0)]
    assert [m["status"] for m in workspace.manifests()] == ["done"]
    assert workspace_stats(workspace)["by_split"] == {"gold": 1200}


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_then_ingest_preserves_every_field(workspace, tmp_path, fmt):
    records = make_records(40, seed=1)
    records[0]["meta"] = {"nested": {"list": [1, 2.5, None]}, "text": "é\n<script>"}
    records[1]["conversation"] = [user("Hi"), assistant("Hello"), user("What is 1 + 1?")]
    gold = write_jsonl(tmp_path / "gold.jsonl", records[:10])
    pool = write_jsonl(tmp_path / "pool.jsonl", records[10:])
    ingest(workspace, IngestOptions([str(gold)], split="gold", workers=1))
    ingest(workspace, IngestOptions([str(pool)], workers=1))
    path, count = export(workspace, fmt, tmp_path / {"trl": "out.trl.jsonl", "jsonl": "out.jsonl",
                                                     "parquet": "out.parquet", "hf-dataset": "out-ds"}[fmt])
    assert count == 40
    other = Workspace.init(tmp_path / "other")
    run = ingest(other, IngestOptions([str(path)], workers=1))
    assert counts_of(run) == [(40, 40, 0, 0, 0)]
    before = sorted(workspace.pair_table().to_pylist(), key=lambda row: row["id"])
    after = sorted(other.pair_table().to_pylist(), key=lambda row: row["id"])
    assert after == before
    assert workspace_stats(other)["by_split"] == {"gold": 10, "pool": 30}


def test_trl_parquet_export_has_the_trl_columns(workspace, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [record("Q", "good", "bad", meta={"k": 1})])
    ingest(workspace, IngestOptions([str(path)], workers=1))
    import pyarrow.parquet as pq

    out, _ = export(workspace, "trl", tmp_path / "trl.parquet")
    [row] = pq.read_table(out).to_pylist()
    assert row["prompt"] == [user("Q")]
    assert (row["chosen"], row["rejected"]) == ([assistant("good")], [assistant("bad")])
    assert (row["source"], row["split"], json.loads(row["meta"])) == ("a", "pool", {"k": 1})


def test_stats_counts(workspace, tmp_path):
    long_reply = "x" * 5000
    path = write_jsonl(
        tmp_path / "s.jsonl",
        [
            record("Q1", "a", "b", source="one"),
            record("Q2", long_reply, "b", source="two"),
            {"conversation": [user("Hi"), assistant("Hello"), user("Q3")], "chosen": assistant("a"),
             "rejected": assistant("b"), "source": "two"},
            {"conversation": [user("1"), assistant("2"), user("3"), assistant("4"), user("5"), assistant("6"),
                              user("7"), assistant("8"), user("9")], "chosen": assistant("a"), "rejected": assistant("b")},
            record("Q5", "", "b"),
        ],
    )
    ingest(workspace, IngestOptions([str(path)], workers=1))
    assert workspace_stats(workspace) == {
        "pairs": 4,
        "quarantined": 1,
        "by_source": {"one": 1, "s": 1, "two": 2},
        "by_split": {"pool": 4},
        "by_user_turns": {"1": 2, "2": 1, "4+": 1},
        "by_length_chars": {"<1k": 3, "4k-16k": 1},
    }
