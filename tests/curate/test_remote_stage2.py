"""Stage 2 scored through live `synpref serve` servers decides as in-process scoring does."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from synpref.curate.config import CurateConfig
from synpref.curate.stage2 import run_stage2
from tests.conftest import served_process
from tests.curate.conftest import POOL_PAIRS, make_workspace

MAX_LENGTH = 64


def _decisions(workspace) -> list[dict]:
    return pq.read_table(workspace.decisions_file).to_pylist()


def test_stage2_through_served_reward_models_gives_the_in_process_decisions(reward_models, tmp_path):
    best, gold = reward_models
    local, remote = make_workspace(tmp_path / "local"), make_workspace(tmp_path / "remote")
    stage2 = {"margin": 0.1, "rule": "gold_and_best", "flip": "all"}
    run_stage2(local, CurateConfig(shard_size=8, score_max_length=MAX_LENGTH, stage2={**stage2, "best_model": best, "gold_model": gold}),
               log=lambda _: None)
    options = ["--max-length", str(MAX_LENGTH)]
    with (served_process(["--model", best, *options], tmp_path / "best.log") as (best_url, _),
          served_process(["--model", gold, *options], tmp_path / "gold.log") as (gold_url, _)):
        config = CurateConfig(shard_size=8, score_max_length=MAX_LENGTH, stage2={**stage2, "best_model": best_url, "gold_model": gold_url})
        summary = run_stage2(remote, config, log=lambda _: None)
    assert summary["pairs"] == POOL_PAIRS
    in_process, served = _decisions(local), _decisions(remote)
    assert [(d["id"], d["action"], d["reason"]) for d in served] == [(d["id"], d["action"], d["reason"]) for d in in_process]
    for here, there in zip(in_process, served):
        assert there["best_p"] == pytest.approx(here["best_p"], abs=1e-5)
        assert there["gold_p"] == pytest.approx(here["gold_p"], abs=1e-5)
    # The untrained heads sit near 0.5: both sides of the rule are exercised.
    assert {d["action"] for d in served} == {"keep", "flip"}
