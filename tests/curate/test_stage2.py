"""Stage 2 end to end on a tiny pool: decisions follow the rule, SIGKILL + rerun, Ray = in-process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml

from synpref.curate.config import CurateConfig
from synpref.curate.decision import decide
from synpref.curate.export import export_curated
from synpref.curate.report import write_report
from synpref.curate.stage2 import run_stage2
from synpref.data.workspace import Workspace
from tests.annotate.fault_injector import FaultInjector
from tests.curate.conftest import POOL_PAIRS, oracle_answer, oracle_judges

KILL_PAIRS = 16  # the first 16 pool pairs: enough shards to kill between, little to score


def stage2_config(reward_models, **stage2) -> CurateConfig:
    best, gold = reward_models
    options = {"best_model": best, "gold_model": gold, "margin": 0.1, "rule": "gold_and_best", **stage2}
    return CurateConfig(shard_size=8, score_max_length=64, stage2=options)


def decisions(workspace: Workspace) -> list[dict]:
    return pq.read_table(workspace.root / "runs" / "stage2" / "decisions.parquet").to_pylist()


def test_stage2_with_judges_follows_the_rule_and_exports(objective_workspace, reward_models, tmp_path):
    with FaultInjector(answer=oracle_answer) as server:
        config = stage2_config(reward_models, rule="gold_and_either", flip="reversed_passes")
        config.judges = oracle_judges(server.url)
        summary = run_stage2(objective_workspace, config, log=lambda *_: None)
    rows = decisions(objective_workspace)
    assert len(rows) == POOL_PAIRS == summary["pairs"]
    truth = {pair.id: pair.meta["flipped"] for _, pair in objective_workspace.iter_pairs("pool")}
    for row in rows:
        # Judged exactly the pairs at or below the band; the oracle judge is always right.
        assert row["annotated"] == (row["best_p"] <= 0.6)
        if row["annotated"]:
            assert row["llm_verdict"] == ("rejected" if truth[row["id"]] else "chosen")
        expected = decide(row["best_p"], row["gold_p"], row["llm_verdict"], margin=0.1, rule="gold_and_either", flip="reversed_passes")
        assert (row["action"], row["reason"]) == (expected.action, expected.reason)
    counts = {a: sum(r["action"] == a for r in rows) for a in ("keep", "discard", "flip")}
    assert {k: summary[k] for k in counts} == counts
    assert summary["annotated"] == sum(r["annotated"] for r in rows)

    report = write_report(objective_workspace, tmp_path / "report")
    text = (report / "report.md").read_text()
    assert f"| {POOL_PAIRS} | {counts['keep']} | {counts['discard']} | {counts['flip']} | {summary['annotated']} |" in text
    assert sorted(p.name for p in report.glob("*.png")) == ["stage2_decisions.png"]

    written = export_curated(objective_workspace, "trl", tmp_path / "export")
    gold_pairs = 12
    assert {name: count for name, (_, count) in written.items()} == {
        "curated": gold_pairs + counts["keep"], "flipped": counts["flip"], "union": gold_pairs + counts["keep"] + counts["flip"]}
    union = pq.read_table(export_curated(objective_workspace, "parquet", tmp_path / "parquet")["union"][0])
    assert union.schema.names == ["id", "split", "source", "conversation", "chosen", "rejected", "meta", "origin", "reason"]
    assert union.num_rows == written["union"][1]
    flipped_rows = [json.loads(line) for line in written["flipped"][0].read_text().splitlines()]
    by_id = {r["id"]: r for r in rows}
    for row in flipped_rows:
        original = by_id[row["meta"]["curation"]["original_id"]]
        assert (row["split"], row["origin"], row["reason"]) == ("flipped", "stage2 flip", original["reason"])


def test_sigkill_during_scoring_then_rerun_gives_the_same_decisions(objective_workspace, reward_models, tmp_path):
    config = stage2_config(reward_models, rule="gold_and_best", flip="reversed_passes")
    config.shard_size, config.stage2.limit = 2, KILL_PAIRS  # 8 shards: the kill lands between two
    clean = Workspace(shutil.copytree(objective_workspace.root, tmp_path / "clean"))
    (objective_workspace.root / "curate.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    scores = objective_workspace.root / "runs" / "stage2" / "scores"
    process = subprocess.Popen([sys.executable, "-m", "synpref", "curate", "stage2", "-w", str(objective_workspace.root)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(scores.glob("*.parquet")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in scores.glob("*.parquet")}
    assert 1 <= len(finished) < KILL_PAIRS // 2

    summary = run_stage2(objective_workspace, config, log=lambda *_: None)
    assert summary["shards_scored_now"] == KILL_PAIRS // 2 - len(finished)
    assert {name: (scores / name).stat().st_mtime_ns for name in finished} == finished  # not recomputed
    run_stage2(clean, config, log=lambda *_: None)
    assert decisions(objective_workspace) == decisions(clean)


def test_ray_executor_gives_the_decisions_of_the_in_process_one(objective_workspace, reward_models, tmp_path):
    ray = pytest.importorskip("ray")
    config = stage2_config(reward_models, rule="gold_and_best", flip="reversed_passes", limit=KILL_PAIRS)
    on_ray = Workspace(shutil.copytree(objective_workspace.root, tmp_path / "on-ray"))
    run_stage2(objective_workspace, config, log=lambda *_: None)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_stage2(on_ray, config.model_copy(update={"executor": "ray"}), log=lambda *_: None)
    finally:
        ray.shutdown()
    local, remote = decisions(objective_workspace), decisions(on_ray)
    assert [(r["id"], r["action"], r["reason"]) for r in remote] == [(r["id"], r["action"], r["reason"]) for r in local]
    assert [r["best_p"] for r in remote] == pytest.approx([r["best_p"] for r in local], abs=1e-6)
    assert len(list((on_ray.root / "runs" / "stage2" / "scores").glob("*.parquet"))) == KILL_PAIRS // 8
