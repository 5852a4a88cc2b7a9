"""RMB (Zhou et al., github.com/Zhou-Zoey/RMB-Reward-Model-Benchmark): pairwise and best-of-N."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from synpref.data.models import Message
from synpref.eval.base import Benchmark, BenchResult, Item, accuracy, mean, read_records

_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "bot": "assistant", "system": "system"}
_GOALS = {"Helpfulness": "helpful", "Harmlessness": "harmless"}


def _history(conversation: list[dict]) -> list[Message]:
    return [Message(role=_ROLES[m["role"].lower()], content=m["content"]) for m in conversation]


class RMB(Benchmark):
    name = "rmb"
    subsets = ("pairwise-helpful", "pairwise-harmless", "bon-helpful", "bon-harmless")
    source = "github.com/Zhou-Zoey/RMB-Reward-Model-Benchmark, RMB_dataset/{Pairwise_set,BoN_set}"
    github = "Zhou-Zoey/RMB-Reward-Model-Benchmark"

    def load(self, directory: Path) -> list[Item]:
        items = []
        for kind in ("Pairwise", "BoN"):
            for goal, label in _GOALS.items():
                for path in sorted((directory / "RMB_dataset" / f"{kind}_set" / goal).rglob("*.json")):
                    subset = f"{kind.lower()}-{label}"
                    items.extend(self._item(record, subset) for record in read_records(path))
        return items

    @staticmethod
    def _item(record: dict, subset: str) -> Item:
        if subset.startswith("pairwise"):
            responses = [record["chosen"]["answer"], record["reject"]["answer"]]
        else:  # the best response first, then every loser
            responses = [record["bon_best"]["answer"]] + [loser["answer"] for loser in record["loser_list"]]
        return Item(_history(record["conversation_input"]), responses, {"subset": subset})

    def score(self, items: list[Item], rewards: list[list[float]]) -> BenchResult:
        outcomes: dict[str, list[bool]] = defaultdict(list)
        for item, scores in zip(items, rewards):
            # pairwise: chosen beats rejected; best-of-N: the best beats every loser (ties are wrong)
            outcomes[item.meta["subset"]].append(all(scores[0] > other for other in scores[1:]))
        subsets = {name: accuracy(v) for name, v in outcomes.items()}
        return self.result(mean(subsets.values()), subsets, len(items))
