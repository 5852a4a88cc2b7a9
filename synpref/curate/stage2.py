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
from synpref.curate.executors import MANIFEST, run_shards, write_shards, write_table_atomic
from synpref.curate.jobs import JudgeJob, ScoreJob
from synpref.curate.training import gold_pairs, load_scorer, train_reward_model
from synpref.errors import SynprefError


def run_stage2(workspace, config: CurateConfig, *, log=print) -> dict[str, Any]:
    from synpref.curate.stage1 import last_state

    started = time.perf_counter()
    run = workspace.run_dir("stage2")
    run.mkdir(parents=True, exist_ok=True)
    gold_model = config.stage2.gold_model or _train_gold_rm(workspace, config, run)
    best_model = config.stage2.best_model or _best_model_from_stage1(workspace)
    labelled = last_state(workspace)["labelled"] if config.stage2.scope == "unlabelled" else None
    limit = config.stage2.limit

    def remaining(columns):
        return _first(workspace.batches("pool", columns=columns, exclude=labelled), limit)

    shards = write_shards(remaining, run / "pool", config.shard_size)
    count = json.loads((run / "pool" / MANIFEST).read_text())["pairs"]
    log(f"stage2: {count:,} pool pairs in {len(shards)} shards; best RM {best_model}, gold RM {gold_model}")
    score = ScoreJob(best_model, gold_model, config.score_max_length, config.token_budget, str(workspace.root))
    ran = run_shards(score, shards, run / "scores", executor=config.executor, workers=config.ray_workers)
    log(f"stage2: scored {ran} shards ({len(shards) - ran} already done)")
    out_of_fold = {}
    if config.stage2.scope == "all" and config.stage2.best_model is None and config.stage2.cross_fit:
        out_of_fold = _out_of_fold(workspace, config, run, best_model, log)
    judged = _judge(workspace, config, run, shards, out_of_fold)
    return _write_decisions(workspace, config, run, shards, out_of_fold, judged, started, ran)


def _first(batches, limit: int | None):
    """The record batches up to `limit` rows (all of them for None)."""
    for batch in batches:
        if limit is not None:
            if limit <= 0:
                return
            batch, limit = batch.slice(0, limit), limit - batch.num_rows
        yield batch


def _train_gold_rm(workspace, config: CurateConfig, run: Path) -> str:
    output = run / "gold-rm"
    train_reward_model(config, gold_pairs(workspace), output, workspace_root=workspace.root)
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
    pairs = {p.id: p for split, p in workspace.iter_pairs(ids=list(silver)) if split in ("pool", "silver")}
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
            train_reward_model(config, rest, directory / "model", gold=gold_pairs(workspace), workspace_root=workspace.root)
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


def _scores(run: Path, shard: Path, out_of_fold: dict[str, float]) -> list[dict[str, Any]]:
    """One shard's scores, with the out-of-fold best-RM p where there is one."""
    import pyarrow.parquet as pq

    rows = pq.read_table(run / "scores" / shard.name, columns=["id", "best_p", "gold_p"]).to_pylist()
    for row in rows:
        row["best_p_out_of_fold"] = row["id"] in out_of_fold
        row["best_p"] = out_of_fold.get(row["id"], row["best_p"])
    return rows


def _judge(workspace, config: CurateConfig, run: Path, shards: list[Path], out_of_fold: dict[str, float]) -> bool:
    """LLM verdicts of the pairs below the band (the first `max_judged` of them, in pool order),
    written per shard under run/judgments/; False when no judge has a say."""
    stage2 = config.stage2
    if stage2.rule == "gold_and_best" or stage2.max_judged == 0:
        return False

    def below(shard: Path) -> list[str]:
        return [row["id"] for row in _scores(run, shard, out_of_fold)
                if needs_annotation(row["best_p"], margin=stage2.margin, rule=stage2.rule)]

    selected: set[str] = set()  # at most the judging budget (all pairs below the band without one)
    for shard in shards:
        ids = below(shard)
        if stage2.max_judged is not None:
            ids = ids[: stage2.max_judged - len(selected)]
        selected.update(ids)
        if stage2.max_judged is not None and len(selected) >= stage2.max_judged:
            break
    if not selected:
        return False
    from synpref.curate.stage1 import judges_with_say

    gold = [p for _, p in workspace.iter_pairs("gold")]
    job = judges_with_say(workspace, config, gold)
    if job is None:
        return False  # no judge earned a say: the rule reads the reward models only
    job = JudgeJob(str(workspace.root), job, frozenset(selected), gold, str(run / "judging"))
    run_shards(job, shards, run / "judgments", executor=config.executor, workers=config.ray_workers)
    return True


def decisions_schema():
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("action", pa.string()), ("reason", pa.string()), ("annotated", pa.bool_()),
                      ("best_p", pa.float64()), ("gold_p", pa.float64()), ("best_p_out_of_fold", pa.bool_()),
                      ("llm_verdict", pa.string()), ("llm_agreement", pa.float64()), ("decided_by", pa.string())])


def _write_decisions(workspace, config: CurateConfig, run: Path, shards: list[Path], out_of_fold: dict[str, float], judged: bool,
                     started: float, ran: int) -> dict[str, Any]:
    """The rule over every scored pair, a shard at a time, into decisions.parquet (written aside,
    then moved into place) and the counts into summary.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stage2 = config.stage2
    counts = {"pairs": 0, "keep": 0, "discard": 0, "flip": 0, "annotated": 0, "best_p_out_of_fold": 0}
    target = workspace.decisions_file
    tmp = target.with_name(target.name + ".tmp")
    with pq.ParquetWriter(tmp, decisions_schema()) as writer:
        for shard in shards:
            judgments = {}
            if judged:
                table = pq.read_table(run / "judgments" / shard.name)
                judgments = {row["id"]: row for row in table.to_pylist()}
            rows = []
            for score in _scores(run, shard, out_of_fold):
                judgment = judgments.get(score["id"])
                verdict = judgment["llm_verdict"] if judgment else None
                decision = decide(score["best_p"], score["gold_p"], verdict, margin=stage2.margin, rule=stage2.rule, flip=stage2.flip)
                rows.append({
                    "id": score["id"], "action": decision.action, "reason": decision.reason,
                    "annotated": judgment is not None, "best_p": score["best_p"], "gold_p": score["gold_p"],
                    "best_p_out_of_fold": score["best_p_out_of_fold"],
                    "llm_verdict": verdict, "llm_agreement": judgment["llm_agreement"] if judgment else None,
                    "decided_by": (judgment.get("decided_by") or None) if judgment else None,  # verifier | llm: which judge kind said it
                })
                counts["pairs"] += 1
                counts[decision.action] += 1
                counts["annotated"] += judgment is not None
                counts["best_p_out_of_fold"] += score["best_p_out_of_fold"]
            writer.write_table(pa.Table.from_pylist(rows, schema=decisions_schema()))
    tmp.replace(target)
    summary = {**counts, "rule": stage2.rule, "margin": stage2.margin, "flip_option": stage2.flip,
               "shards_scored_now": ran, "seconds": round(time.perf_counter() - started, 1)}
    (workspace.run_dir("stage2") / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
