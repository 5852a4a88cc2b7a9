"""The curation loop at 1k, 100k and 1M pairs: wall time and peak RSS of every stage.

For each N, a pool of N pairs is built from the shared pool (each pool pair replicated with a
variant tag in its first user message, as bench/prep.py does; no repeats) and the shared gold
set (842 pairs) is its gold. Then, each stage a `synpref` command in a child process:

    ingest    the pool (and the gold, not measured)
    stage1    2 iterations: train on silver (seed: 1,000 pool pairs), score gold, embed the pool,
              index it (IVF-PQ past 50,000 pairs), retrieve for the gold pairs the RM gets wrong
    stage2    gold RM + best RM over every remaining pool pair, the rule, decisions.parquet
    export    curated / flipped / union as Parquet
    train     the curated set tokenized into the token cache + 20 optimizer steps of a tiny
              randomly initialised Llama (SmolLM2's tokenizer, max length 512)

So that the machinery is measured and not a model, the loop's reward models are the length
baseline (`rm.model: length-baseline`: the longer response wins, nothing to train) and the
embedder is `hashing` (feature hashing, 256 dims); both cost well under a millisecond a pair. No judge.
Peak RSS is summed over the child's process tree, sampled every 0.1 s.

Printed per stage: time and peak RSS at each N, and the ratios the scale rule asks for
(RSS at the largest N / at the middle one, RSS growth over the smallest, time ratio).

    python bench/scale.py [--pairs 1000 100000 1000000] [--workdir /tmp/synpref-scale]
                          [--stages train] [--json results.json]

`--stages` reruns only those stages on the workspaces an earlier run left in --workdir (their
other figures are read back from --json).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prep import run_measured  # noqa: E402  (bench/prep.py: one child, its tree's peak RSS)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
STAGES = ("ingest", "stage1", "stage2", "export", "train")
CURATE = {
    "embedder": "hashing",
    "rm": {"model": "length-baseline"},
    "stage1": {"iterations": 2, "seed_size": 1000},
    "stage2": {"rule": "gold_and_best"},
    "shard_size": 4096,
    # Past 50,000 pool pairs the compressed IVF-PQ index (exact search below): 100k and 1M then
    # take the same path, so their times compare; the default switches at 200,000.
    "exact_index_max": 50_000,
}


def build_pool(pairs: int, out: Path) -> int:
    """`pairs` pool records: the shared pool, replicated with a variant tag (every pair distinct)."""
    pool = [json.loads(line) for line in gzip.open(SHARED / "pool.jsonl.gz", "rt")]
    with open(out, "w") as file:
        for index in range(pairs):
            record = pool[index % len(pool)]
            variant = index // len(pool)
            first = record["conversation"][0]
            tagged = {**record, "id": f"{record['id']}#{variant}",
                      "conversation": [{**first, "content": f"[variant {variant}] {first['content']}"}, *record["conversation"][1:]]}
            file.write(json.dumps(tagged) + "\n")
    return pairs


def tiny_llama(directory: Path) -> Path:
    """A 2-layer, 32-wide Llama with SmolLM2's tokenizer, randomly initialised (made once)."""
    if (directory / "config.json").is_file():
        return directory
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from synpref.rm.models import fix_pad_token, resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, num_labels=1)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    fix_pad_token(tokenizer, model)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def run_size(pairs: int, workdir: Path, model: Path, stages=STAGES, earlier: dict | None = None) -> dict[str, dict]:
    root = workdir / f"n{pairs}"
    workspace, pool_file = root / "ws", root / "pool.jsonl"
    synpref = [sys.executable, "-m", "synpref"]
    if "ingest" in stages:
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        build_pool(pairs, pool_file)
        setup = run_measured([*synpref, "init", str(workspace)])
        gold = run_measured([*synpref, "ingest", str(SHARED / "gold.jsonl.gz"), "-w", str(workspace), "--split", "gold", "--workers", "1"])
        for step in (setup, gold):
            if step["rc"]:
                raise SystemExit(step["output"])
        (workspace / "curate.yaml").write_text(json.dumps(CURATE))
    commands = {
        "ingest": [*synpref, "ingest", str(pool_file), "-w", str(workspace), "--split", "pool"],
        "stage1": [*synpref, "curate", "stage1", "-w", str(workspace)],
        "stage2": [*synpref, "curate", "stage2", "-w", str(workspace)],
        "export": [*synpref, "curate", "export", "-w", str(workspace), "--format", "parquet", "--output", str(workspace / "exports" / "curated")],
        "train": [*synpref, "train", "--data", str(workspace / "exports" / "curated" / "curated.parquet"), "--output", str(root / "rm"),
                  "--model", str(model), "--max-steps", "20", "--batch-size", "8", "--max-length", "512", "--log-every", "10",
                  "--token-cache", str(root / "token-cache")],
    }
    results = dict(earlier or {})
    for stage in stages:
        if stage == "train":
            shutil.rmtree(root / "rm", ignore_errors=True)
            shutil.rmtree(root / "token-cache", ignore_errors=True)
        measured = run_measured(commands[stage])
        if measured["rc"]:
            raise SystemExit(f"{stage} at {pairs:,} pairs failed:\n{measured['output'][-4000:]}")
        results[stage] = {"seconds": round(measured["seconds"], 1), "peak_rss_gb": round(measured["peak_rss_gb"], 3)}
        print(f"  {pairs:>9,} {stage:<7} {measured['seconds']:8.1f} s  {measured['peak_rss_gb'] * 1024:7.0f} MiB", flush=True)
    results["curated_pairs"] = json.loads((workspace / "runs" / "stage2" / "summary.json").read_text())
    results["disk_gb"] = round(sum(p.stat().st_size for p in workspace.rglob("*") if p.is_file()) / 2**30, 3)
    pool_file.unlink(missing_ok=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/synpref-scale"))
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    args = parser.parse_args()
    earlier = {}
    if args.json and args.json.is_file():
        earlier = {int(n): figures for n, figures in json.loads(args.json.read_text()).items()}
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = tiny_llama(args.workdir / "tiny-llama")
    print(f"loop RMs: length baseline; embedder: hashing (256 dims); training: tiny Llama {model}")
    results = {}
    for pairs in args.pairs:
        started = time.perf_counter()
        results[pairs] = run_size(pairs, args.workdir, model, args.stages, earlier.get(pairs))
        print(f"  {pairs:>9,} pairs: {time.perf_counter() - started:.0f} s in all, workspace {results[pairs]['disk_gb']} GB", flush=True)
    results = {**earlier, **results}
    sizes = sorted(results)
    print("\n| stage | " + " | ".join(f"{n:,}: s, MiB" for n in sizes) + " | RSS largest/middle | RSS growth over smallest | time largest/middle |")
    print("|---|" + "---|" * (len(sizes) + 3))
    for stage in STAGES:
        cells = [f"{results[n][stage]['seconds']:.1f}, {results[n][stage]['peak_rss_gb'] * 1024:.0f}" for n in sizes]
        ratios = ["-", "-", "-"]
        if len(sizes) >= 3:
            small, middle, large = (results[n][stage] for n in sizes[-3:])
            ratios = [f"{large['peak_rss_gb'] / middle['peak_rss_gb']:.2f}x",
                      f"{(large['peak_rss_gb'] - small['peak_rss_gb']) * 1024:+.0f} MiB",
                      f"{large['seconds'] / max(middle['seconds'], 1e-9):.1f}x"]
        print(f"| {stage} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
