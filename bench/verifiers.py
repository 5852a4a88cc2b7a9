"""Verifier throughput on ordinary replies: the sandboxed pool against the old in-process verifiers.

    .venv/bin/python bench/verifiers.py [--items 10000] [--old-commit 6f000e7]

10,000 ordinary replies, as a policy writes them on math data: the demo's sums ("37 + 48 = 85"),
GSM8K-style chains ending in "#### 72", and "\\boxed{}" answers, a quarter of them wrong, verified
in one run, interleaved, best of three:
- in a loop: the verifiers of `--old-commit` (before the sandbox) against today's module, both in
  this process (what the linear-time rewrites cost);
- as the server verifies a request: before, the old `HybridReward.many` (verify and combine) in a
  thread-pool thread of this process;
  now, `HybridReward` handing the batch to its worker processes (time and memory limits). In
  requests of 256 items, of 16, and of 1 with 4 requests in flight.
Prints items/s and the time ratio now / before (> 1: now is slower).
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


def old_module(commit: str, name: str, replace: tuple[str, str] = ("", "")):
    """synpref/reward/NAME.py as it was at `commit`, imported as old_NAME."""
    source = subprocess.run(["git", "show", f"{commit}:synpref/reward/{name}.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / f"old_{name}.py"
    path.write_text(source.replace(*replace))
    spec = importlib.util.spec_from_file_location(f"old_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"old_{name}"] = module  # dataclasses look their module up there
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
    old = old_module(args.old_commit, "verifiers").get_verifier("math")
    # The old HybridReward (verify and combine in the calling thread), on the old verifiers.
    old_combine = old_module(args.old_commit, "combine", ("from synpref.reward.verifiers import", "from old_verifiers import"))
    new = get_verifier("math")
    spec = RewardSpec.model_validate({"default_task": "math", "tasks": {"math": {"verifier": "math", "combine": "rule"}}})
    hybrid = HybridReward(spec)
    hybrid.pool.start()
    hybrid.many([0.0], ["1"], ["1"])  # workers up and warm before any clock runs
    old_hybrid = old_combine.HybridReward(spec)

    def requests(verify_batch, batch: int, callers: int = 1):
        chunks = [items[i : i + batch] for i in range(0, len(items), batch)]
        with ThreadPoolExecutor(callers) as threads:  # as the server's thread pool runs a request's verification
            return [c for part in threads.map(verify_batch, chunks) for c in part]

    def before(chunk):
        return [c.verdict for c in old_hybrid.many([0.0] * len(chunk), [r for r, _ in chunk], [ref for _, ref in chunk])]

    def now(chunk):
        return [c.verdict for c in hybrid.many([0.0] * len(chunk), [r for r, _ in chunk], [ref for _, ref in chunk])]

    old_outcomes = [v.outcome.value for v in before(items)]
    new_outcomes = [new.verify(r, ref).outcome.value for r, ref in items]
    pool_outcomes = [v.outcome.value for v in requests(now, 256)]
    assert old_outcomes == new_outcomes == pool_outcomes, "the verdicts changed"
    rows = {
        "loop in this process": (lambda: [old.verify(r, ref) for r, ref in items], lambda: [new.verify(r, ref) for r, ref in items]),
        "requests of 256": (lambda: requests(before, 256), lambda: requests(now, 256)),
        "requests of 16": (lambda: requests(before, 16), lambda: requests(now, 16)),
        "requests of 1, 4 in flight": (lambda: requests(before, 1, 4), lambda: requests(now, 1, 4)),
    }
    seconds = {name: ([], []) for name in rows}
    for _ in range(3):  # interleaved, best of three: this machine is shared and noisy
        for name, (old_run, new_run) in rows.items():
            seconds[name][0].append(timed(old_run))
            seconds[name][1].append(timed(new_run))
    hybrid.close()
    print(f"{len(items):,} ordinary replies ({sum(o == 'correct' for o in old_outcomes):,} correct), verdicts identical in all paths")
    print(f"{'':<28} {'before items/s':>15} {'now items/s':>12} {'now / before':>13}")
    for name, (old_times, new_times) in seconds.items():
        print(f"{name:<28} {len(items) / min(old_times):>15,.0f} {len(items) / min(new_times):>12,.0f} {min(new_times) / min(old_times):>12.2f}x")


if __name__ == "__main__":
    sys.exit(main())
