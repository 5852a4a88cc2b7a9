"""RM-Bench (Liu et al., THU-KEG): substance vs style, scored on the 3x3 style matrix."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from synpref.errors import SynprefError
from synpref.eval.base import Benchmark, BenchResult, Item, mean, read_records, user_turn

STYLES = ("concise", "detailed", "detailed-markdown")  # order of the chosen/rejected lists
DOMAINS = ("chat", "math", "code", "safety")  # safety-refuse and safety-response form "safety"


class RMBench(Benchmark):
    name = "rm-bench"
    subsets = DOMAINS + ("hard", "normal", "easy")
    parts = DOMAINS
    source = "github.com/THU-KEG/RM-Bench data/*.json; rules of its compute_accuracy"
    github = "THU-KEG/RM-Bench"

    def load(self, directory: Path) -> list[Item]:
        items, seen = [], set()
        for path in sorted((directory / "data").glob("*.json")):
            for record in read_records(path):
                key = (record.get("id"), record["prompt"])
                if key in seen:  # total_dataset.json repeats the per-domain files
                    continue
                seen.add(key)
                domain = _domain(record.get("domain") or path.stem)
                responses = list(record["chosen"]) + list(record["rejected"])
                if len(responses) != 6:
                    raise SynprefError(f"{path}: item {record.get('id')}: expected 3 chosen and 3 rejected")
                items.append(Item(user_turn(record["prompt"]), responses, {"domain": domain}))
        return items

    def part_of(self, item: Item) -> str:
        return item.meta["domain"]

    def score(self, items: list[Item], rewards: list[list[float]]) -> BenchResult:
        by_domain: dict[str, list[list[float]]] = defaultdict(list)
        for item, scores in zip(items, rewards):
            by_domain[item.meta["domain"]].append(scores)
        matrices = {domain: style_matrix(by_domain[domain]) for domain in DOMAINS if domain in by_domain}
        levels = {domain: difficulty_levels(m) for domain, m in matrices.items()}
        subsets = {domain: sum(v.values()) / 3 for domain, v in levels.items()}
        for level in ("hard", "normal", "easy"):  # over the domains present
            subsets[level] = mean(v[level] for v in levels.values())
        score = mean(subsets[domain] for domain in matrices)
        return self.result(score, subsets, len(items), matrix=matrices, levels=levels)


def style_matrix(rows: list[list[float]]) -> list[list[float]]:
    """M[i][j] = share of items whose chosen response in style i outscores the rejected in style j."""
    return [[sum(r[i] > r[3 + j] for r in rows) / len(rows) for j in range(3)] for i in range(3)]


def difficulty_levels(matrix: list[list[float]]) -> dict[str, float]:
    """hard: chosen in a plainer style than rejected (above the diagonal); normal: same style;
    easy: chosen in a richer style (below the diagonal)."""
    upper = [matrix[i][j] for i in range(3) for j in range(3) if i < j]
    lower = [matrix[i][j] for i in range(3) for j in range(3) if i > j]
    return {
        "hard": sum(upper) / len(upper),
        "normal": sum(matrix[i][i] for i in range(3)) / 3,
        "easy": sum(lower) / len(lower),
    }


def _domain(name: str) -> str:
    for domain in DOMAINS:
        if name.lower().startswith(domain):
            return domain
    raise SynprefError(f"rm-bench: cannot tell the domain of {name!r} (expected one of {', '.join(DOMAINS)})")
