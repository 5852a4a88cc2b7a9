"""The same inputs give the same pair order, whatever the ingest runs' ids.

`synpref demo --seed S` ingests its pool and its gold set within one second; run ids then
differed only in hex from each run's arguments (paths, file times), and shards were read in
the order of that hex, so the same seed trained a different model. Runs are now read in the
order they started.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import synpref.data.ingest as ingest_module
from synpref.data.ingest import IngestOptions, ingest
from synpref.data.workspace import IngestRun, Workspace
from tests.conftest import record, write_jsonl


class OneSecond(datetime):
    """Every run starts in the same second."""

    @classmethod
    def now(cls, tz=None):
        return datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def ingest_pool_then_gold(root, inputs, fingerprints: list[str], monkeypatch) -> Workspace:
    """Ingest pool then gold into a new workspace, the runs' fingerprints (run id hex) given."""
    given = iter(fingerprints)
    monkeypatch.setattr(ingest_module, "_fingerprint", lambda *_args: next(given))
    workspace = Workspace.init(root, name="order")
    ingest(workspace, IngestOptions([str(inputs / "pool.jsonl")], split="pool", workers=1))
    ingest(workspace, IngestOptions([str(inputs / "gold.jsonl")], split="gold", workers=1))
    return workspace


def test_pairs_are_read_in_ingest_order_whatever_the_run_ids(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_module, "datetime", OneSecond)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_jsonl(inputs / "pool.jsonl", [record(f"pool {i}", "yes", "no") for i in range(3)])
    write_jsonl(inputs / "gold.jsonl", [record(f"gold {i}", "yes", "no") for i in range(2)])
    # By run id, the first workspace's gold run sorts before its pool run, the second's after.
    first = ingest_pool_then_gold(tmp_path / "a", inputs, ["f" * 16, "0" * 16], monkeypatch)
    second = ingest_pool_then_gold(tmp_path / "b", inputs, ["0" * 16, "f" * 16], monkeypatch)
    assert sorted(p.name for p in first.ingest_dir.glob("*.json")) == ["20250102T030405-000000.json", "20250102T030405-ffffff.json"]

    expected = ["pool 0", "pool 1", "pool 2", "gold 0", "gold 1"]
    for workspace in (first, second):
        assert [pair.conversation[0].content for _split, pair in workspace.iter_pairs()] == expected
        assert [manifest["sequence"] for manifest in workspace.manifests()] == [1, 2]
    assert [pair.id for _s, pair in first.iter_pairs()] == [pair.id for _s, pair in second.iter_pairs()]
    assert first.pair_table(columns=["id"]).column("id").to_pylist() == [pair.id for _s, pair in second.iter_pairs()]


def test_manifests_written_before_runs_were_numbered_come_first_by_name(workspace, tmp_path):
    for name in ("20240101T000000-bbbbbb", "20240101T000000-aaaaaa"):
        old = IngestRun(run_id=name, fingerprint=name, status="done", started_at="2024-01-01", sources=[]).model_dump()
        del old["sequence"]
        (workspace.ingest_dir / f"{name}.json").write_text(json.dumps(old))
    write_jsonl(tmp_path / "new.jsonl", [record("new", "yes", "no")])
    ingest(workspace, IngestOptions([str(tmp_path / "new.jsonl")], workers=1))
    runs = [(manifest["run_id"][-6:], manifest.get("sequence", 0)) for manifest in workspace.manifests()]
    assert runs[:2] == [("aaaaaa", 0), ("bbbbbb", 0)] and runs[2][1] == 1
