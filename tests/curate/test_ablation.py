"""The curation ablation: folds, conditions, intervals, and one small run end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pytest
import yaml

from synpref.curate.ablation import (
    CONDITIONS,
    LONGER,
    Condition,
    bootstrap_interval,
    condition_sets,
    fold_of,
    per_source,
    source_counts,
    summarise,
)
from synpref.data.workspace import Workspace


def test_folds_are_a_seeded_hash_and_cover_every_pair_once():
    ids = [f"pair-{i}" for i in range(300)]
    folds = [fold_of(i, 3, seed=0) for i in ids]
    assert folds == [fold_of(i, 3, seed=0) for i in ids]
    assert sorted(set(folds)) == [0, 1, 2]
    assert all(80 <= folds.count(k) <= 120 for k in range(3))
    assert folds != [fold_of(i, 3, seed=1) for i in ids]


class RowsStore(Workspace):
    """A store of given (id, split, source) rows, without a workspace on disk: the columns
    `condition_sets` and `source_counts` read."""

    def __init__(self, rows: list[tuple[str, str, str]]):
        self.rows = rows

    def batches(self, split=None, *, columns=None, **_):
        rows = [r for r in self.rows if split is None or r[1] == split]
        yield pa.record_batch({"id": [r[0] for r in rows], "split": [r[1] for r in rows], "source": [r[2] for r in rows]}).select(columns)


def test_condition_sets_follow_the_decisions():
    store = RowsStore([(f"p{i}", "pool", "s") for i in range(10)] + [("p100", "gold", "s")])
    decisions = pa.table({"id": ["p0", "p1", "p2", "p3"], "action": ["keep", "keep", "flip", "discard"], "gold_p": [0.9] * 4})
    sets = condition_sets(store, decisions, seed=0)
    assert sets["kept"] == Condition(["p0", "p1"], [])
    assert sets["kept+flipped"] == Condition(["p0", "p1", "p2"], ["p2"])  # p2 trains with chosen and rejected exchanged
    assert len(sets["random"].ids) == 2 and set(sets["random"].ids) <= {f"p{i}" for i in range(10)}
    assert sets["gold"].ids == ["p100"] and sets["raw"].ids == [f"p{i}" for i in range(10)]
    assert sets["random"] == condition_sets(store, decisions, seed=0)["random"]
    assert sets["random"].ids == ["p7", "p8"]  # sorted ids shuffled by Random(0)


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
    store = RowsStore([("a", "pool", "x"), ("b", "pool", "x"), ("c", "pool", "y")])
    decisions = pa.table({"id": ["a", "b", "c"], "action": ["keep", "flip", "discard"], "gold_p": [0.9, 0.2, 0.6]})
    fold = {"source_counts": source_counts(store, decisions)}
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
