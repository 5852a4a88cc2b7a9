"""The curation ablation: folds, conditions, intervals, and one small run end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from synpref.curate.ablation import (
    CONDITIONS,
    LONGER,
    bootstrap_interval,
    condition_sets,
    fold_of,
    per_source,
    summarise,
)
from synpref.data.models import Message, PreferencePair, pair_id


def _pair(index: int, source: str = "s") -> PreferencePair:
    return PreferencePair.model_construct(id=f"p{index}", conversation=[Message(role="user", content=f"q{index}")],
                                          chosen=Message(role="assistant", content=f"good {index}"),
                                          rejected=Message(role="assistant", content=f"bad {index}"), source=source, meta={})


def test_folds_are_a_seeded_hash_and_cover_every_pair_once():
    ids = [f"pair-{i}" for i in range(300)]
    folds = [fold_of(i, 3, seed=0) for i in ids]
    assert folds == [fold_of(i, 3, seed=0) for i in ids]
    assert sorted(set(folds)) == [0, 1, 2]
    assert all(80 <= folds.count(k) <= 120 for k in range(3))
    assert folds != [fold_of(i, 3, seed=1) for i in ids]


def test_condition_sets_follow_the_decisions():
    pool = [_pair(i) for i in range(10)]
    decisions = {"p0": {"action": "keep"}, "p1": {"action": "keep"}, "p2": {"action": "flip"}, "p3": {"action": "discard"}}
    sets = condition_sets(pool, [_pair(100)], decisions, seed=0)
    assert [p.id for p in sets["kept"]] == ["p0", "p1"]
    flipped = sets["kept+flipped"][2]
    assert (flipped.chosen.content, flipped.rejected.content) == ("bad 2", "good 2")
    assert flipped.id == pair_id(flipped.conversation, flipped.chosen, flipped.rejected)  # a new pair, a new id
    assert len(sets["random"]) == 2 and {p.id for p in sets["random"]} <= {p.id for p in pool}
    assert [p.id for p in sets["gold"]] == ["p100"] and len(sets["raw"]) == 10
    assert sets["random"] == condition_sets(pool, [], decisions, seed=0)["random"]


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_pairs():
    low, high = bootstrap_interval([1.0] * 70 + [0.0] * 30, resamples=4000, seed=0)
    assert low < 0.70 < high
    assert 0.60 <= low <= 0.63 and 0.77 <= high <= 0.80  # 0.7 +- 1.96 * sqrt(0.21 / 100)
    wide = bootstrap_interval([1.0] * 7 + [0.0] * 3, resamples=4000, seed=0)
    assert wide[1] - wide[0] > 2 * (high - low)
    assert bootstrap_interval([1.0] * 5, resamples=100, seed=0) == (1.0, 1.0)


def _fold(correct: dict[str, list[bool]], sizes: dict[str, int]) -> dict:
    return {"heldout": correct, "sizes": sizes}


def test_summary_pools_folds_and_pairs_the_differences():
    names = [*CONDITIONS, LONGER]
    fold_a = _fold({n: [True, True, False, False] for n in names} | {"kept": [True, True, True, False]}, {n: 10 for n in CONDITIONS})
    fold_b = _fold({n: [True, False] for n in names} | {"kept": [True, True]}, {n: 20 for n in CONDITIONS})
    results = summarise([fold_a, fold_b], resamples=500, seed=0)
    assert results["heldout_pairs"] == 6
    assert results["accuracy"]["raw"]["accuracy"] == 0.5
    assert results["accuracy"]["kept"]["accuracy"] == 5 / 6
    assert results["accuracy"]["kept"]["train_pairs_per_fold"] == [10, 20]
    kept_vs_raw = next(d for d in results["differences"] if (d["condition"], d["versus"]) == ("kept", "raw"))
    assert kept_vs_raw["difference"] == pytest.approx(2 / 6)
    assert 0.0 <= kept_vs_raw["low"] <= kept_vs_raw["difference"] <= kept_vs_raw["high"] <= 1.0


def test_per_source_counts_are_means_over_folds():
    decisions = {"a": {"action": "keep", "gold_p": 0.9}, "b": {"action": "flip", "gold_p": 0.2}, "c": {"action": "discard", "gold_p": 0.6}}
    fold = {"decisions": decisions, "pool_sources": {"a": "x", "b": "x", "c": "y"}}
    rows = per_source([fold, fold])
    assert rows == [
        {"source": "x", "pairs": 2.0, "kept": 1.0, "discarded": 0.0, "flipped": 1.0, "gold_rm_agrees": 0.5},
        {"source": "y", "pairs": 1.0, "kept": 0.0, "discarded": 1.0, "flipped": 0.0, "gold_rm_agrees": 1.0},
    ]


def test_ablation_end_to_end_finds_the_flipped_labels_and_resumes(tmp_path):
    """40 pool pairs with a third of the labels flipped on a separable task: curation must pay."""
    from synpref.data.ingest import IngestOptions, ingest
    from synpref.data.workspace import Workspace
    from tests.conftest import write_jsonl
    from tests.rm.test_head import advice_pairs

    def records(pairs, flip_every=0):
        rows = []
        for i, p in enumerate(pairs):
            chosen, rejected = (p.rejected, p.chosen) if flip_every and i % flip_every == 0 else (p.chosen, p.rejected)
            rows.append({"conversation": [m.model_dump() for m in p.conversation], "chosen": chosen.model_dump(),
                         "rejected": rejected.model_dump(), "source": "odd" if i % 2 else "even"})
        return rows

    pairs = advice_pairs(160, seed=11)
    workspace = Workspace.init(tmp_path / "ws")
    ingest(workspace, IngestOptions([str(write_jsonl(tmp_path / "pool.jsonl", records(pairs[:120], flip_every=3)))], split="pool", workers=1))
    ingest(workspace, IngestOptions([str(write_jsonl(tmp_path / "gold.jsonl", records(pairs[120:])))], split="gold", workers=1))
    (workspace.root / "curate.yaml").write_text(yaml.safe_dump({
        "rm": {"model": "minilm-l6", "head_only": True, "max_length": 64},
        "stage1": {"iterations": 2, "seed_size": 30}, "stage2": {"rule": "gold_and_best", "flip": "reversed_passes"},
    }))
    command = [sys.executable, "-m", "synpref", "curate", "ablation", "-w", str(workspace.root), "--set", "stage2.margin=0.1"]
    first = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    ablation = workspace.root / "runs" / "ablation"
    results = json.loads((ablation / "results.json").read_text())
    accuracy = {name: row["accuracy"] for name, row in results["accuracy"].items()}
    assert results["heldout_pairs"] == len({p.id for _, p in workspace.iter_pairs("gold")})
    assert accuracy["kept+flipped"] >= 0.95 and accuracy["kept+flipped"] >= accuracy["raw"]
    assert [row["source"] for row in results["per_source"]] == ["even", "odd"]
    assert sum(row["pairs"] for row in results["per_source"]) == len(list(workspace.iter_pairs("pool")))
    for name in ("report.md", "report.html", "accuracy.png"):
        assert (ablation / name).is_file()
    report = (ablation / "report.md").read_text()
    assert "(e) random subset of raw, size of (b)" in report
    assert "No LLM judge had a say in any fold (none configured, or none beat chance on gold)." in report
    second = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert second.returncode == 0
    assert "head-only RM" not in second.stdout  # every model reused, nothing trained again
    assert json.loads((ablation / "results.json").read_text())["accuracy"] == results["accuracy"]
