"""Scoring throughput: `RewardScorer` vs the plain loop the `rewardbench` CLI runs, one run.

Both score the same token ids (conversation + chosen of N pool pairs, formatted by the shared
formatter, at most --max-length tokens each) with SmolLM2-135M:

    baseline   fixed batches of 8 in input order, padded to the longest, fp32, no_grad
    synpref    RewardScorer: length-sorted token-budget passes, packed without padding, in --dtype
               (default bf16)
    synpref    the same in fp32 (with --fp32-too): how much is batching, how much bf16
    synpref    the same padded to the longest of each batch (with --compare-padded): what
               packing adds, side by side

Reported: real (non-pad) tokens/s of each and the ratio, by wall clock and by this process's
CPU time (the machine is shared: CPU time is less disturbed by other people's jobs, wall
clock is what a user waits); achieved GFLOP/s as
2 x parameters x real tokens / s, against the fp32 (and bf16) matrix-multiply peak measured in
this run; and how far the scores of each synpref run are from the fp32 baseline.

    python bench/score.py [--pairs 1000] [--max-length 4096] [--dtype bf16] [--fp32-too]
                          [--compare-padded] [--no-baseline]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POOL = ROOT.parent / "shared" / "data" / "pool.jsonl.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--token-budget", type=int, default=16384)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--fp32-too", action="store_true", help="also time RewardScorer in fp32")
    parser.add_argument("--compare-padded", action="store_true", help="also time RewardScorer with packing off")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain loop (the slowest part)")
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()

    import torch

    from synpref.rm.models import load_reward_model
    from synpref.rm.scorer import RewardScorer

    model, tokenizer = load_reward_model(args.model, seed=0)
    parameters = sum(p.numel() for p in model.parameters())
    scorer = RewardScorer(model, tokenizer, max_length=args.max_length, token_budget=args.token_budget)
    encoded = [scorer.formatter.encode(p["conversation"], p["chosen"]) for p in sample_pairs(args.pairs)]
    real_tokens = sum(len(ids) for ids in encoded)
    print(f"{len(encoded)} sequences, {real_tokens:,} real tokens, model {args.model} ({parameters / 1e6:.1f}M parameters), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    peaks = {name: matmul_peak(dtype) for name, dtype in [("fp32", torch.float32), ("bf16", torch.bfloat16)]}
    print(f"matrix-multiply peak: fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s", flush=True)

    runs = {}
    baseline_label = "baseline fp32 batch-8"
    if not args.no_baseline:
        cpu_started = time.process_time()
        baseline_scores, seconds, computed = plain_loop(model, tokenizer.pad_token_id, encoded)
        runs[baseline_label] = (seconds, time.process_time() - cpu_started, baseline_scores)
        report(baseline_label, seconds, real_tokens, computed, parameters, peaks["fp32"])
    # fp32 first: converting the weights to bf16 and back would round them.
    variants = (["fp32"] if args.fp32_too and args.dtype != "fp32" else []) + [args.dtype]
    reference = None
    for name in variants:
        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[name]
        for packing in [False, True] if args.compare_padded else [True]:
            run_scorer = RewardScorer(model.to(dtype), tokenizer, max_length=args.max_length,
                                      token_budget=args.token_budget, packing=packing)
            started, cpu_started = time.perf_counter(), time.process_time()
            scores = run_scorer.score_ids(encoded)
            seconds = time.perf_counter() - started
            label = f"RewardScorer {name}" + ("" if packing else " padded")
            runs[label] = (seconds, time.process_time() - cpu_started, scores)
            computed = padded_tokens(encoded, args.token_budget, packing=packing)
            report(label, seconds, real_tokens, computed, parameters, peaks[name])
            reference_label, reference_scores = (baseline_label, runs[baseline_label][2]) if not args.no_baseline else reference or (label, scores)
            reference = reference or (label, scores)
            differences = [abs(a - b) for a, b in zip(scores, reference_scores)]
            print(f"  scores vs {reference_label}: max |difference| {max(differences):.2e}, mean {sum(differences) / len(differences):.2e}")
    for label, (seconds, cpu_seconds, _) in runs.items():
        for other in [baseline_label, label + " padded"]:
            if other in runs and other != label:
                other_seconds, other_cpu, _ = runs[other]
                print(f"RATIO {label} vs {other}: {other_seconds / seconds:.2f}x tokens/s by wall clock, "
                      f"{other_cpu / cpu_seconds:.2f}x by CPU time")


def sample_pairs(count: int) -> list[dict]:
    """`count` pool pairs drawn with a fixed seed, as Message objects."""
    from synpref.data.models import Message

    if not POOL.is_file():
        sys.exit(f"{POOL} not found: the benchmark needs the shared pool")
    with gzip.open(POOL, "rt") as file:
        records = [json.loads(line) for line in file]
    records = random.Random(0).sample(records, count)
    return [
        {"conversation": [Message(**m) for m in r["conversation"]], "chosen": Message(**r["chosen"])}
        for r in records
    ]


def plain_loop(model, pad_token_id: int, encoded: list[list[int]]) -> tuple[list[float], float, int]:
    """What `rewardbench` does: batches of 8 in input order, right-padded to the longest."""
    import torch

    from synpref.rm.scorer import pad_batch

    model = model.to(torch.float32).eval()
    scores, computed = [], 0
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(encoded), 8):
            input_ids, attention_mask = pad_batch(encoded[start : start + 8], pad_token_id)
            computed += input_ids.numel()
            scores += model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].tolist()
    return scores, time.perf_counter() - started, computed


def padded_tokens(encoded: list[list[int]], token_budget: int, *, packing: bool) -> int:
    """Tokens computed, padding included: rows x width of every forward pass."""
    from synpref.rm.packing import place, plan_passes
    from synpref.rm.scorer import token_budget_batches

    lengths = [len(ids) for ids in encoded]
    if not packing:
        return sum(len(batch) * lengths[batch[0]] for batch in token_budget_batches(lengths, token_budget))
    total = 0
    for batch in plan_passes(lengths, token_budget):
        width = lengths[batch[0]]
        total += place([lengths[i] for i in batch], width)[1] * width
    return total


def matmul_peak(dtype, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a square matrix multiply, the best of a few timed runs."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def report(label: str, seconds: float, real_tokens: int, computed: int, parameters: int, peak: float) -> None:
    gflops = 2 * parameters * real_tokens / seconds / 1e9
    print(
        f"{label}: {seconds:.1f} s, {real_tokens / seconds:,.0f} real tokens/s, "
        f"{1 - real_tokens / computed:.0%} of computed tokens are padding, "
        f"{gflops:.1f} GFLOP/s achieved = {gflops / peak:.0%} of the measured matmul peak in its dtype "
        f"(load average now {os.getloadavg()[0]:.1f}: the machine is shared)",
        flush=True,
    )


if __name__ == "__main__":
    main()
