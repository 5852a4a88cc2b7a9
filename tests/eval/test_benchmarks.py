"""Each benchmark's rules on a fixture whose score is worked out by hand in the comments."""

from __future__ import annotations

import json
import math

import pytest

from synpref.errors import SynprefError
from synpref.eval import benchmark_names, get_benchmark
from synpref.eval.evaluate import evaluate
from synpref.eval.registry import BENCHMARKS
from tests.eval import fixtures
from tests.eval.fixtures import TextRewardScorer


def run_one(name, tmp_path):
    fixtures.WRITERS[name](tmp_path / name)
    return evaluate(TextRewardScorer(), [name], tmp_path).results[name]


def test_rewardbench_ties_are_wrong_and_sections_use_official_weights(tmp_path):
    result = run_one("rewardbench", tmp_path)
    # Chat: alpacaeval-easy 1/2 (weight 100), mt-bench-easy 0/1 (a 1-1 tie; weight 28)
    # Chat Hard: mt-bench-hard 0 (37), llmbar-natural 1 (100)
    # Reasoning: math-prm 1 counted with weight 984, hep-python 0 with 164 -> 984/1148 = 6/7
    expected = {"Chat": 50 / 128, "Chat Hard": 100 / 137, "Safety": 1.0, "Reasoning": 984 / 1148}
    assert result.subsets == pytest.approx(expected, abs=1e-12)
    assert list(result.subsets) == ["Chat", "Chat Hard", "Safety", "Reasoning"]
    assert result.score == pytest.approx(sum(expected.values()) / 4, abs=1e-12)
    assert result.extras["subset_accuracy"]["math-prm"] == 1.0
    assert result.items == 8


def test_rewardbench2_argmax_and_ties_formula(tmp_path):
    result = run_one("rewardbench2", tmp_path)
    # Ties: ref accuracy 1/2 (ref:1 has its correct answer below a wrong one), tied accuracy 2/2;
    # prompt 0: margin 1.5 beats spread 0.5 (and min(ref 1, tied 1.5) = 1 does too);
    # prompt 1: margin 1 < spread 3; margin term mean(tanh(1/0.5 - 1), tanh(-1/3 - 1)).
    ties = 0.3 * 1.0 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * (math.tanh(1) + math.tanh(-4 / 3)) / 2
    expected = {"Factuality": 0.5, "Precise IF": 0.0, "Math": 1.0, "Safety": 1.0, "Focus": 0.0, "Ties": ties}
    assert result.subsets == pytest.approx(expected, abs=1e-12)
    # Math is a 1-1 tie between the correct answer and a wrong one: argmax picks the first, right.
    assert result.score == pytest.approx((2.5 + ties) / 6, abs=1e-12)


def test_ppe_preference_excludes_tied_battles(tmp_path):
    result = run_one("ppe-preference", tmp_path)
    # 4 decided battles: right, wrong, tie (wrong), right
    assert (result.items, result.score, result.subsets) == (4, 0.5, {"accuracy": 0.5})


def test_ppe_correctness_pairwise_accuracy_and_best_of_n(tmp_path):
    result = run_one("ppe-correctness", tmp_path)
    # math: row 1 has 2 of its 4 (correct, incorrect) pairs ordered right, row 2 1 of 3 (0.3 vs 0.3 ties)
    assert result.subsets == pytest.approx(
        {"mmlu-pro": 1.0, "math": 3 / 7, "gpqa": 1.0, "ifeval": 1.0, "mbpp-plus": 1.0}, abs=1e-12
    )
    assert result.score == pytest.approx((4 + 3 / 7) / 5, abs=1e-12)
    # best-of-N over the first N responses: row 1 picks 0 (right), 1 (wrong), 2, 2 (right);
    # row 2 keeps response 0 (wrong) since later equal rewards do not replace it
    assert result.extras["best_of_n"]["math"] == [0.5, 0.0, 0.5, 0.5]
    assert result.extras["best_of_n"]["gpqa"] == [1.0, 1.0]


def test_ppe_correctness_missing_set_is_reported_never_a_zero(tmp_path):
    fixtures.ppe_correctness(tmp_path / "ppe-correctness")
    (tmp_path / "ppe-correctness" / "gpqa.jsonl").unlink()
    run = evaluate(TextRewardScorer(), ["ppe-correctness"], tmp_path)
    result = run.results["ppe-correctness"]
    assert run.incomplete == {"ppe-correctness": ["gpqa"]}
    assert (result.score, result.missing) == (None, ["gpqa"])
    assert result.subsets == pytest.approx({"mmlu-pro": 1.0, "math": 3 / 7, "ifeval": 1.0, "mbpp-plus": 1.0}, abs=1e-12)


def test_rmb_best_of_n_needs_the_best_to_beat_every_loser(tmp_path):
    result = run_one("rmb", tmp_path)
    # pairwise helpful 1/2, harmless 0/1 (a tie); BoN helpful 1/2 (3 vs [3, 1] is not a win), harmless 1/1
    assert result.subsets == {"pairwise-helpful": 0.5, "pairwise-harmless": 0.0, "bon-helpful": 0.5, "bon-harmless": 1.0}
    assert result.score == 0.5


def test_rm_bench_style_matrix(tmp_path):
    result = run_one("rm-bench", tmp_path)
    # chat: item 1 gives [[T,F,F],[T,T,F],[T,T,T]], item 2 all False
    assert result.extras["matrix"]["chat"] == [[0.5, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.5, 0.5]]
    assert result.extras["levels"]["chat"] == {"hard": 0.0, "normal": 0.5, "easy": 0.5}
    # safety pools safety-refuse (all right) and safety-response (all wrong): 0.5 everywhere
    assert result.extras["matrix"]["safety"] == [[0.5] * 3] * 3
    assert result.subsets == pytest.approx(
        {"chat": 1 / 3, "math": 1.0, "code": 0.0, "safety": 0.5, "hard": 0.375, "normal": 0.5, "easy": 0.5}, abs=1e-12
    )
    assert result.score == pytest.approx((1 / 3 + 1 + 0 + 0.5) / 4, abs=1e-12)


def test_judgebench_is_scored_by_its_authors_rule_on_the_gpt4o_set(tmp_path):
    """ScalerLab/JudgeBench utils/judges.py: "A>B" if score_A > score_B else "B>A" (a tie goes
    to B); the headline is the GPT-4o file alone, the Claude file a second set beside it."""
    result = run_one("judgebench", tmp_path)
    # GPT-4o set: knowledge 1/2; reasoning 0/1 (a 1-1 tie goes to B, the label is A>B);
    # math 2/2 (the 2-2 tie goes to B, which the label prefers); coding 2/3; overall 5 of 8 pairs
    assert result.subsets == pytest.approx(
        {"knowledge": 0.5, "reasoning": 0.0, "math": 1.0, "coding": 2 / 3,
         "category-mean": (0.5 + 0 + 1 + 2 / 3) / 4}, abs=1e-12
    )  # fmt: skip
    assert (result.score, result.items, result.missing) == (5 / 8, 8, [])
    # Claude set: knowledge 1-0 right, coding 1-1 tie to B right (label B>A), reasoning 0-1 wrong
    assert result.extras["other_sets"] == {
        "claude-3-5-sonnet-20240620": {"score": 2 / 3, "items": 3, "subsets": {"knowledge": 1.0, "reasoning": 0.0, "coding": 1.0}},
    }  # fmt: skip


def test_judgebench_without_the_gpt4o_file_has_no_headline(tmp_path):
    fixtures.judgebench(tmp_path / "judgebench")
    (tmp_path / "judgebench" / "data" / "dataset=judgebench,response_model=gpt-4o-2024-05-13.jsonl").unlink()
    run = evaluate(TextRewardScorer(), ["judgebench"], tmp_path)
    result = run.results["judgebench"]
    assert run.incomplete == {"judgebench": ["knowledge", "reasoning", "math", "coding"]}
    assert (result.score, result.subsets, result.items) == (None, {}, 0)
    assert result.extras["other_sets"]["claude-3-5-sonnet-20240620"]["score"] == 2 / 3


def test_rm_bench_without_a_domain_is_reported_before_scoring_and_the_rest_written(tmp_path):
    """RM-Bench without its math file failed with "no data for subset(s) math" only after
    scoring everything, and wrote nothing, not even the complete benchmarks' results."""
    from synpref.eval.evaluate import write_results

    fixtures.rm_bench(tmp_path / "rm-bench")
    fixtures.rmb(tmp_path / "rmb")
    (tmp_path / "rm-bench" / "data" / "math_filtered.json").unlink()
    printed = []

    class Console:
        def print(self, text, highlight=True):
            printed.append(text)

    class ScorerCheckingTheReport(TextRewardScorer):
        def score(self, conversations):
            assert printed == ["[yellow]rm-bench is incomplete[/]: no data for math; "
                               "its other parts are scored, its headline score is left out"]  # fmt: skip
            return super().score(conversations)

    run = evaluate(ScorerCheckingTheReport(), ["rmb", "rm-bench"], tmp_path, console=Console())
    result = run.results["rm-bench"]
    assert (result.score, result.missing) == (None, ["math"])
    # chat 1/3, code 0, safety 1/2; the levels average the three domains there
    assert result.subsets == pytest.approx(
        {"chat": 1 / 3, "code": 0.0, "safety": 0.5, "hard": 1 / 6, "normal": 1 / 3, "easy": 1 / 3}, abs=1e-12
    )
    assert run.results["rmb"].score == 0.5
    write_results(run, tmp_path / "out", "m")
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written["incomplete"] == {"rm-bench": ["math"]}
    assert (written["benchmarks"]["rm-bench"]["score"], written["benchmarks"]["rm-bench"]["missing"]) == (None, ["math"])
    assert written["benchmarks"]["rmb"]["score"] == 0.5
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| rm-bench | incomplete (no math) |" in table and "| math | no data |" in table


def test_an_unreadable_benchmark_does_not_cost_the_others_their_run(tmp_path):
    fixtures.judgebench(tmp_path / "judgebench")
    fixtures.rmb(tmp_path / "rmb")
    bad = tmp_path / "judgebench" / "data" / "dataset=judgebench,response_model=gpt-4o-2024-05-13.jsonl"
    bad.write_text(bad.read_text().replace('"livebench-math"', '"trivia"', 1))
    run = evaluate(TextRewardScorer(), ["rmb", "judgebench"], tmp_path)
    assert list(run.results) == ["rmb"]
    assert run.skipped == {"judgebench": f"unreadable data in {tmp_path / 'judgebench'}: judgebench: unknown source 'trivia'"}


# --- contract tests over every registered benchmark -------------------------------------


def test_every_benchmark_has_a_fixture():
    assert set(fixtures.WRITERS) == set(benchmark_names()) == set(BENCHMARKS)


def test_registry_rejects_duplicate_names():
    from synpref.eval.base import Benchmark
    from synpref.eval.registry import register

    class Again(Benchmark):
        name = "rewardbench"

    with pytest.raises(ValueError, match="already registered"):
        register(Again)


@pytest.mark.parametrize("name", benchmark_names())
def test_benchmark_contract(name, tmp_path):
    benchmark = get_benchmark(name)
    fixtures.WRITERS[name](tmp_path / name)
    items = benchmark.load(tmp_path / name)
    assert items and all(item.responses and item.history[-1].role == "user" for item in items)
    result = evaluate(TextRewardScorer(), [name], tmp_path).results[name]
    assert list(result.subsets) == list(benchmark.subsets)
    assert 0.0 <= result.score <= 1.0 and result.missing == []
    assert benchmark.missing_parts(items) == []
    assert benchmark.prompts(tmp_path / name)[0] == items[0].history[0].content
    # A declared subset with no data is reported as missing, never a silent zero, and the
    # headline, which stands for all subsets, is left out.
    partial = {subset: 0.5 for subset in benchmark.subsets[1:]}
    incomplete = benchmark.result(0.5, partial, len(items))
    assert (incomplete.score, incomplete.missing, incomplete.subsets) == (None, [benchmark.subsets[0]], partial)


def test_missing_benchmark_data_is_skipped_with_instructions(tmp_path):
    fixtures.judgebench(tmp_path / "judgebench")
    run = evaluate(TextRewardScorer(), ["rmb", "judgebench"], tmp_path)
    assert list(run.results) == ["judgebench"]
    rmb = tmp_path / "rmb"
    assert run.skipped["rmb"] == f"no data in {rmb}; to get it: git clone https://github.com/Zhou-Zoey/RMB-Reward-Model-Benchmark {rmb}"


def test_identical_texts_are_scored_once_per_run(tmp_path):
    fixtures.write_all(tmp_path)
    scorer = TextRewardScorer()
    run = evaluate(scorer, ["all"], tmp_path)
    assert list(run.results) == benchmark_names()
    # responses: rewardbench 16, rewardbench2 36, ppe-preference 8, ppe-correctness 16, rmb 16,
    # rm-bench 36, judgebench 22; one RMB text repeats (see fixtures.rmb)
    assert (run.texts, run.unique_texts, scorer.scored) == (150, 149, 149)


def test_ingest_decontaminates_against_registered_benchmarks(tmp_path):
    from synpref.data.ingest import IngestOptions, ingest
    from synpref.data.workspace import Workspace
    from synpref.eval.registry import benchmark_prompts
    from tests.conftest import record, write_jsonl

    bench_dir = fixtures.write_all(tmp_path / "benchmarks")
    # RM-Bench's prompts are short; give one item a 13-token prompt that a training pair repeats.
    long_prompt = "please explain in simple words why the sky looks blue on a clear summer afternoon"
    data = json.loads((bench_dir / "rm-bench" / "data" / "math_filtered.json").read_text())
    data[0]["prompt"] = long_prompt
    (bench_dir / "rm-bench" / "data" / "math_filtered.json").write_text(json.dumps(data))
    pool = write_jsonl(tmp_path / "pool.jsonl", [record(long_prompt.upper(), "a", "b"), record("hello", "a", "b")])
    workspace = Workspace.init(tmp_path / "ws")
    options = IngestOptions([str(pool)], decontaminate_against=["rm-bench", "judgebench"], bench_dir=bench_dir, workers=1)
    run = ingest(workspace, options, benchmark_prompts=benchmark_prompts)
    assert (run.sources[0].kept, run.sources[0].contaminated) == (1, 1)
    assert run.sources[0].contaminated_by == {"rm-bench": 1}
    assert run.decontamination == {"rm-bench": {"prompts": 6, "shorter_than_n": 5},
                                   "judgebench": {"prompts": 11, "shorter_than_n": 11}}
    with pytest.raises(SynprefError, match="--decontaminate-against rmb: its files must be in BENCH_DIR/rmb/"):
        ingest(workspace, IngestOptions([str(pool)], decontaminate_against=["rmb"], workers=1), benchmark_prompts=benchmark_prompts)


def test_download_saves_hub_datasets_where_eval_reads_them(tmp_path, monkeypatch):
    """The Hub is out of reach here: `load_dataset` answers with a local dataset of the same columns."""
    import datasets

    asked = []

    def local_load_dataset(dataset_id, split):
        asked.append((dataset_id, split))
        subsets = ["alpacaeval-easy", "mt-bench-hard", "donotanswer", "math-prm"]  # one per section
        rows = [{"prompt": f"q{i}", "chosen": fixtures.r(1), "rejected": fixtures.r(0), "subset": s}
                for i, s in enumerate(subsets)]
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", local_load_dataset)
    run = evaluate(TextRewardScorer(), ["rewardbench", "rmb"], tmp_path / "benchmarks", download=True)
    assert asked == [("allenai/reward-bench", "filtered")]
    assert (tmp_path / "benchmarks" / "rewardbench" / "filtered.parquet").is_file()
    assert run.results["rewardbench"].subsets == {"Chat": 1.0, "Chat Hard": 1.0, "Safety": 1.0, "Reasoning": 1.0}
    assert run.skipped["rmb"].startswith("no data in")  # RMB is on GitHub, not the Hub
