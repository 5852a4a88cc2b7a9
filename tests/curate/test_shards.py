"""Shards: written once, refused when the selection changes; the in-process executor skips finished work."""

from __future__ import annotations

import pytest

from synpref.curate.executors import run_shards, write_shards
from synpref.errors import SynprefError


def test_shards_are_written_once_and_a_changed_selection_is_refused(objective_workspace, tmp_path):
    rows = list(objective_workspace.iter_pairs("pool"))
    shards = write_shards(rows, tmp_path / "shards", 16)
    assert [p.name for p in shards] == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    assert write_shards(rows, tmp_path / "shards", 16) == shards
    with pytest.raises(SynprefError, match="other pairs or another shard size"):
        write_shards(rows[:20], tmp_path / "shards", 16)


def test_run_shards_runs_only_unfinished_ones(objective_workspace, tmp_path):
    shards = write_shards(list(objective_workspace.iter_pairs("pool")), tmp_path / "shards", 16)
    calls = []

    def job(source, target):
        calls.append(source.name)
        target.write_text(source.name)

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "shard-00001.parquet").write_text("done before")
    assert run_shards(job, shards, tmp_path / "out") == 2
    assert calls == ["shard-00000.parquet", "shard-00002.parquet"]
    assert run_shards(job, shards, tmp_path / "out") == 0
