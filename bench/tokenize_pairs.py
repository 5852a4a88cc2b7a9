"""Tokenizing training pairs: the per-pair path against the batched cache build, side by side.

Same pairs (the first --pairs of the pool), same tokenizer (a fresh copy for each path, so
neither inherits the other's BPE cache), same max length, in one process, the two paths taking
turns on --rounds slices of the pairs (a shared machine's load changes by the minute).
Reported, pairs/s of:
- tokenization alone: `RewardFormatter.encode` per input (the old `encode_pairs`: lists of ids)
  against a `PairEncoder` over ENCODE_ROWS pairs a call (int32 arrays, what the cache writes),
  with the share of the returned ids that were tokenized (the rest were pieces seen before), and
  the ratio of CPU time (all threads: the batched path spreads over the cores, which a loaded
  machine does not lend it); the ids are checked equal, outside the clocks;
- end to end from the file: `load_pairs` + `encode_pairs` (the old training path: every pair
  and every token list in memory) against `build_token_cache` (pairs read as needed, one Arrow
  record batch written at a time), each in its own child process with its peak RSS.
With --memory N [N ...], a child process builds the cache of N pairs (the pool file read again
as often as needed) and reports its peak RSS and rate: memory stays flat as N grows.

    python bench/tokenize_pairs.py [--pairs 5000] [--max-length 1024] [--model smollm2-135m]
                                   [--rounds 5] [--memory 10000 100000]

(Not bench/tokenize.py: a script's folder comes first on sys.path, and a file of that name
would stand in for the standard library's `tokenize`, which torch and transformers import.)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
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


@contextmanager
def clock(totals: list[float]):
    """Add the wall and CPU seconds (all threads) of the block to `totals`."""
    started, cpu = time.perf_counter(), time.process_time()
    yield
    totals[0] += time.perf_counter() - started
    totals[1] += time.process_time() - cpu


def side_by_side(args) -> dict:
    """Both paths over the same pairs, taking turns slice by slice (--rounds), so that a load
    that changes during the run weighs on both alike."""
    from synpref.rm.data import encode_pairs
    from synpref.rm.token_cache import ENCODE_ROWS, PairEncoder

    pairs = list(pool_pairs(args.pairs))
    per_pair, batched = formatter(args.model, args.max_length), formatter(args.model, args.max_length)
    encoder = PairEncoder(batched)  # built before the clocks start, as the tokenizers are loaded
    old_clock, new_clock, old, new = [0.0, 0.0], [0.0, 0.0], [], []
    size = -(-len(pairs) // args.rounds)
    for start in range(0, len(pairs), size):
        part = pairs[start : start + size]
        with clock(old_clock):
            old += encode_pairs(part, per_pair)
        with clock(new_clock):
            for start in range(0, len(part), ENCODE_ROWS):
                new += zip(*encoder(part[start : start + ENCODE_ROWS]))
    assert [(c.tolist(), r.tolist()) for c, r in new] == old, "the batched ids differ from the per-pair ids"
    return {"per_pair": len(pairs) / old_clock[0], "batched": len(pairs) / new_clock[0], "cpu_ratio": old_clock[1] / new_clock[1],
            "tokenized": encoder.tokenized / encoder.returned, "piecewise": encoder.rules is not None}


def child(args) -> dict:
    """One measurement in this (child) process over --pairs pairs: --path old (`load_pairs` +
    `encode_pairs`) or cache (`build_token_cache`) reading one JSONL file of them, or stream
    (`build_token_cache` reading the pool again and again, as many pairs as asked)."""
    import pyarrow

    pyarrow.array([0])  # its first array imports pandas: before the clock, like the tokenizer's loading

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
    parser.add_argument("--rounds", type=int, default=5, help="slices the two paths take turns on")
    parser.add_argument("--memory", type=int, nargs="*", default=[], help="cache builds of these many pairs: peak RSS")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=["old", "cache", "stream"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    load = os.getloadavg()[0]
    rates = side_by_side(args)
    print(f"tokenization alone, {args.pairs:,} pool pairs, max length {args.max_length}: per pair "
          f"{rates['per_pair']:.0f} pairs/s, batched {rates['batched']:.0f} pairs/s, "
          f"ratio {rates['batched'] / rates['per_pair']:.2f}x, by CPU time {rates['cpu_ratio']:.2f}x "
          f"(ids identical; {rates['tokenized']:.0%} of the ids "
          f"tokenized, {'piece by piece' if rates['piecewise'] else 'whole texts'}; {os.cpu_count()} cores, load "
          f"average {load:.1f} before, {os.getloadavg()[0]:.1f} after)")
    old, cache = run_child(args, "old", args.pairs), run_child(args, "cache", args.pairs)
    print(f"from the file: load_pairs + encode_pairs {old['pairs_per_second']:.0f} pairs/s, peak RSS "
          f"{old['peak_rss_mib']:.0f} MiB; cache build {cache['pairs_per_second']:.0f} pairs/s, peak RSS "
          f"{cache['peak_rss_mib']:.0f} MiB; ratio {cache['pairs_per_second'] / old['pairs_per_second']:.2f}x")
    for count in args.memory:
        built = run_child(args, "stream", count)
        print(f"cache build of {count:,} pairs: {built['pairs_per_second']:.0f} pairs/s, peak RSS {built['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
