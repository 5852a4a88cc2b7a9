"""The registered benchmarks, in the paper's report order, and the published scores to compare a run against."""

from __future__ import annotations

from pathlib import Path

from synpref.errors import SynprefError
from synpref.eval.base import Benchmark
from synpref.eval.judgebench import JudgeBench
from synpref.eval.ppe import PPECorrectness, PPEPreference
from synpref.eval.rewardbench import RewardBench, RewardBench2
from synpref.eval.rmb import RMB
from synpref.eval.rmbench import RMBench
from synpref.registry import Registry

BENCHMARKS: Registry[Benchmark] = Registry("benchmark")
register = BENCHMARKS.register
for _benchmark in (JudgeBench, PPEPreference, PPECorrectness, RewardBench, RewardBench2, RMB, RMBench):
    register(_benchmark)

# The paper's order, used in reports.
REPORT_ORDER = ("rewardbench", "rewardbench2", "ppe-preference", "ppe-correctness", "rmb", "rm-bench", "judgebench")

# Published scores (percent) to compare a run against: Skywork-Reward-V2 (arXiv 2507.01352), Table 1.
PUBLISHED = {
    "Skywork-Reward-V2-Llama-3.1-8B": {
        "rewardbench": 96.4, "rewardbench2": 84.1, "ppe-preference": 77.3, "ppe-correctness": 83.4,
        "rmb": 86.4, "rm-bench": 92.8, "judgebench": 80.0,
    },
}  # fmt: skip


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]()
    except KeyError:
        raise SynprefError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None


def benchmark_names() -> list[str]:
    return sorted(BENCHMARKS, key=lambda name: (REPORT_ORDER + (name,)).index(name))


def benchmark_prompts(name: str, bench_dir: Path | None) -> list[str] | None:
    """First-turn prompts of the registered benchmark `name`, from `bench_dir/<name>/`, for
    decontaminating training data (`synpref ingest`); None when no benchmark has that name."""
    if name not in BENCHMARKS:
        return None
    if bench_dir is None or not (bench_dir / name).is_dir():
        raise SynprefError(f"--decontaminate-against {name}: its files must be in BENCH_DIR/{name}/ (--bench-dir)")
    return get_benchmark(name).prompts(bench_dir / name)
