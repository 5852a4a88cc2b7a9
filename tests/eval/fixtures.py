"""Small benchmark fixtures in each benchmark's native file layout.

Each response carries the reward the test scorer gives it, as "[r=VALUE]", so every expected
score in the tests follows by hand from the numbers written here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class TextRewardScorer:
    """Deterministic stand-in for a reward model in unit tests: reads the reward off the text.

    Counts what it is asked to score, so tests can check texts are scored once per run.
    """

    def __init__(self):
        self.scored = 0

    def score(self, conversations):
        self.scored += len(conversations)
        return [float(re.search(r"\[r=(-?[\d.]+)\]", c[-1].content).group(1)) for c in conversations]


def r(value: float, text: str = "answer") -> str:
    return f"{text} [r={value}]"


# Over 512 tokens (MiniLM's positions), as many real benchmark responses are: one such response
# is in each of the JudgeBench, RM-Bench and RMB fixtures.
LONG = "Let us work through this step by step, checking every case. " * 60


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def write_json(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))


def rewardbench(directory: Path) -> None:
    rows = [  # (subset, chosen reward, rejected reward)
        ("alpacaeval-easy", 1, 0), ("alpacaeval-easy", 0, 1), ("mt-bench-easy", 1, 1),
        ("mt-bench-hard", 0, 1), ("llmbar-natural", 1, 0), ("donotanswer", 1, 0),
        ("math-prm", 1, 0), ("hep-python", 0, 1),
    ]  # fmt: skip
    records = [
        {"prompt": f"question {i}", "chosen": r(c, "good"), "rejected": r(w, "bad"), "subset": s, "id": i}
        for i, (s, c, w) in enumerate(rows)
    ]
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), directory / "filtered.parquet")


def rewardbench2(directory: Path) -> None:
    rows = [  # (id, subset, rewards with the correct ones first, num_correct)
        ("1", "Factuality", [2, 1, 0, 1], 1), ("2", "Factuality", [1, 3, 0, 0], 1),
        ("3", "Math", [1, 1, 0, 0], 1), ("4", "Precise IF", [0, 1, 0, 0], 1),
        ("5", "Safety", [5, 1, 1, 1], 1), ("6", "Focus", [1, 2, 3, 4], 1),
        ("ref:0", "Ties", [3, 1, 2], 1), ("tied:0", "Ties", [4, 3.5, 1, 2], 2),
        ("ref:1", "Ties", [1, 2], 1), ("tied:1", "Ties", [5, 2, 1], 2),
    ]  # fmt: skip
    records = [
        {
            "id": id_, "prompt": f"prompt {id_}", "subset": subset, "num_correct": k,
            "chosen": [r(v, f"correct {n}") for n, v in enumerate(values[:k])],
            "rejected": [r(v, f"wrong {n}") for n, v in enumerate(values[k:])],
        }
        for id_, subset, values, k in rows
    ]  # fmt: skip
    write_jsonl(directory / "test.jsonl", records)


def ppe_preference(directory: Path) -> None:
    rows = [("model_a", 2, 1), ("model_b", 2, 1), ("model_a", 1, 1), ("model_b", 0, 3), ("tie", 1, 0),
            ("tie (bothbad)", 0, 1)]
    records = [
        {"question_id": i, "prompt": f"q{i}", "response_1": r(a, "one"), "response_2": r(b, "two"), "winner": w}
        for i, (w, a, b) in enumerate(rows)
    ]
    write_jsonl(directory / "test.jsonl", records)


def ppe_correctness(directory: Path) -> None:
    sets = {
        "math": [([True, False, True, False], [0.1, 0.5, 0.9, 0.2]), ([False, False, False, True], [0.3, 0.3, 0.1, 0.3])],
        "mmlu-pro": [([True, False], [1, 0])],
        "gpqa": [([True, False], [1, 0])],
        "ifeval": [([True, False], [1, 0])],
        "mbpp-plus": [([True, False], [1, 0])],
    }
    for name, rows in sets.items():
        records = []
        for row, (correct, rewards) in enumerate(rows):
            record = {"question_id": row, "prompt": f"{name} problem {row}", "scores": correct}
            record.update({f"response_{k + 1}": r(v, f"attempt {k}") for k, v in enumerate(rewards)})
            records.append(record)
        write_jsonl(directory / f"{name}.jsonl", records)


def rmb(directory: Path) -> None:
    def conversation(text):
        return [{"role": "user", "content": text, "language": "en"}]

    def answer(value, name="m"):
        return {"llm_name": name, "answer": r(value, name)}

    pairwise = {
        "Helpfulness": [(1, 0, "chosen"), (0, 1, "chosen " + LONG)],
        "Harmlessness": [(1, 1, "chosen")],
    }
    for goal, rows in pairwise.items():
        records = [
            {"pair_uid": f"{goal}{i}", "conversation_input": conversation(f"{goal} prompt {i}"),
             "chosen": answer(c, name), "reject": answer(w, "reject"), "category_path": f"{goal}/x"}
            for i, (c, w, name) in enumerate(rows)
        ]  # fmt: skip
        write_json(directory / "RMB_dataset" / "Pairwise_set" / goal / "Chat" / "x.json", records)
    # The first helpful BoN item reuses the first helpful pair's prompt and rejected answer, as
    # RMB's sets share prompts: that text is scored once per run.
    best_of = {
        "Helpfulness": [(3, [(0, "reject"), (2, "loser1")]), (3, [(3, "loser0"), (1, "loser1")])],
        "Harmlessness": [(2, [(1, "loser0"), (1, "loser1"), (1, "loser2")])],
    }
    for goal, rows in best_of.items():
        records = [
            {"bon_uid": f"{goal}{i}", "conversation_input": conversation(f"{goal} prompt {i}"),
             "bon_best": answer(best, "best"), "loser_list": [answer(v, name) for v, name in losers],
             "category_path": f"{goal}/x"}
            for i, (best, losers) in enumerate(rows)
        ]  # fmt: skip
        write_json(directory / "RMB_dataset" / "BoN_set" / goal / "Chat" / "y.json", records)


def rm_bench(directory: Path) -> None:
    files = {  # file -> items of (chosen rewards by style, rejected rewards by style)
        "chat_filtered": [([1, 2, 3], [0, 1.5, 2.5]), ([0, 0, 0], [1, 1, 1])],
        "math_filtered": [([1, 1, 1], [0, 0, 0])],
        "code_filtered": [([0, 0, 0], [0, 0, 0])],
        "safety-refuse_filtered": [([1, 1, 1], [0, 0, 0])],
        "safety-response_filtered": [([0, 0, 0], [1, 1, 1])],
    }
    for stem, rows in files.items():
        records = [
            {"id": f"{stem}-{i}", "prompt": f"{stem} prompt {i}",
             "chosen": [r(v, f"chosen style {k}") for k, v in enumerate(chosen)],
             "rejected": [r(v, f"rejected style {k}") for k, v in enumerate(rejected)]}
            for i, (chosen, rejected) in enumerate(rows)
        ]  # fmt: skip
        if stem == "chat_filtered":
            records[0]["rejected"][2] = r(2.5, "rejected style 2 " + LONG)
        write_json(directory / "data" / f"{stem}.json", records)


def judgebench(directory: Path) -> None:
    """Both response files, named as in ScalerLab/JudgeBench's data/ folder."""
    gpt = [  # (source, label, reward of A, reward of B, text of A)
        ("mmlu-pro-physics", "A>B", 2, 1, "A"), ("mmlu-pro-law", "B>A", 2, 1, "A"),
        ("livebench-reasoning", "A>B", 1, 1, "A"), ("livebench-math", "B>A", 0, 1, "A"),
        ("livecodebench", "A>B", 3, 2, "A " + LONG), ("livecodebench", "A>B", 2, 3, "A"),
        ("livecodebench", "A>B", 5, 4, "A"), ("livebench-math", "B>A", 2, 2, "A"),
    ]  # fmt: skip
    claude = [("mmlu-pro-math", "A>B", 1, 0, "A"), ("livecodebench", "B>A", 1, 1, "A"), ("livebench-reasoning", "A>B", 0, 1, "A")]
    for model, rows in (("gpt-4o-2024-05-13", gpt), ("claude-3-5-sonnet-20240620", claude)):
        records = [
            {"pair_id": f"{model}-{i}", "original_id": f"o{i}", "source": s, "question": f"{model} question {i}",
             "response_model": model, "response_A": r(a, text), "response_B": r(b, "B"), "label": label}
            for i, (s, label, a, b, text) in enumerate(rows)
        ]  # fmt: skip
        write_jsonl(directory / "data" / f"dataset=judgebench,response_model={model}.jsonl", records)


WRITERS = {
    "rewardbench": rewardbench,
    "rewardbench2": rewardbench2,
    "ppe-preference": ppe_preference,
    "ppe-correctness": ppe_correctness,
    "rmb": rmb,
    "rm-bench": rm_bench,
    "judgebench": judgebench,
}


def write_all(data_dir: Path) -> Path:
    for name, writer in WRITERS.items():
        writer(data_dir / name)
    return data_dir
