"""Stage 2 (DESIGN.md): the gold RM and the best RM over the remaining pool, then the rule.

    runs/stage2/gold-rm/         the gold RM, trained on every human-verified pair
    runs/stage2/pool/            the remaining pool pairs as Parquet shards (+ manifest)
    runs/stage2/scores/          per shard: both RMs' rewards and p
    runs/stage2/cross-fit/       scope all: fold-K/ RMs trained without a k-th of the best RM's
                                 silver, and out_of_fold.parquet, the best-RM p of those pairs
    runs/stage2/judgments/       per shard: the LLM verdicts of the pairs below the band
    runs/stage2/decisions.parquet  per pair: action (keep | discard | flip) and its reason
    runs/stage2/summary.json     counts, written last

Every shard output is written atomically and skipped when present, so a run killed at any
point and started again gives the same decisions without redoing finished shards.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from synpref.curate.config import CurateConfig
from synpref.curate.decision import decide, needs_annotation
from synpref.curate.executors import run_shards, write_shards, write_table_atomic
from synpref.curate.jobs import JudgeJob, ScoreJob
from synpref.curate.training import gold_file, load_scorer, train_reward_model, write_pairs
from synpref.errors import SynprefError


def run_stage2(workspace, config: CurateConfig, *, log=print) -> dict[str, Any]:
    from synpref.curate.stage1 import last_state

    started = time.perf_counter()
    run = workspace.run_dir("stage2")
    run.mkdir(parents=True, exist_ok=True)
    gold_model = config.stage2.gold_model or _train_gold_rm(workspace, config, run)
    best_model = config.stage2.best_model or _best_model_from_stage1(workspace)
    labelled = last_state(workspace)["labelled"] if config.stage2.scope == "unlabelled" else set()
    remaining = [(s, p) for s, p in workspace.iter_pairs("pool") if p.id not in labelled]
    if config.stage2.limit is not None:
        remaining = remaining[: config.stage2.limit]
    shards = write_shards(remaining, run / "pool", config.shard_size)
    log(f"stage2: {len(remaining):,} pool pairs in {len(shards)} shards; best RM {best_model}, gold RM {gold_model}")
    score = ScoreJob(best_model, gold_model, config.score_max_length, config.token_budget, str(workspace.root))
    ran = run_shards(score, shards, run / "scores", executor=config.executor, workers=config.ray_workers)
    log(f"stage2: scored {ran} shards ({len(shards) - ran} already done)")
    scores = _read_outputs(run / "scores", shards)
    if config.stage2.scope == "all" and config.stage2.best_model is None and config.stage2.cross_fit:
        _apply_out_of_fold(scores, _out_of_fold(workspace, config, run, best_model, log))
    judgments = _judge(workspace, config, run, shards, scores)
    return _write_decisions(workspace, config, scores, judgments, started, ran)


def _train_gold_rm(workspace, config: CurateConfig, run: Path) -> str:
    output = run / "gold-rm"
    train_reward_model(config, str(gold_file(workspace)), output, workspace_root=workspace.root)
    return str(output)


def _best_model_from_stage1(workspace) -> str:
    from synpref.curate.stage1 import finished_iterations

    iterations = finished_iterations(workspace)
    if not iterations:
        raise SynprefError("stage2: no finished Stage 1 iteration; run `synpref curate stage1` or set stage2.best_model")
    return str(iterations[-1] / "model")


def fold_of(pair_id: str, folds: int) -> int:
    """A pair's cross-fitting fold: fixed by its id, so a rerun trains the same folds."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(pair_id.encode(), digest_size=8).digest(), "big") % folds


def _out_of_fold(workspace, config: CurateConfig, run: Path, best_model: str, log) -> dict[str, float]:
    """The best-RM p of each pair the best RM trained on, from an RM of the same recipe trained
    without that pair (k folds): a noisy label the best RM memorised cannot vouch for itself."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from synpref.curate.stage1 import silver_trained_on
    from synpref.retrieval.adaptive import preference_probability

    path = run / "cross-fit" / "out_of_fold.parquet"
    if path.is_file():
        table = pq.read_table(path)
        return dict(zip(table.column("id").to_pylist(), table.column("best_p").to_pylist()))
    silver = silver_trained_on(workspace, Path(best_model).parent)
    pairs = {p.id: p for split, p in workspace.iter_pairs() if split in ("pool", "silver") and p.id in silver}
    folds = config.stage2.cross_fit
    log(f"stage2: cross-fitting the best RM's {len(pairs):,} training pairs in {folds} folds")
    train = _fold_heads(workspace, config) if config.rm_options().get("head_only") else None
    found: dict[str, float] = {}
    for fold in range(folds):
        held = [p for i, p in pairs.items() if fold_of(i, folds) == fold]
        rest = [p.swapped() if silver[i] else p for i, p in pairs.items() if fold_of(i, folds) != fold]
        directory = run / "cross-fit" / f"fold-{fold}"
        directory.mkdir(parents=True, exist_ok=True)
        if train is not None:
            train(rest, directory / "model")
        else:
            write_pairs(directory / "silver.jsonl", rest)
            train_reward_model(config, str(directory / "silver.jsonl"), directory / "model", gold=str(gold_file(workspace)),
                               workspace_root=workspace.root)
        if held:
            chosen, rejected = load_scorer(str(directory / "model"), config, workspace.root).score_pairs(held)
            found.update({p.id: preference_probability(c, r) for p, c, r in zip(held, chosen, rejected)})
    write_table_atomic(pq, pa.table({"id": pa.array(list(found), pa.string()), "best_p": pa.array(list(found.values()), pa.float64())}), path)
    return found


def _fold_heads(workspace, config: CurateConfig):
    """Head-only recipe without a backbone copy per fold: (pairs, directory) -> a head record
    fitted on cached features as `synpref train --head-only` fits it (l2 chosen on gold)."""
    from synpref.curate.training import feature_cache
    from synpref.rm.features import FeatureSpec, Featurizer, pair_inputs
    from synpref.rm.head import fit_bt_head, select_head, write_head_record

    options = config.rm_options()
    featurizer = Featurizer(FeatureSpec(options["model"], options["max_length"]), feature_cache(workspace.root), show_progress=False)
    gold = [p for _, p in workspace.iter_pairs("gold")]
    gold_features = [featurizer.features(x) for x in pair_inputs(featurizer, gold)] if gold else [None, None]

    def train(pairs, output: Path) -> None:
        chosen, rejected = (featurizer.features(x) for x in pair_inputs(featurizer, pairs))
        l2 = options.get("l2")
        head = select_head(chosen, rejected, *gold_features)[0] if l2 is None else fit_bt_head(chosen, rejected, l2=l2)
        write_head_record(featurizer, head, output)

    return train


def _apply_out_of_fold(scores: list[dict[str, Any]], out_of_fold: dict[str, float]) -> None:
    for row in scores:
        row["best_p_out_of_fold"] = row["id"] in out_of_fold
        row["best_p"] = out_of_fold.get(row["id"], row["best_p"])


def _read_outputs(directory: Path, shards: list[Path]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return [row for shard in shards for row in pq.read_table(directory / shard.name).to_pylist()]


def _judge(workspace, config: CurateConfig, run: Path, shards: list[Path], scores: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """LLM verdicts of the pairs below the band (the first `max_judged` of them, in pool order)."""
    stage2 = config.stage2
    below = [row["id"] for row in scores if needs_annotation(row["best_p"], margin=stage2.margin, rule=stage2.rule)]
    if not below:
        return {}
    from synpref.curate.stage1 import judges_with_say

    gold = [(s, p) for s, p in workspace.iter_pairs("gold")]
    job = judges_with_say(workspace, config, [p for _, p in gold])
    if job is None:
        return {}  # no judge earned a say: the rule reads the reward models only
    selected = frozenset(below[: stage2.max_judged] if stage2.max_judged is not None else below)
    gold_file = write_shards(gold, run / "gold", max(1, len(gold)))[0]
    job = JudgeJob(str(workspace.root), job, selected, str(gold_file), str(run / "judge-workspaces"))
    run_shards(job, shards, run / "judgments", executor=config.executor, workers=config.ray_workers)
    return {row["id"]: row for row in _read_outputs(run / "judgments", shards)}


def _write_decisions(workspace, config: CurateConfig, scores, judgments, started: float, ran: int) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    stage2 = config.stage2
    rows = []
    for score in scores:
        judged = judgments.get(score["id"])
        verdict = judged["llm_verdict"] if judged else None
        decision = decide(score["best_p"], score["gold_p"], verdict, margin=stage2.margin, rule=stage2.rule, flip=stage2.flip)
        rows.append({
            "id": score["id"], "action": decision.action, "reason": decision.reason,
            "annotated": judged is not None, "best_p": score["best_p"], "gold_p": score["gold_p"],
            "best_p_out_of_fold": score.get("best_p_out_of_fold", False),
            "llm_verdict": verdict, "llm_agreement": judged["llm_agreement"] if judged else None,
            "decided_by": (judged.get("decided_by") or None) if judged else None,  # verifier | llm: which judge kind said it
        })
    schema = pa.schema([("id", pa.string()), ("action", pa.string()), ("reason", pa.string()), ("annotated", pa.bool_()),
                        ("best_p", pa.float64()), ("gold_p", pa.float64()), ("best_p_out_of_fold", pa.bool_()), ("llm_verdict", pa.string()), ("llm_agreement", pa.float64()),
                        ("decided_by", pa.string())])
    write_table_atomic(pq, pa.Table.from_pylist(rows, schema=schema), workspace.decisions_file)
    counts = {action: sum(r["action"] == action for r in rows) for action in ("keep", "discard", "flip")}
    summary = {"pairs": len(rows), **counts, "annotated": sum(r["annotated"] for r in rows),
               "best_p_out_of_fold": sum(r["best_p_out_of_fold"] for r in rows),
               "rule": stage2.rule, "margin": stage2.margin, "flip_option": stage2.flip,
               "shards_scored_now": ran, "seconds": round(time.perf_counter() - started, 1)}
    (workspace.run_dir("stage2") / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
