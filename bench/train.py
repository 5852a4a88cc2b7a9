"""Training throughput: `synpref train` vs TRL's `RewardTrainer`, side by side, one run.

Same backbone (SmolLM2-135M-Instruct, same seeded score head), same pairs, same token ids,
same batch size, learning rate and schedule (linear decay, no warmup), one epoch, bf16 by
default (this CPU has bf16 units): TRL's bf16 is autocast over fp32 weights, synpref's default
bf16 is a bf16 model with fp32 master weights (`--no-master-weights` in `synpref train` gives
autocast).

TRL drops every pair whose chosen or rejected input is longer than max_length instead of
truncating it, so both trainers get the pairs of the --pairs pool sample that fit in
--max-length tokens (formatted by our formatter, which TRL receives pre-tokenized: the token
ids are identical). TRL runs with its own defaults otherwise (gradient checkpointing on,
random batches padded to the longest); synpref with its defaults (length-grouped batches, no
checkpointing, packing: no padding, each pair's prompt computed once). With
--trl-no-checkpointing-too, TRL runs a second time without gradient checkpointing in the same
run (its fastest setting, and the memory to compare against). Each trainer runs in its own
child process, one after the other.

Reported: pairs/s (training loop only; and by wall clock over the timed call, which for
synpref includes loading the model and data and saving, for TRL only `trainer.train()`),
process CPU seconds over the same calls
(the machine is shared), peak RSS, and the losses (last step, mean of the last 10 steps,
mean over the epoch) of both, then the ratio.

    python bench/train.py [--pairs 512] [--max-length 512] [--batch-size 8] [--lr 1e-5]
                          [--dtype bf16|fp32] [--no-trl-gradient-checkpointing]
                          [--trl-no-checkpointing-too] [--packing pairs|sequences|off]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POOL = ROOT.parent / "shared" / "data" / "pool.jsonl.gz"
MODEL = "smollm2-135m"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--model", default=MODEL, help="backbone: embedded name or model directory (bench/gpu.py passes its own)")
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--no-trl-gradient-checkpointing", action="store_true")
    parser.add_argument("--trl-no-checkpointing-too", action="store_true",
                        help="also run TRL without gradient checkpointing, in the same run")
    parser.add_argument("--packing", choices=["pairs", "sequences", "off"], default="pairs", help="synpref's packing")
    parser.add_argument("--child", choices=["synpref", "trl", "trl-no-checkpointing"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = run_synpref(args) if args.child == "synpref" else run_trl(args)
        result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        result["peak_gpu_gb"] = peak_gpu_gb()
        (args.workdir / f"{args.child}.json").write_text(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="synpref-bench-train-") as workdir:
        args.workdir = Path(workdir)
        kept, tokens = write_kept_pairs(args)
        print(f"{kept} of {args.pairs} pool pairs fit in {args.max_length} tokens; both trainers get exactly these; "
              f"batch {args.batch_size}, lr {args.lr}, dtype {args.dtype}", flush=True)
        names = ["synpref", "trl"] + (["trl-no-checkpointing"] if args.trl_no_checkpointing_too else [])
        results = {name: run_child(name, args) for name in names}
    print_results(results, args)
    if args.json_out:
        args.json_out.write_text(json.dumps({"kept_pairs": kept, "tokens_per_pair": tokens / max(kept, 1), **results}))


def peak_gpu_gb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def write_kept_pairs(args) -> tuple[int, int]:
    """The seeded pool sample's pairs that fit, as JSONL in our schema; (pairs, their tokens)."""
    from synpref.data.models import Message
    from synpref.rm.formatting import RewardFormatter
    from synpref.rm.models import load_reward_model

    if not POOL.is_file():
        sys.exit(f"{POOL} not found: the benchmark needs the shared pool")
    with gzip.open(POOL, "rt") as file:
        records = random.Random(0).sample([json.loads(line) for line in file], args.pairs)
    _, tokenizer = load_reward_model(args.model)
    formatter = RewardFormatter(tokenizer, max_length=10**9)
    kept, tokens = [], 0
    for record in records:
        conversation = [Message(**m) for m in record["conversation"]]
        lengths = [len(formatter.encode(conversation, Message(**record[side]))) for side in ("chosen", "rejected")]
        if max(lengths) <= args.max_length:
            kept.append({key: record[key] for key in ("conversation", "chosen", "rejected", "source")})
            tokens += sum(lengths)
    (args.workdir / "kept.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    return len(kept), tokens


def run_child(name: str, args) -> dict:
    command = [sys.executable, __file__, "--child", name, "--workdir", str(args.workdir),
               "--max-length", str(args.max_length), "--batch-size", str(args.batch_size),
               "--lr", str(args.lr), "--dtype", args.dtype, "--packing", args.packing, "--model", args.model]
    if args.no_trl_gradient_checkpointing:
        command.append("--no-trl-gradient-checkpointing")
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    result = json.loads((args.workdir / f"{name}.json").read_text())
    result["child_wall_seconds"] = time.perf_counter() - started
    # The machine is shared: the 1-minute load average shows how busy it was meanwhile.
    result["load_average_before_after"] = [load_before, os.getloadavg()[0]]
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


def run_synpref(args) -> dict:
    from synpref.rm.config import TrainConfig
    from synpref.rm.trainer import train

    output = args.workdir / "synpref-out"
    config = TrainConfig(
        data=str(args.workdir / "kept.jsonl"), output=str(output), model=args.model, max_length=args.max_length,
        batch_size=args.batch_size, learning_rate=args.lr, lr_schedule="linear", warmup_ratio=0.0,
        mixed_precision="bf16" if args.dtype == "bf16" else "no", log_every=1, tensorboard=False, seed=0,
        packing=args.packing,
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    summary = train(config)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    losses = [m["loss"] for m in map(json.loads, (output / "metrics.jsonl").read_text().splitlines()) if m["kind"] == "train"]
    pairs = summary["steps"] * args.batch_size
    return {"pairs": pairs, "steps": summary["steps"], "loop_pairs_per_second": summary["pairs_per_second"],
            "end_to_end_pairs_per_second": pairs / wall, "cpu_seconds": cpu, "losses": losses}


def run_trl(args) -> dict:
    import datasets
    import torch
    from trl import RewardConfig, RewardTrainer

    from synpref.rm.data import encode_pairs, load_pairs
    from synpref.rm.formatting import RewardFormatter
    from synpref.rm.models import load_reward_model

    model, tokenizer = load_reward_model(args.model, seed=0)
    encoded = encode_pairs(load_pairs(args.workdir / "kept.jsonl"), RewardFormatter(tokenizer, args.max_length))
    dataset = datasets.Dataset.from_dict({"chosen_ids": [c for c, _ in encoded], "rejected_ids": [r for _, r in encoded]})
    config = RewardConfig(
        output_dir=str(args.workdir / "trl-out"), per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0, num_train_epochs=1,
        max_length=args.max_length, logging_steps=1, save_strategy="no", report_to="none", seed=0,
        bf16=args.dtype == "bf16", use_cpu=not torch.cuda.is_available(), dataloader_drop_last=True,
        gradient_checkpointing=not args.no_trl_gradient_checkpointing and args.child == "trl",
    )
    trainer = RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    started, cpu_started = time.perf_counter(), time.process_time()
    output = trainer.train()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    pairs = output.global_step * args.batch_size
    return {"pairs": pairs, "steps": output.global_step,
            "loop_pairs_per_second": output.metrics["train_samples_per_second"],
            "end_to_end_pairs_per_second": pairs / wall, "cpu_seconds": cpu, "losses": losses}


def print_results(results: dict, args) -> None:
    names = list(results)
    print(f"\n{'':34}" + "".join(f"{name:>22}" for name in names))
    rows = [
        ("pairs trained", "pairs", "{:.0f}"),
        ("optimizer steps", "steps", "{:.0f}"),
        ("pairs/s (training loop)", "loop_pairs_per_second", "{:.3f}"),
        ("pairs/s (end to end, wall)", "end_to_end_pairs_per_second", "{:.3f}"),
        ("process CPU seconds", "cpu_seconds", "{:.0f}"),
        ("peak RSS (GB)", "peak_rss_gb", "{:.1f}"),
    ]
    if results["synpref"]["peak_gpu_gb"] is not None:
        rows.append(("peak GPU memory allocated (GB)", "peak_gpu_gb", "{:.1f}"))
    for label, key, form in rows:
        print(f"{label:34}" + "".join(f"{form.format(results[name][key]):>22}" for name in names))
    summaries = [
        ("final loss (last step)", lambda losses: losses[-1]),
        ("loss, mean of last 10 steps", lambda losses: sum(losses[-10:]) / len(losses[-10:])),
        ("loss, mean over the epoch", lambda losses: sum(losses) / len(losses)),
    ]
    for label, pick in summaries:
        print(f"{label:34}" + "".join(f"{pick(results[name]['losses']):>22.4f}" for name in names))
    ours = results["synpref"]
    for name in names[1:]:
        theirs = results[name]
        checkpointing = "off" if name == "trl-no-checkpointing" or args.no_trl_gradient_checkpointing else "on (its default)"
        cpu_ratio = (theirs["cpu_seconds"] / theirs["pairs"]) / (ours["cpu_seconds"] / ours["pairs"])
        print(f"RATIO synpref (packing {args.packing}) vs TRL RewardTrainer ({args.dtype}, TRL gradient checkpointing "
              f"{checkpointing}): "
              f"{ours['loop_pairs_per_second'] / theirs['loop_pairs_per_second']:.2f}x pairs/s in the training loop, "
              f"{ours['end_to_end_pairs_per_second'] / theirs['end_to_end_pairs_per_second']:.2f}x end to end, "
              f"{cpu_ratio:.2f}x by CPU time per pair; peak RSS {ours['peak_rss_gb'] / theirs['peak_rss_gb']:.2f}x theirs")


if __name__ == "__main__":
    main()
