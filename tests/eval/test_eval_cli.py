"""`synpref eval` end to end: a small real model on fixtures in every native format."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from synpref.eval import benchmark_names
from tests.eval import fixtures

pytest.importorskip("torch")


def test_eval_writes_results_table_and_plots(tmp_path):
    data_dir = fixtures.write_all(tmp_path / "benchmarks")
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "synpref", "eval", "--model", "minilm-l6", "--data-dir", str(data_dir),
         "--output", str(output)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((output / "results.json").read_text())
    assert list(results["benchmarks"]) == benchmark_names()
    assert (results["texts"], results["unique_texts"], results["scoring_saved"]) == (150, 149, 1)
    for name, benchmark in results["benchmarks"].items():
        assert 0.0 <= benchmark["score"] <= 1.0, name
    assert results["benchmarks"]["rm-bench"]["extras"]["matrix"].keys() == {"chat", "math", "code", "safety"}
    table = (output / "results.md").read_text()
    assert "| benchmark | this model | Skywork-Reward-V2-Llama-3.1-8B |" in table
    assert "| rewardbench | " in table and "| 96.4 |" in table
    for plot in ("scores.png", "ppe-best-of-n.png", "rm-bench-matrix.png"):
        assert (output / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_of_minilm_with_default_options_on_long_inputs_and_a_missing_domain(tmp_path):
    """Issue 13, acceptance 2: MiniLM has 512 positions and --max-length defaults to 4,096; the
    fixtures hold responses over 512 tokens in the native layouts of JudgeBench, RM-Bench (its
    math file missing) and RMB. The run completes, reports the missing domain, writes the rest,
    and a base model's random head is seeded, so two runs give the same numbers."""
    data_dir = tmp_path / "benchmarks"
    for name in ("judgebench", "rm-bench", "rmb"):
        fixtures.WRITERS[name](data_dir / name)
    (data_dir / "rm-bench" / "data" / "math_filtered.json").unlink()
    runs = []
    for attempt in range(2):
        output = tmp_path / f"out-{attempt}"
        result = subprocess.run(
            [sys.executable, "-m", "synpref", "eval", "--model", "minilm-l6", "--data-dir", str(data_dir),
             "--output", str(output)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr + result.stdout
        assert "rm-bench is incomplete: no data for math; its other parts are scored" in " ".join(result.stderr.split())
        runs.append(json.loads((output / "results.json").read_text()))
    benchmarks = runs[0]["benchmarks"]
    assert list(benchmarks) == ["rmb", "rm-bench", "judgebench"]
    assert runs[0]["incomplete"] == {"rm-bench": ["math"]}
    assert (benchmarks["rm-bench"]["score"], benchmarks["rm-bench"]["missing"]) == (None, ["math"])
    assert list(benchmarks["rm-bench"]["subsets"]) == ["chat", "code", "safety", "hard", "normal", "easy"]
    assert benchmarks["judgebench"]["items"] == 8
    assert list(benchmarks["judgebench"]["extras"]["other_sets"]) == ["claude-3-5-sonnet-20240620"]
    assert 0.0 <= benchmarks["rmb"]["score"] <= 1.0 and 0.0 <= benchmarks["judgebench"]["score"] <= 1.0
    assert runs[0]["benchmarks"] == runs[1]["benchmarks"]


def test_eval_with_bf16_runs_end_to_end(tmp_path, tiny_llama_dir):
    """--bf16 runs end to end and gives the same shape of results (the dtype itself is checked
    over the server's socket in tests/serve: bf16 scores equal the bf16 scorer's)."""
    data_dir = fixtures.write_all(tmp_path / "benchmarks")
    runs = {}
    for flag in ("--no-bf16", "--bf16"):
        output = tmp_path / flag
        result = subprocess.run(
            [sys.executable, "-m", "synpref", "eval", "--model", str(tiny_llama_dir), "--bench", "rm-bench",
             "--data-dir", str(data_dir), "--output", str(output), flag],
            capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        runs[flag] = json.loads((output / "results.json").read_text())["benchmarks"]["rm-bench"]
    assert runs["--bf16"]["extras"]["matrix"].keys() == runs["--no-bf16"]["extras"]["matrix"].keys()
    assert runs["--bf16"]["subsets"].keys() == runs["--no-bf16"]["subsets"].keys()
