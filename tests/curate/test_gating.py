"""Judges earn their vote: weights from measured gold agreement, and what a weight of 0 means."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from synpref.curate.config import CurateConfig
from synpref.curate.gating import (
    binomial_p_value,
    calibration_split,
    gate_judges,
    gated_job,
    judge_weight,
)
from tests.annotate.fault_injector import FaultInjector
from tests.curate.conftest import is_right, make_workspace, oracle_answer, oracle_judges


def test_binomial_p_values_are_exact():
    assert binomial_p_value(12, 12) == 1 / 4096
    assert binomial_p_value(10, 12) == (66 + 12 + 1) / 4096
    assert binomial_p_value(0, 12) == 1.0
    assert binomial_p_value(0, 0) == 1.0


def test_weight_is_zero_at_chance_and_2a_minus_1_above_it():
    assert judge_weight(6, 12, 0.05) == (0.0, "accuracy 0.500 on 12 gold pairs is not above chance (p = 0.613 >= 0.05)")
    assert judge_weight(9, 12, 0.05)[0] == 0.0  # p = 0.073: could be a lucky coin
    weight, why = judge_weight(11, 12, 0.05)
    assert weight == pytest.approx(2 * 11 / 12 - 1)
    assert why == "accuracy 0.917 on 12 gold pairs (p = 0.00317): weight 2a - 1"
    assert judge_weight(0, 0, 0.05) == (0.0, "no calibration pairs")


def test_gated_job_keeps_weighted_judges_only():
    job = {"judges": [{"name": "coin", "model": "m1"}, {"name": "sharp", "model": "m2"}], "examples": 2}
    report = [{"judge": "coin", "weight": 0.0}, {"judge": "sharp", "weight": 0.8}]
    assert gated_job(job, report) == {"judges": [{"name": "sharp", "model": "m2", "weight": 0.8}], "examples": 2, "combine": "weighted"}
    assert gated_job(job, [{"judge": "coin", "weight": 0.0}, {"judge": "sharp", "weight": 0.0}]) is None


def _scripted_answer(body: dict) -> str:
    """`coin` is right on half the pairs (by a hash of the pair), `sharp` on all but 1 in 20."""
    prompt = body["messages"][-1]["content"]
    target = prompt.split("## Pair to judge", 1)[1]
    first = target.split("### Candidate 1", 1)[1].split("### Candidate 2", 1)[0].strip()
    bucket = int(hashlib.sha256(target.encode()).hexdigest(), 16)
    honest = bucket % 2 == 0 if body["model"] == "coin" else bucket % 20 != 0
    says_first = is_right(first) == honest
    return json.dumps({"preferred": "Candidate 1" if says_first else "Candidate 2", "reason": "scripted"})


def _config(url: str | None, judge: str | None) -> CurateConfig:
    judges = None
    if judge:
        judges = {"judges": [{"name": judge, "backend": "openai", "model": judge, "base_url": url, "api_key_env": None,
                              "concurrency": 2, "timeout": 5.0, "max_retries": 2, "backoff_base": 0.01}], "examples": 2}
    return CurateConfig.model_validate({
        "judges": judges, "rm": {"model": "minilm-l6", "head_only": True, "max_length": 64},
        "stage1": {"iterations": 1, "seed_size": 20}, "stage2": {"margin": 0.45, "rule": "gold_and_either", "flip": "reversed_passes", "scope": "all"},
        "judge_gate": {"calibration_pairs": 12, "alpha": 0.05},
    })


def _decide(workspace, config) -> dict[str, str]:
    import pyarrow.parquet as pq

    from synpref.curate.stage1 import run_stage1
    from synpref.curate.stage2 import run_stage2

    run_stage1(workspace, config, log=lambda _: None)
    run_stage2(workspace, config, log=lambda _: None)
    table = pq.read_table(workspace.root / "runs" / "stage2" / "decisions.parquet").to_pylist()
    return {row["id"]: row["action"] for row in table}


def test_a_judge_at_chance_gets_weight_0_and_changes_nothing_a_good_one_does(tmp_path):
    base = make_workspace(tmp_path / "base")
    copies = {}
    for name in ("none", "coin", "sharp"):
        shutil.copytree(base.root, tmp_path / name)
        from synpref.data.workspace import Workspace

        copies[name] = Workspace(tmp_path / name)
    with FaultInjector(answer=_scripted_answer) as server:
        without = _decide(copies["none"], _config(None, None))
        coin = _decide(copies["coin"], _config(server.url, "coin"))
        coin_requests = len(server.received)
        sharp = _decide(copies["sharp"], _config(server.url, "sharp"))
    coin_gate = json.loads((copies["coin"].root / "runs" / "judge-gate" / "gating.json").read_text())
    sharp_gate = json.loads((copies["sharp"].root / "runs" / "judge-gate" / "gating.json").read_text())
    assert [(r["judge"], r["n"], r["weight"]) for r in coin_gate] == [("coin", 12, 0.0)]
    assert coin_gate[0]["correct"] < 10
    assert coin_requests == 12  # the calibration only: a judge with no say is never asked again
    assert sharp_gate[0]["correct"] >= 11 and sharp_gate[0]["weight"] == pytest.approx(2 * sharp_gate[0]["correct"] / 12 - 1)
    assert coin == without  # weight 0: exactly the RM-only decisions
    assert sharp != without  # a judge that earned its say moves decisions


def test_the_gate_judges_its_calibration_pairs_in_its_own_folder_and_a_rerun_pays_nothing(tmp_path):
    workspace = make_workspace(tmp_path)
    gold = [pair for _, pair in workspace.iter_pairs("gold")]
    gate = tmp_path / "stage"
    with FaultInjector(answer=oracle_answer) as server:
        job = oracle_judges(server.url)
        _, report = gate_judges(workspace.root, job, gold, gate, size=6, alpha=0.05, log=lambda _: None)
        asked = len(server.received)
        (gate / "gating.json").unlink()  # as if killed before the report was written
        shutil.rmtree(workspace.llm_cache_dir)  # the judge's samples log alone resumes it
        _, again = gate_judges(workspace.root, job, gold, gate, size=6, alpha=0.05, log=lambda _: None)
    assert (asked, len(server.received)) == (6, 6)
    assert again == report and (report[0]["n"], report[0]["correct"], report[0]["weight"]) == (6, 6, 1.0)
    logs = gate / "gating" / "oracle"
    assert sorted(p.name for p in logs.iterdir()) == ["judgments.jsonl", "judgments.parquet", "samples.jsonl", "samples.parquet"]
    calibration, _examples = calibration_split(gold, 6, 0)
    judged = [json.loads(line) for line in (logs / "judgments.jsonl").read_text().splitlines()]
    assert {r["pair_id"]: r["verdict"] for r in judged} == {p.id: "chosen" for p in calibration}
