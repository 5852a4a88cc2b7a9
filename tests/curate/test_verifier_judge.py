"""Verifier judges: pairs with a reference are judged by rule verifiers, gated on gold like LLMs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq

from synpref.curate.config import CurateConfig
from synpref.curate.gating import gate_judges
from synpref.curate.judging import judge_pairs
from synpref.curate.known_answers import flip_labels, objective_records
from synpref.curate.stage1 import last_state, run_stage1
from synpref.data.ingest import IngestOptions, ingest
from synpref.data.models import Message, PreferencePair, Reference
from synpref.data.workspace import Workspace
from tests.annotate.fault_injector import FaultInjector
from tests.conftest import write_jsonl
from tests.curate.conftest import GOLD_PAIRS, TEST_RM, oracle_answer, oracle_judges

VERIFIER = {"name": "rules", "backend": "verifier", "model": "rules", "api_key_env": None}


def _config(judges: list[dict], **stage1) -> CurateConfig:
    return CurateConfig(judges={"judges": judges, "examples": 2}, rm={**TEST_RM, "max_steps": 1}, shard_size=20, k_max=2,
                        stage1={"iterations": 1, "seed_size": 12, **stage1}, judge_gate={"calibration_pairs": 6})


def test_stage1_labels_pairs_with_a_reference_by_the_verifier(objective_workspace):
    pool = {pair.id: pair for _, pair in objective_workspace.iter_pairs("pool")}
    assert all(pair.reference is not None for pair in pool.values())  # stored in the shards, read back
    summaries = run_stage1(objective_workspace, _config([VERIFIER]), log=lambda *_: None)

    (row,) = json.loads((objective_workspace.run_dir("judge-gate") / "gating.json").read_text())
    assert (row["judge"], row["kind"], row["n"], row["correct"]) == ("rules", "verifier", GOLD_PAIRS, GOLD_PAIRS)
    assert row["accuracy"] >= 0.95 and row["weight"] > 0  # measured on every gold pair it decides
    iteration = objective_workspace.root / "runs" / "stage1" / "iter-1"
    judged = pq.read_table(iteration / "judgments.parquet").to_pylist()
    assert judged and all(r["decided_by"] == "verifier" and "correct" in r["reason"] for r in judged)
    assert {r["id"]: r["verdict"] for r in judged} == {r["id"]: "rejected" if pool[r["id"]].meta["flipped"] else "chosen" for r in judged}
    assert summaries[0]["added_by"] == {"verifier": len(judged), "llm": 0, "human": 0}
    state = last_state(objective_workspace)
    assert {r["origin"] for r in state["rows"] if r["id"] in {j["id"] for j in judged}} == {"iter-1 verifier"}


def _workspace_without_references(root: Path) -> Workspace:
    workspace = Workspace.init(root / "ws", name="no-references")
    strip = lambda records: [{k: v for k, v in r.items() if k != "reference"} for r in records]  # noqa: E731
    gold = strip(objective_records(GOLD_PAIRS, seed=1, offset=10_000))
    pool = strip(flip_labels(objective_records(20, seed=2), 0.3, seed=3))
    ingest(workspace, IngestOptions([str(write_jsonl(root / "gold.jsonl", gold))], split="gold", workers=1))
    ingest(workspace, IngestOptions([str(write_jsonl(root / "pool.jsonl", pool))], split="pool", workers=1))
    return workspace


def test_on_gold_without_references_the_verifier_decides_nothing_and_changes_no_decision(tmp_path):
    workspace = _workspace_without_references(tmp_path)
    gold = [p for _, p in workspace.iter_pairs("gold")]
    pool = [p for _, p in workspace.iter_pairs("pool")]
    with FaultInjector(answer=oracle_answer) as server:
        oracle = oracle_judges(server.url)["judges"][0]
        job = {"judges": [VERIFIER, oracle], "examples": 2}
        gated, report = gate_judges(workspace.root, job, gold, tmp_path / "gate", size=6, alpha=0.05, log=lambda *_: None)
        by_judge = {row["judge"]: row for row in report}
        assert (by_judge["rules"]["n"], by_judge["rules"]["weight"]) == (0, 0.0)
        assert "decides none of the 12 gold pairs" in by_judge["rules"]["why"]
        assert [j["name"] for j in gated["judges"]] == ["oracle"]
        # Even given a say, it abstains on every pair: the verdicts are the oracle's alone.
        both = judge_pairs(workspace.root, pool, gold, {**job, "combine": "weighted"}, tmp_path / "both")
        alone = judge_pairs(workspace.root, pool, gold, {**job, "judges": [oracle]}, tmp_path / "alone")
    assert {i: v.verdict for i, v in both.items()} == {i: v.verdict for i, v in alone.items()}
    assert {v.decided_by for v in both.values()} == {"llm"}


def _pair(prompt: str, chosen: str, rejected: str, reference: Reference) -> PreferencePair:
    return PreferencePair(conversation=[Message(role="user", content=prompt)], chosen=Message(role="assistant", content=chosen),
                          rejected=Message(role="assistant", content=rejected), source="hostile", reference=reference)


def test_hostile_references_give_no_verdict_with_a_reason_quickly(tmp_path):
    (tmp_path / "cache" / "llm").mkdir(parents=True)
    job = {"judges": [VERIFIER]}
    judge_pairs(tmp_path, [_pair("warm up", "1 + 1 = 2", "1 + 1 = 3", Reference(answer="2"))], [], job, tmp_path / "warm")
    cases = {
        "not a number": (_pair("What is 2 + 2?", "2 + 2 = 4", "2 + 2 = 5", Reference(answer="four-ish, maybe")), "neither response is correct"),
        "invalid regex": (_pair("Say abc", "abc", "abd", Reference(answer="(unclosed[", verifier="regex")), "bad reference: invalid regular expression"),
        "1 MB answer": (_pair("Say it", "x", "y", Reference(answer="7" * 1_000_000)), "bad reference: over 20000 characters"),
        "1 MB regex": (_pair("Say it", "x", "y", Reference(answer="a" * 1_000_000, verifier="regex")), "bad reference: over 20000 characters"),
        "catastrophic regex": (_pair("Say a", "a" * 40 + "!", "b", Reference(answer="(a+)+$", verifier="regex")), "time limit"),
        "unknown verifier": (_pair("Say a", "a", "b", Reference(answer="a", verifier="telepathy")), "unknown verifier"),
    }
    for name, (pair, reason) in cases.items():
        started = time.monotonic()
        (verdict,) = judge_pairs(tmp_path, [pair], [], job, tmp_path / "judge").values()
        assert time.monotonic() - started < 2.0, name
        assert (verdict.verdict, verdict.decided_by) == ("unsure", ""), name
        assert reason in verdict.reason, (name, verdict.reason)
