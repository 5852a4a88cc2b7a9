"""The reward-model benchmarks, each scored exactly as its authors score it.

`get_benchmark(name)` and `benchmark_names()` give the registered benchmarks;
`synpref.bench.evaluate.evaluate` runs them with one shared scorer.
"""

from synpref.bench.base import Benchmark, BenchResult, Item, benchmark_names, get_benchmark

__all__ = ["BenchResult", "Benchmark", "Item", "benchmark_names", "get_benchmark"]
