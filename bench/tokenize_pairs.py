"""Tokenizing training pairs: the per-pair path against the batched cache build, side by side.

Same pairs (the first --pairs of the pool), same tokenizer (a fresh copy for each path, so
neither inherits the other's BPE cache), same max length. Reported, pairs/s of:
- tokenization alone: `RewardFormatter.encode` per input (the old `encode_pairs`) against
  `encode_pair_batch` over ENCODE_ROWS pairs per tokenizer call; the ids are checked equal;
- end to end from the file: `load_pairs` + `encode_pairs` (the old training path: every pair
  and every token list in memory) against `build_token_cache` (pairs read as needed, one Arrow
  record batch written at a time), each in its own child process with its peak RSS.
With --memory N [N ...], a child process builds the cache of N pairs (the pool file read again
as often as needed) and reports its peak RSS and rate: memory stays flat as N grows.

    python bench/tokenize_pairs.py [--pairs 5000] [--max-length 1024] [--model smollm2-135m]
                                   [--memory 10000 100000]

(Not bench/tokenize.py: a script's folder comes first on sys.path, and a file of that name
would stand in for the standard library's `tokenize`, which torch and transformers import.)
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POOL = Path(__file__).resolve().parents[2] / "shared" / "data" / "pool.jsonl.gz"


def formatter(model: str, max_length: int):
    from transformers import AutoTokenizer

    from synpref.rm.formatting import RewardFormatter
    from synpref.rm.models import fix_pad_token, resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model))
    fix_pad_token(tokenizer)
    return RewardFormatter(tokenizer, max_length)


def pool_pairs(count: int):
    """The first `count` pool pairs, the pool read again from the start as often as needed."""
    from synpref.rm.data import iter_pairs

    return itertools.islice(itertools.chain.from_iterable(iter_pairs(str(POOL)) for _ in itertools.count()), count)


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM: getrusage's maxrss would carry the parent's peak over
    fork and exec)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def side_by_side(args) -> dict:
    from synpref.rm.data import encode_pairs
    from synpref.rm.token_cache import ENCODE_ROWS, encode_pair_batch

    pairs = list(pool_pairs(args.pairs))
    per_pair, batched = formatter(args.model, args.max_length), formatter(args.model, args.max_length)
    started = time.perf_counter()
    old = encode_pairs(pairs, per_pair)
    old_seconds = time.perf_counter() - started
    started = time.perf_counter()
    new = []
    for start in range(0, len(pairs), ENCODE_ROWS):
        chosen, rejected = encode_pair_batch(batched, pairs[start : start + ENCODE_ROWS])
        new += zip(chosen, rejected)
    new_seconds = time.perf_counter() - started
    assert new == old, "the batched ids differ from the per-pair ids"
    return {"per_pair": len(pairs) / old_seconds, "batched": len(pairs) / new_seconds}


def child(args) -> dict:
    """One measurement in this (child) process over --pairs pairs: --path old (`load_pairs` +
    `encode_pairs`) or cache (`build_token_cache`) reading one JSONL file of them, or stream
    (`build_token_cache` reading the pool again and again, as many pairs as asked)."""
    import pyarrow  # noqa: F401  (imported, like the tokenizer loaded, before the clock starts)

    from synpref.rm.token_cache import (
        ENCODE_ROWS,
        TokenCache,
        _chunked,
        build_token_cache,
        pair_chunks,
    )

    tokenizing = formatter(args.model, args.max_length)
    with tempfile.TemporaryDirectory() as directory:
        sample = Path(directory) / "pairs.jsonl"
        if args.path != "stream":
            with open(sample, "w") as file:  # line by line: the sample is never in memory whole
                file.writelines(p.model_dump_json() + "\n" for p in pool_pairs(args.pairs))
        started = time.perf_counter()
        if args.path == "old":
            from synpref.rm.data import encode_pairs, load_pairs

            encode_pairs(load_pairs(str(sample)), tokenizing)
        else:
            chunks = pair_chunks(str(sample)) if args.path == "cache" else _chunked(pool_pairs(args.pairs), ENCODE_ROWS)
            path = build_token_cache(Path(directory) / "pairs.arrow", chunks, tokenizing)
            assert len(TokenCache(path)) == args.pairs
        seconds = time.perf_counter() - started
    return {"pairs": args.pairs, "pairs_per_second": args.pairs / seconds, "peak_rss_mib": peak_rss_mib()}


def run_child(args, path: str, pairs: int) -> dict:
    command = [sys.executable, __file__, "--child", "--path", path, "--pairs", str(pairs),
               "--max-length", str(args.max_length), "--model", args.model]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--memory", type=int, nargs="*", default=[], help="cache builds of these many pairs: peak RSS")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=["old", "cache", "stream"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    rates = side_by_side(args)
    print(f"tokenization alone, {args.pairs:,} pool pairs, max length {args.max_length}: per pair "
          f"{rates['per_pair']:.0f} pairs/s, batched {rates['batched']:.0f} pairs/s, "
          f"ratio {rates['batched'] / rates['per_pair']:.2f}x (ids identical)")
    old, cache = run_child(args, "old", args.pairs), run_child(args, "cache", args.pairs)
    print(f"from the file: load_pairs + encode_pairs {old['pairs_per_second']:.0f} pairs/s, peak RSS "
          f"{old['peak_rss_mib']:.0f} MiB; cache build {cache['pairs_per_second']:.0f} pairs/s, peak RSS "
          f"{cache['peak_rss_mib']:.0f} MiB; ratio {cache['pairs_per_second'] / old['pairs_per_second']:.2f}x")
    for count in args.memory:
        built = run_child(args, "stream", count)
        print(f"cache build of {count:,} pairs: {built['pairs_per_second']:.0f} pairs/s, peak RSS {built['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
