"""Verifier throughput on ordinary replies: the sandboxed pool against the old in-process verifiers.

    .venv/bin/python bench/verifiers.py [--items 10000] [--old-commit 6f000e7]

10,000 ordinary replies, as a policy writes them on math data: the demo's sums ("37 + 48 = 85"),
GSM8K-style chains ending in "#### 72", and "\\boxed{}" answers, a quarter of them wrong. They
are verified four ways in one run:
- old: the verifiers of `--old-commit` (before the sandbox), in this process, as the server ran them;
- new, in-process: today's verifiers module without the pool (what the linear-time rewrite costs);
- new, pool: `HybridReward` (worker processes with time limits), as the server calls it, in
  requests of 256, of 16, and of 1 item with 4 requests in flight at once.
Prints items/s and each ratio against old (> 1: the new path is slower).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def replies(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(reply, reference) pairs: a third sums, a third GSM8K chains, a third boxed; 25% wrong."""
    rng = random.Random(seed)
    items = []
    for index in range(count):
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        answer = a + b + (rng.randint(1, 90) if rng.random() < 0.25 else 0)
        kind = index % 3
        if kind == 0:
            reply = f"{a} + {b} = {answer}"
        elif kind == 1:
            reply = (f"Natalia sold {a} clips in April and {b} in May.\nAltogether she sold {a} + {b} = <<{a}+{b}={answer}>>{answer} clips.\n"
                     f"#### {answer}")  # fmt: skip
        else:
            reply = f"First add the two numbers: ${a} + {b}$. The sum is $\\boxed{{{answer}}}$."
        items.append((reply, str(a + b)))
    return items


def old_verifiers(commit: str):
    """The verifiers module as it was at `commit`, imported under another name."""
    source = subprocess.run(["git", "show", f"{commit}:synpref/reward/verifiers.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "old_verifiers.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_verifiers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_verifiers"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--old-commit", default="6f000e7", help="the commit whose verifiers are the baseline")
    args = parser.parse_args()
    from synpref.reward.combine import HybridReward
    from synpref.reward.spec import RewardSpec
    from synpref.reward.verifiers import get_verifier

    items = replies(args.items)
    old = old_verifiers(args.old_commit).get_verifier("math")
    new = get_verifier("math")
    spec = RewardSpec.model_validate({"default_task": "math", "tasks": {"math": {"verifier": "math", "combine": "rule"}}})
    hybrid = HybridReward(spec)
    hybrid.pool.start()
    hybrid.many([0.0], ["1"], ["1"])  # workers up and warm before any clock runs

    def pooled(batch: int, callers: int = 1):
        chunks = [items[i : i + batch] for i in range(0, len(items), batch)]

        def call(chunk):
            return hybrid.many([0.0] * len(chunk), [r for r, _ in chunk], [ref for _, ref in chunk])

        with ThreadPoolExecutor(callers) as pool:
            return [c for part in pool.map(call, chunks) for c in part]

    old_outcomes = [old.verify(r, ref).outcome.value for r, ref in items]
    new_outcomes = [new.verify(r, ref).outcome.value for r, ref in items]
    pool_outcomes = [c.verdict.outcome.value for c in pooled(256)]
    assert old_outcomes == new_outcomes == pool_outcomes, "the verdicts changed"
    runs = {
        "old, in-process": lambda: [old.verify(r, ref) for r, ref in items],
        "new, in-process": lambda: [new.verify(r, ref) for r, ref in items],
        "new, pool, requests of 256": lambda: pooled(256),
        "new, pool, requests of 16": lambda: pooled(16),
        "new, pool, requests of 1, 4 in flight": lambda: pooled(1, callers=4),
    }
    seconds = {name: [] for name in runs}
    for _ in range(3):  # interleaved, best of three: this machine is shared and noisy
        for name, run in runs.items():
            seconds[name].append(timed(run))
    hybrid.close()
    baseline = min(seconds["old, in-process"])
    print(f"{len(items):,} ordinary replies ({sum(o == 'correct' for o in old_outcomes):,} correct), verdicts identical in all paths")
    print(f"{'path':<40} {'items/s':>10} {'time vs old':>12}")
    for name, values in seconds.items():
        best = min(values)
        print(f"{name:<40} {len(items) / best:>10,.0f} {best / baseline:>11.2f}x")


if __name__ == "__main__":
    sys.exit(main())
