"""Controlled noise-recovery experiment for Stage 2 (issue 7, acceptance 2).

A preference set whose right answers the generator knows (sums, repeating a word; see
synpref/curate/known_answers.py), 30% of its labels flipped at random, a small clean gold set and
a clean held-out set. Stage 2 runs with a real backbone (MiniLM by default) and the RM-only
rule variant (`gold_and_best`: keep iff the gold RM and the best RM agree with the label;
the local SmolLM2 judge is near chance, so it is left out here). The best RM is the one
trained on the raw noisy set, as Stage 1 would hand over.

Reports precision and recall of the flipped pairs Stage 2 detects (not kept), how many it
recycles correctly, and held-out accuracy of RMs trained on raw, curated, and curated +
recycled pairs with the same backbone, step budget and checkpoint selection (gold accuracy).

    .venv/bin/python bench/noise_recovery.py [--pool 600 --gold 60 --heldout 300 --steps 75]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synpref.curate.config import CurateConfig  # noqa: E402
from synpref.curate.known_answers import flip_labels, objective_records  # noqa: E402
from synpref.data.ingest import IngestOptions, ingest  # noqa: E402
from synpref.data.workspace import Workspace  # noqa: E402


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def train(data: Path, output: Path, gold: Path, args, *, steps: int) -> dict:
    from synpref.rm.config import TrainConfig
    from synpref.rm.trainer import train as run_train

    return run_train(TrainConfig(
        data=str(data), output=str(output), gold=str(gold), model=args.model, max_length=64, batch_size=8,
        learning_rate=args.learning_rate, warmup_ratio=0.1, max_steps=steps, eval_every=max(1, steps // 5), epochs=1000,
        tensorboard=False, log_every=1000, seed=0,
    ))


def accuracy(model: Path, records: list[dict]) -> float:
    from synpref.data.models import PreferencePair
    from synpref.rm.metrics import pairwise_accuracy
    from synpref.rm.scorers import load_scorer

    pairs = [PreferencePair(**{k: r[k] for k in ("conversation", "chosen", "rejected", "source")}) for r in records]
    chosen, rejected = load_scorer(str(model), max_length=64).score_pairs(pairs)
    return pairwise_accuracy(chosen, rejected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=int, default=600)
    parser.add_argument("--gold", type=int, default=60)
    parser.add_argument("--heldout", type=int, default=300)
    parser.add_argument("--flip-rate", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=75, help="optimizer steps of every pool-trained RM (batch 8)")
    parser.add_argument("--gold-steps", type=int, default=40, help="optimizer steps of the gold RM")
    parser.add_argument("--margin", type=float, default=0.1)
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/synpref-noise-recovery"))
    parser.add_argument("--output", type=Path, default=None, help="JSON results (default: WORKDIR/results.json)")
    args = parser.parse_args()
    started = time.perf_counter()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    pool = flip_labels(objective_records(args.pool, seed=0), args.flip_rate, seed=1)
    gold = objective_records(args.gold, seed=2, offset=100_000)
    heldout = objective_records(args.heldout, seed=3, offset=200_000)
    files = {name: write_jsonl(args.workdir / f"{name}.jsonl", records) for name, records in (("pool", pool), ("gold", gold))}
    workspace = Workspace.init(args.workdir / "ws", name="noise-recovery")
    ingest(workspace, IngestOptions([str(files["pool"])], split="pool", workers=1))
    ingest(workspace, IngestOptions([str(files["gold"])], split="gold", workers=1))

    timings = {}
    tick = time.perf_counter()
    train(files["pool"], args.workdir / "rm-raw", files["gold"], args, steps=args.steps)
    gold_summary = train(files["gold"], args.workdir / "rm-gold", files["gold"], args, steps=args.gold_steps)
    timings["train raw + gold RM"] = time.perf_counter() - tick

    from synpref.curate.stage2 import run_stage2

    tick = time.perf_counter()
    config = CurateConfig(shard_size=128, score_max_length=64, stage2={
        "best_model": str(args.workdir / "rm-raw"), "gold_model": str(args.workdir / "rm-gold"),
        "rule": "gold_and_best", "flip": "reversed_passes", "margin": args.margin})
    summary = run_stage2(workspace, config, log=print)
    timings["stage2 (score + decide)"] = time.perf_counter() - tick
    results = detection(workspace, {pair.id: pair.meta["flipped"] for _, pair in workspace.iter_pairs("pool")})
    results["stage2"] = summary

    tick = time.perf_counter()
    sets = training_sets(workspace)
    heldout_accuracy = {"gold RM": accuracy(args.workdir / "rm-gold", heldout), "raw": accuracy(args.workdir / "rm-raw", heldout)}
    for name in ("curated", "curated + recycled"):
        data = write_jsonl(args.workdir / f"{name.replace(' + ', '-')}.jsonl", sets[name])
        model = args.workdir / f"rm-{name.replace(' + ', '-')}"
        train(data, model, files["gold"], args, steps=args.steps)
        heldout_accuracy[name] = accuracy(model, heldout)
    timings["train + evaluate curated RMs"] = time.perf_counter() - tick
    results.update({
        "setup": {k: v for k, v in vars(args).items() if k not in ("workdir", "output")},
        "training_pairs": {"raw": len(pool), **{k: len(v) for k, v in sets.items()}},
        "heldout_accuracy": {k: round(v, 4) for k, v in heldout_accuracy.items()},
        "gold_rm_gold_accuracy": gold_summary["best_gold_accuracy"],
        "seconds": {k: round(v, 1) for k, v in {**timings, "total": time.perf_counter() - started}.items()},
    })
    output = args.output or args.workdir / "results.json"
    output.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def detection(workspace: Workspace, flipped: dict[str, bool]) -> dict:
    """Precision/recall of 'not kept' against the known flips, and how many flips were put right."""
    import pyarrow.parquet as pq

    rows = pq.read_table(workspace.decisions_file).to_pylist()
    detected = [r for r in rows if r["action"] != "keep"]
    true_detected = sum(flipped[r["id"]] for r in detected)
    recycled = [r for r in rows if r["action"] == "flip"]
    return {
        "pairs": len(rows), "truly_flipped": sum(flipped.values()), "detected": len(detected),
        "precision": round(true_detected / max(1, len(detected)), 4),
        "recall": round(true_detected / max(1, sum(flipped.values())), 4),
        "recycled": len(recycled),
        "recycled_correctly": sum(flipped[r["id"]] for r in recycled),
        "kept_still_flipped": sum(flipped[r["id"]] for r in rows if r["action"] == "keep"),
    }


def training_sets(workspace: Workspace) -> dict[str, list[dict]]:
    """Kept pool pairs as stored, and those plus the recycled ones swapped."""
    import pyarrow.parquet as pq

    actions = {r["id"]: r["action"] for r in pq.read_table(workspace.decisions_file).to_pylist()}
    kept, recycled = [], []
    for _, pair in workspace.iter_pairs("pool"):
        record = {"conversation": [m.model_dump() for m in pair.conversation], "chosen": pair.chosen.model_dump(),
                  "rejected": pair.rejected.model_dump(), "source": pair.source}
        if actions.get(pair.id) == "keep":
            kept.append(record)
        elif actions.get(pair.id) == "flip":
            recycled.append({**record, "chosen": record["rejected"], "rejected": record["chosen"]})
    return {"curated": kept, "curated + recycled": kept + recycled}


if __name__ == "__main__":
    main()
