"""`synpref curate ablation`: does curation give a better reward model on *this* data?

The paper's central comparison, on the workspace's own pool and gold. Gold is split by a
seeded hash into `folds` parts; in fold k the other parts drive the whole loop (Stage 1 and
Stage 2 over every pool pair, judges gated on them) and part k is held out, seen by no step
of that fold. Then the same backbone and recipe is trained on

    raw            every pool pair, as labelled
    kept           the pool pairs Stage 2 keeps
    kept+flipped   those and the recycled pairs, swapped
    gold           the fold's loop gold only
    random         a seeded random subset of the raw pool the size of `kept`: the control
                   that tells cleaning apart from shrinking

and each is scored on the held-out part. Every gold pair is held out exactly once (folds
are cut by a hash of the conversation, so no prompt is on both sides), so the accuracies pool
over folds; 95% intervals come from a bootstrap over held-out pairs, and the
differences between conditions are paired (same test pairs, same resamples).

    runs/ablation/folds.json             gold ids per fold
    runs/ablation/fold-K/                a fold: what a view of the workspace writes (`Workspace.view`:
                                         the same store, gold limited to the fold's loop part)
      runs/stage1, runs/stage2           the loop, as `synpref curate stage1/stage2` write it
      conditions/<name>/                 model/, heldout.json (the training pairs are a selection of
                                         the store: ids, gathered when the model trains)
    runs/ablation/results.json, report.md, report.html, accuracy.png
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any, NamedTuple

from synpref.curate.config import CurateConfig
from synpref.data.models import PreferencePair
from synpref.data.workspace import Workspace
from synpref.errors import SynprefError

CONDITIONS = ("raw", "kept", "kept+flipped", "gold", "random")
# Paired differences reported: (better?, than), each on the same held-out pairs.
COMPARISONS = (("kept", "raw"), ("kept+flipped", "raw"), ("kept", "random"), ("kept+flipped", "random"),
               ("gold", "raw"), ("raw", "longer wins"))
LONGER = "longer wins"  # the length baseline: the longer response is preferred


def fold_of(pair_id: str, folds: int, seed: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{pair_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % folds


def run_ablation(workspace: Workspace, config: CurateConfig, *, folds: int = 3, seed: int = 0,
                 bench_dir: Path | None = None, resamples: int = 2000, held_out: list[PreferencePair] | None = None,
                 log=print) -> dict[str, Any]:
    """Run (or resume) every fold and write the results and report; returns the results.

    With `held_out` (pairs outside the workspace, e.g. the demo's clean test set) there is one
    fold: the workspace itself, all of its gold driving the loop.
    """
    started = time.perf_counter()
    root = workspace.run_dir("ablation")
    root.mkdir(parents=True, exist_ok=True)
    gold = [p for _, p in workspace.iter_pairs("gold")]
    pool = workspace.count("pool")
    config = config.model_copy(update={"stage2": config.stage2.model_copy(update={"scope": "all"})})
    if held_out is not None:
        log(f"ablation: all {len(gold)} gold pairs drive the loop, {len(held_out)} external pairs held out")
        fold_results = [_run_fold(workspace, config, held_out, seed, log, root / "conditions")]
    else:
        if len(gold) < 3 * folds or not pool:
            raise SynprefError(f"curate ablation: needs a pool and at least {3 * folds} gold pairs (have {pool} pool, {len(gold)} gold)")
        fold_results = _run_folds(workspace, config, gold, folds, seed, root, log)
    results = summarise(fold_results, resamples=resamples, seed=seed)
    results["per_source"] = per_source(fold_results)
    results["folds"] = [{k: v for k, v in f.items() if k not in ("heldout", "source_counts")} for f in fold_results]
    if bench_dir is not None:
        first = root / "conditions" if held_out is not None else root / "fold-1" / "conditions"
        results["benchmarks"] = _benchmarks(first, workspace.root, config, Path(bench_dir), log)
    results["seconds"] = round(time.perf_counter() - started, 1)
    (root / "results.json").write_text(json.dumps(results, indent=2))
    from synpref.curate.ablation_report import write_ablation_report

    write_ablation_report(results, root)
    return results


def _run_folds(workspace: Workspace, config: CurateConfig, gold, folds: int, seed: int, root: Path, log) -> list[dict[str, Any]]:
    """Gold split by a seeded hash of the conversation: a prompt is never on both sides."""
    assignment = {p.id: fold_of(conversation_key(p), folds, seed) for p in gold}
    (root / "folds.json").write_text(json.dumps({"folds": folds, "seed": seed, "gold": assignment}, indent=2))
    results = []
    for k in range(folds):
        held_out = [p for p in gold if assignment[p.id] == k]
        loop_ids = {p.id for p in gold if assignment[p.id] != k}
        log(f"ablation fold {k + 1}/{folds}: {len(loop_ids)} gold pairs drive the loop, {len(held_out)} held out")
        fold = workspace.view(root / f"fold-{k + 1}", loop_ids)
        results.append(_run_fold(fold, config, held_out, seed + k, log, fold.work_root / "conditions"))
    return results


def conversation_key(pair: PreferencePair) -> str:
    return json.dumps([[m.role, m.content] for m in pair.conversation])


def _run_fold(fold: Workspace, config: CurateConfig, held_out: list[PreferencePair], seed: int, log, conditions: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from synpref.curate.stage1 import run_stage1
    from synpref.curate.stage2 import run_stage2

    stage1 = run_stage1(fold, config, log=log)
    stage2 = run_stage2(fold, config, log=log)
    decisions = pq.read_table(fold.decisions_file, columns=["id", "action", "gold_p"])
    sets = condition_sets(fold, decisions, seed)
    heldout = {LONGER: [len(p.chosen.content) > len(p.rejected.content) for p in held_out]}
    sizes = {}
    for name in CONDITIONS:
        heldout[name], sizes[name] = _condition(fold, config, name, sets[name], held_out, conditions / name.replace("+", "-"), log)
    gate = fold.run_dir("judge-gate") / "gating.json"
    judges = json.loads(gate.read_text()) if gate.is_file() else []
    return {"stage1": stage1, "stage2": stage2, "sizes": sizes, "heldout": heldout, "judges": judges,
            "heldout_ids": [p.id for p in held_out], "source_counts": source_counts(fold, decisions)}


class Condition(NamedTuple):
    """A condition's training pairs as a selection of the store: ids in training order, and
    which of them train with chosen and rejected exchanged."""

    ids: list[str]
    flipped: list[str]


def condition_sets(fold: Workspace, decisions, seed: int) -> dict[str, Condition]:
    """The training pairs of each condition, from the pool and Stage 2's decisions (in pool order)."""
    pool = [i for batch in fold.batches("pool", columns=["id"]) for i in batch.column("id").to_pylist()]
    actions = dict(zip(decisions.column("id").to_pylist(), decisions.column("action").to_pylist()))
    kept = [i for i in pool if actions.get(i) == "keep"]
    flipped = [i for i in pool if actions.get(i) == "flip"]
    order = sorted(pool)
    random.Random(seed).shuffle(order)
    gold = [i for batch in fold.batches("gold", columns=["id"]) for i in batch.column("id").to_pylist()]
    return {"raw": Condition(pool, []), "kept": Condition(kept, []), "kept+flipped": Condition(kept + flipped, flipped),
            "gold": Condition(gold, []), "random": Condition(order[: len(kept)], [])}


def source_counts(fold: Workspace, decisions) -> dict[str, dict[str, int]]:
    """Per pool source: Stage 2's actions and how often the gold RM agrees (p > 0.5)."""
    import pyarrow as pa

    sources = pa.Table.from_batches(list(fold.batches("pool", columns=["id", "source"])))
    joined = decisions.join(sources, "id", join_type="left outer").to_pydict()
    counts: dict[str, dict[str, int]] = {}
    for source, action, gold_p in zip(joined["source"], joined["action"], joined["gold_p"]):
        row = counts.setdefault(source if source is not None else "?", {"pairs": 0, "keep": 0, "discard": 0, "flip": 0, "gold_rm_agrees": 0})
        row["pairs"] += 1
        row[action] += 1
        row["gold_rm_agrees"] += gold_p > 0.5
    return counts


def _condition(fold: Workspace, config: CurateConfig, name: str, selection: Condition, held_out: list[PreferencePair],
               directory: Path, log) -> tuple[list[bool], int]:
    """Train the condition's RM (once) and score the held-out pairs: per pair, right or not."""
    from synpref.curate.training import gold_pairs, load_scorer, train_reward_model

    result = directory / "heldout.json"
    if result.is_file():
        saved = json.loads(result.read_text())
        return saved["correct"], saved["pairs"]
    if not selection.ids:
        log(f"  {name}: no training pairs; scored as chance (every held-out pair wrong)")
        return [False] * len(held_out), 0
    directory.mkdir(parents=True, exist_ok=True)
    pairs = fold.gather(selection.ids, flipped=selection.flipped)
    # Model selection sees the fold's loop gold only (never the held-out part); the gold
    # condition trains on that gold, so it selects by cross-validation on it instead.
    gold = None if name == "gold" else gold_pairs(fold)
    train_reward_model(config, pairs, directory / "model", gold=gold, workspace_root=fold.root)
    chosen, rejected = load_scorer(str(directory / "model"), config, fold.root).score_pairs(held_out)
    correct = [c > r for c, r in zip(chosen, rejected)]
    log(f"  {name}: {pairs.num_rows:,} pairs -> held-out accuracy {sum(correct) / len(correct):.4f}")
    tmp = result.with_name(result.name + ".tmp")
    tmp.write_text(json.dumps({"pairs": pairs.num_rows, "correct": correct}))
    tmp.replace(result)
    return correct, pairs.num_rows


def bootstrap_interval(values, resamples: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of `values` over `resamples` bootstrap resamples."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def summarise(fold_results: list[dict[str, Any]], *, resamples: int, seed: int) -> dict[str, Any]:
    """Pooled held-out accuracy per condition and paired differences, with bootstrap intervals."""
    names = [*CONDITIONS, LONGER]
    correct = {name: [c for f in fold_results for c in f["heldout"][name]] for name in names}
    n = len(correct[LONGER])
    accuracy = {}
    for name in names:
        low, high = bootstrap_interval(correct[name], resamples, seed)
        sizes = [f["sizes"].get(name) for f in fold_results]
        accuracy[name] = {"accuracy": sum(correct[name]) / n, "low": low, "high": high, "train_pairs_per_fold": sizes}
    differences = []
    for better, than in COMPARISONS:
        delta = [float(a) - float(b) for a, b in zip(correct[better], correct[than])]
        low, high = bootstrap_interval(delta, resamples, seed)
        differences.append({"condition": better, "versus": than, "difference": sum(delta) / n, "low": low, "high": high})
    return {"heldout_pairs": n, "resamples": resamples, "accuracy": accuracy, "differences": differences}


def per_source(fold_results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per pool source, averaged over folds: kept / discarded / flipped and gold-RM agreement."""
    rows: dict[str, dict[str, float]] = {}
    for fold in fold_results:
        for source, counts in fold["source_counts"].items():
            row = rows.setdefault(source, {"pairs": 0, "keep": 0, "discard": 0, "flip": 0, "gold_rm_agrees": 0})
            for key, value in counts.items():
                row[key] += value
    folds = max(1, len(fold_results))
    return [{"source": source, "pairs": row["pairs"] / folds, "kept": row["keep"] / folds, "discarded": row["discard"] / folds,
             "flipped": row["flip"] / folds, "gold_rm_agrees": row["gold_rm_agrees"] / max(1, row["pairs"])}
            for source, row in sorted(rows.items())]


def _benchmarks(conditions: Path, workspace_root: Path, config: CurateConfig, bench_dir: Path, log) -> dict[str, Any]:
    """Every benchmark found under `bench_dir`, by its own rules, for fold 1's condition models."""
    from synpref.curate.training import load_scorer
    from synpref.eval.evaluate import evaluate

    scores = {}
    for name in CONDITIONS:
        model = conditions / name.replace("+", "-") / "model"
        if not model.is_dir():
            continue
        run = evaluate(load_scorer(str(model), config, workspace_root), ["all"], bench_dir)
        scores[name] = {bench: result.score for bench, result in run.results.items()}
        scores["skipped"] = run.skipped
        log(f"  benchmarks, {name}: " + ", ".join(f"{b} {'-' if s is None else f'{s:.4f}'}" for b, s in scores[name].items()))
    return scores
