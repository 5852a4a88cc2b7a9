"""The curation pipeline on real data (issue 7, acceptance 3).

Pool: the first --pool pairs of ../shared/data/pool.jsonl.gz (a subsample: the full 19,717
pairs do not fit a 20-minute run on 2 shared CPU cores). Gold: the first --gold pairs of
gold.jsonl.gz, stored with chosen = the humans' majority vote (3 annotators each); the rest
of gold.jsonl.gz is held out. Stage 1 runs --iterations iterations with the local SmolLM2
judge, then Stage 2 (rule gold_and_either, flip when the swapped pair passes), then the
report. Prints gold and held-out accuracy of each step's RM and what was kept.

    .venv/bin/python bench/curate_real.py [--pool 800 --gold 150 --iterations 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synpref.curate.config import CurateConfig  # noqa: E402
from synpref.data.ingest import IngestOptions, ingest  # noqa: E402
from synpref.data.workspace import Workspace  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def head(path: Path, count: int | None, skip: int = 0) -> list[str]:
    with gzip.open(path, "rt") as file:
        lines = file.read().splitlines()
    return lines[skip : None if count is None else skip + count]


def heldout_accuracy(model: Path, lines: list[str], max_length: int) -> float:
    from synpref.data.models import PreferencePair
    from synpref.rm.metrics import pairwise_accuracy
    from synpref.rm.scorers import load_scorer

    pairs = []
    for line in lines:
        r = json.loads(line)
        pairs.append(PreferencePair(conversation=r["conversation"], chosen=r["chosen"], rejected=r["rejected"], source=r["source"]))
    chosen, rejected = load_scorer(str(model), max_length=max_length).score_pairs(pairs)
    return pairwise_accuracy(chosen, rejected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=int, default=800)
    parser.add_argument("--gold", type=int, default=150)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per RM (batch 8)")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed-size", type=int, default=200, help="pool pairs taken as the starting silver")
    parser.add_argument("--retrieve", type=int, default=20, help="pairs judged per Stage 1 iteration")
    parser.add_argument("--judged", type=int, default=30, help="Stage 2 LLM budget (pairs below the band)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/synpref-curate-real"))
    parser.add_argument("--resume", action="store_true", help="keep WORKDIR and continue where it stopped")
    args = parser.parse_args()
    started = time.perf_counter()
    if not args.resume:
        shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    files = {"pool": args.workdir / "pool.jsonl", "gold": args.workdir / "gold.jsonl"}
    files["pool"].write_text("\n".join(head(DATA / "pool.jsonl.gz", args.pool)) + "\n")
    files["gold"].write_text("\n".join(head(DATA / "gold.jsonl.gz", args.gold)) + "\n")
    heldout = head(DATA / "gold.jsonl.gz", None, skip=args.gold)
    if (args.workdir / "ws" / "synpref.yaml").is_file():
        workspace = Workspace(args.workdir / "ws")
    else:
        workspace = Workspace.init(args.workdir / "ws", name="curate-real")
        ingest(workspace, IngestOptions([str(files["pool"])], split="pool", workers=1))
        ingest(workspace, IngestOptions([str(files["gold"])], split="gold", workers=1))
    config = CurateConfig(
        judges={"judges": [{"name": "smollm2", "backend": "local", "model": "smollm2-135m", "max_tokens": 32}], "examples": 1, "max_text_chars": 800},
        rm={"model": "minilm-l6", "max_length": args.max_length, "batch_size": 8, "learning_rate": args.learning_rate, "warmup_ratio": 0.1, "max_steps": args.steps,
            "eval_every": max(1, args.steps // 2), "epochs": 100},
        score_max_length=args.max_length, shard_size=250,
        stage1={"iterations": args.iterations, "seed_size": args.seed_size, "max_retrieved": args.retrieve},
        stage2={"rule": "gold_and_either", "flip": "reversed_passes", "margin": 0.1, "max_judged": args.judged},
    )
    from synpref.curate.report import write_report
    from synpref.curate.stage1 import run_stage1
    from synpref.curate.stage2 import run_stage2

    tick = time.perf_counter()
    stage1 = run_stage1(workspace, config, log=print)
    stage1_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    stage2 = run_stage2(workspace, config, log=print)
    stage2_seconds = time.perf_counter() - tick
    report = write_report(workspace)
    runs = workspace.root / "runs"
    steps = {f"stage1 iter-{s['iteration']}": (s["gold_accuracy"], runs / "stage1" / f"iter-{s['iteration']}" / "model") for s in stage1}
    gold_rm = runs / "stage2" / "gold-rm"
    steps["stage2 gold RM"] = (json.loads((gold_rm / "training_summary.json").read_text())["best_gold_accuracy"], gold_rm)
    accuracy = {name: {"gold": gold, "heldout": round(heldout_accuracy(model, heldout, args.max_length), 4)} for name, (gold, model) in steps.items()}
    results = {"pool": args.pool, "gold": args.gold, "heldout": len(heldout), "stage1": stage1, "stage2": stage2,
               "accuracy": accuracy, "report": str(report),
               "seconds": {"stage1": round(stage1_seconds, 1), "stage2": round(stage2_seconds, 1), "total": round(time.perf_counter() - started, 1)}}
    (args.workdir / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
