"""Scoring, training (vs TRL) and serving on a GPU, in one run of under 8 minutes (issue 18).

The model is a random-init reward model of the Qwen3-0.6B shape (0.49 B parameters, the smallest
Skywork-Reward-V2 backbone) with the SmolLM2 tokenizer: speed does not depend on the weights, and
no weights need to travel (method and the figures to beat: ../shared/GPU.md). Every figure is
printed with its share of the bf16 matrix-multiply peak measured in the same run, as
2 x parameters x real tokens per second / peak.

    1. peak       the best of a few 8,192^2 bf16 matrix multiplies
    2. scoring    RewardScorer (packed, default token budget and 65,536), on --conversations pool
                  conversations (conversation + chosen); pairs scored as trees (shared prompt once)
    3. training   bench/train.py: synpref vs TRL RewardTrainer with its defaults and without
                  gradient checkpointing, bf16, pool pairs <= --train-max-length, batch 16
    4. serving    `python -m synpref serve --bf16` under bench/serve_load.py's closed loop
                  (pool-length and short conversations, --clients connections)

Each part runs in its own process under its own timeout, so one hang leaves the others; results
go to --out as JSON lines, PYTHONUNBUFFERED. Packages the GPU machine lacks come as wheels
(--wheels DIR, installed into a temporary folder put first on PYTHONPATH).

    python bench/gpu.py [--wheels WHEELS] [--out gpu-results.jsonl]
    python bench/gpu.py --smoke      # tiny model on CPU, ~2 minutes: the script runs end to end
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POOL = ROOT.parent / "shared" / "data" / "pool.jsonl.gz"
# Part time limits (seconds), summing to under 8 minutes with the model build.
LIMITS = {"peak": 30, "scoring": 90, "training": 240, "serving": 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny model and sizes on CPU: checks that every part runs")
    parser.add_argument("--out", type=Path, default=Path("gpu-results.jsonl"))
    parser.add_argument("--wheels", type=Path, help="folder of wheels to install into a temporary site folder first")
    parser.add_argument("--conversations", type=int, default=4000)
    parser.add_argument("--train-pairs", type=int, default=1600, help="pool pairs drawn; those that fit are trained on")
    parser.add_argument("--train-max-length", type=int, default=1024)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--serve-seconds", type=float, default=20)
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.conversations, args.train_pairs, args.train_max_length = 48, 40, 256
        args.clients, args.serve_seconds = 8, 4
    if args.part:
        result = {"peak": part_peak, "scoring": part_scoring, "serving": part_serving}[args.part](args)
        print("RESULT " + json.dumps(result), flush=True)
        return
    run_all(args)


def run_all(args) -> None:
    started = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory(prefix="synpref-gpu-") as folder:
        if args.wheels:
            site = Path(folder) / "site"
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target",
                            str(site), *map(str, sorted(args.wheels.glob("*.whl")))], check=True)
            env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
        args.model_dir = Path(folder) / "model"
        parameters = build_model(args.model_dir, smoke=args.smoke)
        results = {"parameters": parameters}
        record(args.out, {"part": "model", "parameters": parameters, "smoke": args.smoke})
        for part in ("peak", "scoring", "training", "serving"):
            results[part] = run_part(part, args, env, results)
            record(args.out, {"part": part, **(results[part] or {"failed": True})})
    print(f"done in {time.perf_counter() - started:.0f} s; results in {args.out}")


def run_part(part: str, args, env: dict, results: dict) -> dict | None:
    # A smoke run checks that each part executes, on a CPU that may be shared: time is no concern.
    limit = LIMITS[part] * (20 if args.smoke else 1)
    if part == "training":
        command = [sys.executable, str(ROOT / "bench" / "train.py"), "--model", str(args.model_dir),
                   "--pairs", str(args.train_pairs), "--max-length", str(args.train_max_length),
                   "--batch-size", "4" if args.smoke else "16", "--trl-no-checkpointing-too",
                   "--json-out", str(args.model_dir.parent / "train.json")]
    else:
        command = [sys.executable, __file__, "--part", part, "--model-dir", str(args.model_dir),
                   "--conversations", str(args.conversations), "--clients", str(args.clients),
                   "--serve-seconds", str(args.serve_seconds)] + (["--smoke"] if args.smoke else [])
    print(f"== {part} (limit {limit} s)", flush=True)
    try:
        output = subprocess.run(command, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        print(f"{part}: timed out after {limit} s", flush=True)
        return None
    if output.returncode != 0:
        print(f"{part}: failed\n{output.stdout[-2000:]}\n{output.stderr[-4000:]}", flush=True)
        return None
    if part == "training":
        print(output.stdout[output.stdout.find("\n\n"):], flush=True)
        result = json.loads((args.model_dir.parent / "train.json").read_text())
        summary = training_summary(result, results, args)
    else:
        summary = json.loads(output.stdout.split("RESULT ", 1)[1])
        summary = with_peak_share(summary, results)
    for key, value in summary.items():
        print(f"  {part} {key}: {value}", flush=True)
    return summary


def build_model(directory: Path, *, smoke: bool) -> int:
    """A random-init Qwen3-0.6B-shape reward model with SmolLM2's tokenizer, saved as a model directory."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForSequenceClassification

    from synpref.rm.models import convert_smollm2, fix_pad_token

    tokenizer = AutoTokenizer.from_pretrained(convert_smollm2())
    fix_pad_token(tokenizer)
    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16) if smoke else dict(
        hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128)
    config = Qwen3Config(**shape, num_labels=1, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False, max_position_embeddings=8192)
    torch.manual_seed(0)
    model = Qwen3ForSequenceClassification(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def part_peak(args) -> dict:
    import torch

    device, size = device_name(), 256 if args.smoke else 8192
    a = torch.randn(size, size, dtype=torch.bfloat16, device=device)
    b = torch.randn(size, size, dtype=torch.bfloat16, device=device)
    best = float("inf")
    for _ in range(3 if args.smoke else 20):
        synchronize()
        started = time.perf_counter()
        torch.matmul(a, b)
        synchronize()
        best = min(best, time.perf_counter() - started)
    return {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "bf16_matmul_tflops": 2 * size**3 / best / 1e12}


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def pool_records(count: int) -> list[dict]:
    import random

    with gzip.open(POOL, "rt") as file:
        records = [json.loads(line) for line in file]
    return random.Random(0).sample(records, count)


def part_scoring(args) -> dict:
    import torch

    from synpref.data.models import Message, PreferencePair
    from synpref.rm.scorer import RewardScorer

    records = [{"conversation": [Message(**m) for m in r["conversation"]], "chosen": Message(**r["chosen"]),
                "rejected": Message(**r["rejected"])} for r in pool_records(args.conversations)]
    result = {}
    for budget in (None, 65536):
        scorer = RewardScorer.from_pretrained(str(args.model_dir), dtype=torch.bfloat16, token_budget=budget,
                                              max_length=4096, show_progress=False)
        encoded = [scorer.formatter.encode(r["conversation"], r["chosen"]) for r in records]
        scorer.score_ids(encoded[:64])  # warm-up
        seconds = timed(partial(scorer.score_ids, encoded))
        tokens = sum(map(len, encoded))
        result[f"tokens_per_s_budget_{scorer.token_budget}"] = tokens / seconds
    result["real_tokens"] = tokens
    pairs = [PreferencePair(**r, source="pool") for r in records[: len(records) // 2]]
    pair_tokens = sum(len(scorer.formatter.encode(p.conversation, p.chosen)) + len(scorer.formatter.encode(p.conversation, p.rejected))
                      for p in pairs)
    seconds = timed(lambda: scorer.score_pairs(pairs))
    # Tokens of chosen + rejected as separate inputs per second (the shared prompt is computed once).
    result["pairs_per_s"] = len(pairs) / seconds
    result["pair_tokens_per_s"] = pair_tokens / seconds
    return result


def timed(work) -> float:
    synchronize()
    started = time.perf_counter()
    work()
    synchronize()
    return time.perf_counter() - started


def part_serving(args) -> dict:
    """`python -m synpref serve` under serve_load's closed loop, for pool-length and short inputs."""
    import importlib.util
    import socket

    import httpx

    spec = importlib.util.spec_from_file_location("serve_load", ROOT / "bench" / "serve_load.py")
    serve_load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve_load)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "synpref", "serve", "--model", str(args.model_dir), "--port", str(port),
               "--max-length", "512", "--bf16"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + (600 if args.smoke else 120)
    result = {}
    try:
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start: {' '.join(command)}")
            time.sleep(0.5)
        limit = 400 if args.smoke else 2000
        for profile, data in (("pool", serve_load.conversations(limit)), ("short", serve_load.short_conversations(limit))):
            with tempfile.TemporaryDirectory() as folder:
                load = serve_load.closed_loop(url, data, args.clients, args.serve_seconds, Path(folder))
            result[f"{profile}_requests_per_s"] = load["throughput"]
            result[f"{profile}_p50_ms"], result[f"{profile}_p99_ms"] = load["p50_ms"], load["p99_ms"]
            result[f"{profile}_failed"] = load["failed"]
            result[f"{profile}_mean_tokens"] = mean_tokens(args.model_dir, data)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return result


def mean_tokens(model_dir: Path, conversations: list) -> float:
    from transformers import AutoTokenizer

    from synpref.rm.formatting import RewardFormatter

    formatter = RewardFormatter(AutoTokenizer.from_pretrained(model_dir), max_length=512)
    return sum(len(formatter.encode_messages(c)) for c in conversations) / len(conversations)


def with_peak_share(summary: dict, results: dict) -> dict:
    """Adds each throughput's share of the measured bf16 peak (2 x parameters FLOPs per token)."""
    peak = (results.get("peak") or {}).get("bf16_matmul_tflops")
    if not peak:
        return summary
    flops_per_token = 2 * results["parameters"]
    shares = {}
    for key, value in summary.items():
        if key.startswith("tokens_per_s") or key == "pair_tokens_per_s":
            shares[f"{key}_share_of_peak"] = value * flops_per_token / (peak * 1e12)
        elif key.endswith("_requests_per_s"):
            tokens = summary[key.replace("_requests_per_s", "_mean_tokens")]
            shares[f"{key}_share_of_peak"] = value * tokens * flops_per_token / (peak * 1e12)
    return summary | shares


def training_summary(result: dict, results: dict, args) -> dict:
    """Pairs/s, ratios and memory of synpref vs TRL; the share of peak counts forward and backward
    (6 x parameters FLOPs per real token)."""
    ours = result["synpref"]
    summary = {"kept_pairs": result["kept_pairs"], "synpref_pairs_per_s": ours["loop_pairs_per_second"],
               "synpref_peak_gpu_gb": ours["peak_gpu_gb"], "synpref_peak_rss_gb": ours["peak_rss_gb"]}
    for name in ("trl", "trl-no-checkpointing"):
        theirs = result[name]
        summary[f"{name}_pairs_per_s"] = theirs["loop_pairs_per_second"]
        summary[f"ratio_vs_{name}"] = ours["loop_pairs_per_second"] / theirs["loop_pairs_per_second"]
        summary[f"{name}_peak_gpu_gb"] = theirs["peak_gpu_gb"]
    peak = (results.get("peak") or {}).get("bf16_matmul_tflops")
    tokens_per_pair = result.get("tokens_per_pair")
    if peak and tokens_per_pair:
        tokens_per_s = ours["loop_pairs_per_second"] * tokens_per_pair
        summary["synpref_share_of_peak"] = tokens_per_s * 6 * results["parameters"] / (peak * 1e12)
    return summary


def record(path: Path, entry: dict) -> None:
    with open(path, "a") as file:
        file.write(json.dumps(entry) + "\n")


if __name__ == "__main__":
    main()
