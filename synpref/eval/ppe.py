"""Preference Proxy Evaluations (lmarena-ai, arXiv 2410.14872): human preference and correctness."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from synpref.data.models import Message
from synpref.eval.base import (
    Benchmark,
    BenchResult,
    Item,
    accuracy,
    data_files,
    mean,
    read_records,
    user_turn,
)


def _history(prompt) -> list[Message]:
    # PPE stores the prompt as a string; some exports keep the message list of multi-turn battles
    if isinstance(prompt, list):
        return [Message(role=m["role"], content=m["content"]) for m in prompt]
    return user_turn(prompt)


class PPEPreference(Benchmark):
    name = "ppe-preference"
    subsets = ("accuracy",)
    source = "HF lmarena-ai/PPE-Human-Preference-V1, split test: accuracy against `winner`, ties excluded"
    hub = (("lmarena-ai/PPE-Human-Preference-V1", "test", "test.parquet"),)

    def load(self, directory: Path) -> list[Item]:
        return [
            Item(_history(r["prompt"]), [r["response_1"], r["response_2"]], {"winner": r["winner"]})
            for path in data_files(directory)
            for r in read_records(path)
            if r["winner"] in ("model_a", "model_b")  # battles judged a tie have no preference to match
        ]

    def score(self, items: list[Item], rewards: list[list[float]]) -> BenchResult:
        outcomes = [
            (first > second) if item.meta["winner"] == "model_a" else (second > first)  # a tie is wrong
            for item, (first, second) in zip(items, rewards)
        ]
        value = accuracy(outcomes)
        return self.result(value, {"accuracy": value}, len(items))

    def part_of(self, item: Item) -> str:
        return "accuracy"


PPE_CORRECTNESS_SETS = ("mmlu-pro", "math", "gpqa", "ifeval", "mbpp-plus")


class PPECorrectness(Benchmark):
    name = "ppe-correctness"
    subsets = PPE_CORRECTNESS_SETS
    source = "HF lmarena-ai/PPE-{MMLU-Pro,MATH,GPQA,IFEval,MBPP-Plus}-Best-of-K, split train"
    hub = tuple(
        (f"lmarena-ai/PPE-{hub_name}-Best-of-K", "train", f"{name}.parquet")
        for hub_name, name in zip(("MMLU-Pro", "MATH", "GPQA", "IFEval", "MBPP-Plus"), PPE_CORRECTNESS_SETS)
    )

    def load(self, directory: Path) -> list[Item]:
        items = []
        for path in data_files(directory):
            name = path.name.split(".")[0].lower()
            for r in read_records(path):
                count = len(r["scores"])
                responses = [r[f"response_{k}"] for k in range(1, count + 1)]
                items.append(Item(_history(r["prompt"]), responses, {"set": name, "correct": list(r["scores"])}))
        return items

    def part_of(self, item: Item) -> str:
        return item.meta["set"]

    def score(self, items: list[Item], rewards: list[list[float]]) -> BenchResult:
        # every (correct, incorrect) response pair of a set counts once; a tie is wrong
        pairwise: dict[str, list[bool]] = defaultdict(list)
        best_of: dict[str, list[list[bool]]] = defaultdict(list)
        for item, scores in zip(items, rewards):
            correct = item.meta["correct"]
            right = [s for s, ok in zip(scores, correct) if ok]
            wrong = [s for s, ok in zip(scores, correct) if not ok]
            pairwise[item.meta["set"]].extend(r > w for r in right for w in wrong)
            best_of[item.meta["set"]].append(best_of_n_curve(scores, correct))
        subsets = {name: accuracy(values) for name, values in pairwise.items()}
        curves = {name: [accuracy([c[n] for c in rows]) for n in range(len(rows[0]))] for name, rows in best_of.items()}
        return self.result(mean(subsets.values()), subsets, len(items), best_of_n=curves)


def best_of_n_curve(scores: list[float], correct: list[bool]) -> list[bool]:
    """For N = 1..K: is the highest-reward response among the first N correct? (first wins ties)"""
    curve, best = [], 0
    for n in range(len(scores)):
        if scores[n] > scores[best]:
            best = n
        curve.append(bool(correct[best]))
    return curve
