"""Integration on the real shared data (skipped where ../shared/data is absent)."""

from __future__ import annotations

import pytest

from synpref.data.export import export
from synpref.data.ingest import IngestOptions, ingest
from synpref.data.workspace import Workspace
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "pool.jsonl.gz").exists(), reason="no ../shared/data")


def counts_of(run):
    return [(s.read, s.kept, s.duplicates, s.contaminated, s.quarantined) for s in run.sources]


def test_pool_and_gold_ingest_reingest_and_round_trip(workspace, tmp_path):
    pool, gold = str(SHARED_DATA / "pool.jsonl.gz"), str(SHARED_DATA / "gold.jsonl.gz")
    run = ingest(workspace, IngestOptions([pool]))
    # Every record is accounted for. Three pool records repeat another pool pair's exact texts
    # (two generators gave the same answer) and one has chosen == rejected up to indentation.
    assert counts_of(run) == [(19_717, 19_713, 3, 0, 1)]
    gold_run = ingest(workspace, IngestOptions([gold], split="gold"))
    # 80 gold records repeat the texts of another gold pair (identical outputs of two models).
    assert counts_of(gold_run) == [(842, 762, 80, 0, 0)]
    again = ingest(workspace, IngestOptions([pool, gold]))
    assert counts_of(again) == [(19_717, 0, 19_716, 0, 1), (842, 0, 842, 0, 0)]
    assert sum(s.kept for s in again.sources) == 0

    path, count = export(workspace, "jsonl", tmp_path / "all.jsonl")
    assert count == 19_713 + 762
    other = Workspace.init(tmp_path / "other")
    ingest(other, IngestOptions([str(path)]))
    assert other.pair_table().sort_by("id").equals(workspace.pair_table().sort_by("id"))
