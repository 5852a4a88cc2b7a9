"""JudgeBench (Tan et al., github.com/ScalerLab/JudgeBench), scored as its authors score reward models.

Their reward-model judges (`utils/judges.py`: InternLM2Reward, GRMReward, SkyworkReward) score
both responses once and decide `"A>B" if score_A > score_B else "B>A"`, so a tie goes to B;
`utils/metrics.py` (single game) counts the decisions equal to the label. The set they report
is the GPT-4o response file (`data/dataset=judgebench,response_model=gpt-4o-2024-05-13.jsonl`,
350 pairs; README, "Data"); the Claude-3.5-Sonnet file (270 pairs) is a second set, reported
beside it in `extras["other_sets"]`, never pooled into the headline.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from synpref.errors import SynprefError
from synpref.eval.base import (
    Benchmark,
    BenchResult,
    Item,
    accuracy,
    read_records,
    user_turn,
)

CATEGORIES = ("knowledge", "reasoning", "math", "coding")
HEADLINE_SET = "gpt-4o-2024-05-13"  # the response model of the set the authors report


def category(source: str) -> str:
    if source.startswith("mmlu-pro"):
        return "knowledge"
    for prefix, name in (("livebench-reasoning", "reasoning"), ("livebench-math", "math"), ("livecodebench", "coding")):
        if source.startswith(prefix):
            return name
    raise SynprefError(f"judgebench: unknown source {source!r}")


def decision(score_a: float, score_b: float) -> str:
    """The authors' reward-model rule: A wins only by scoring higher; a tie goes to B."""
    return "A>B" if score_a > score_b else "B>A"


def response_set(path: Path, record: dict) -> str:
    """The response model a pair belongs to: its `response_model` field, else the file's name."""
    if record.get("response_model"):
        return str(record["response_model"])
    match = re.search(r"response_model=([^,]+)$", path.stem)
    return match.group(1) if match else path.stem


class JudgeBench(Benchmark):
    name = "judgebench"
    subsets = CATEGORIES + ("category-mean",)
    parts = CATEGORIES  # of the headline set
    source = f"github.com/ScalerLab/JudgeBench data/*.jsonl; headline: the {HEADLINE_SET} set; utils/judges.py reward-model rule"
    github = "ScalerLab/JudgeBench"

    def load(self, directory: Path) -> list[Item]:
        items = []
        for path in sorted((directory / "data").glob("*.jsonl")):
            for r in read_records(path):
                if r["label"] not in ("A>B", "B>A"):
                    raise SynprefError(f"{path}: pair {r.get('pair_id')}: label {r['label']!r} is not A>B or B>A")
                meta = {"category": category(r["source"]), "label": r["label"], "set": response_set(path, r)}
                items.append(Item(user_turn(r["question"]), [r["response_A"], r["response_B"]], meta))
        return items

    def part_of(self, item: Item) -> str | None:
        return item.meta["category"] if item.meta["set"] == HEADLINE_SET else None

    def score(self, items: list[Item], rewards: list[list[float]]) -> BenchResult:
        by_set: dict[str, list[tuple[Item, list[float]]]] = defaultdict(list)
        for item, scores in zip(items, rewards):
            by_set[item.meta["set"]].append((item, scores))
        headline = by_set.pop(HEADLINE_SET, [])
        overall, subsets = set_scores(headline) if headline else (float("nan"), {})
        other_sets = {}
        for name, pairs in sorted(by_set.items()):
            other_overall, other_subsets = set_scores(pairs)
            other_sets[name] = {"score": other_overall, "items": len(pairs), "subsets": other_subsets}
        return self.result(overall, subsets, len(headline), other_sets=other_sets)


def set_scores(pairs: list[tuple[Item, list[float]]]) -> tuple[float, dict[str, float]]:
    """(accuracy over all pairs, as the authors report it; accuracy per category, and their
    mean when every category is there)."""
    outcomes: dict[str, list[bool]] = defaultdict(list)
    for item, (score_a, score_b) in pairs:
        outcomes[item.meta["category"]].append(decision(score_a, score_b) == item.meta["label"])
    subsets = {name: accuracy(outcomes[name]) for name in CATEGORIES if name in outcomes}
    if len(subsets) == len(CATEGORIES):
        subsets["category-mean"] = sum(subsets.values()) / len(CATEGORIES)
    return accuracy([o for values in outcomes.values() for o in values]), subsets
