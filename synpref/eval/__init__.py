"""`synpref eval`: the reward-model benchmarks, each scored exactly as its authors score it.

    base.py         `Benchmark` (load the native files, score by the authors' rules), `Item`, `BenchResult`
    rewardbench.py  RewardBench and RewardBench 2
    ppe.py          PPE human preference and PPE correctness
    rmb.py          RMB (pairwise and best-of-n)
    rmbench.py      RM-Bench (style matrices)
    judgebench.py   JudgeBench
    registry.py     `BENCHMARKS` in report order, `get_benchmark`, the published scores
    evaluate.py     `evaluate`: every benchmark's texts scored once by one shared scorer; results files
    plots.py        PNG plots of a run

Benchmarks never touch models; the scorer (`synpref.rm.scorers.load_scorer`: local, or a server) is handed in.
"""

from synpref.eval.base import Benchmark, BenchResult, Item
from synpref.eval.registry import benchmark_names, get_benchmark

__all__ = ["BenchResult", "Benchmark", "Item", "benchmark_names", "get_benchmark"]
