"""Inter-annotator agreement on nominal verdicts (chosen, rejected, unsure).

Cohen's kappa for each pair of annotators, over the pairs both judged:
    kappa = (p_o - p_e) / (1 - p_e), p_e = sum over verdicts of p_A(v) * p_B(v).
Krippendorff's alpha over everyone, nominal metric, missing values allowed
(Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability", section C):
    alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c * n_k,
where o is the coincidence matrix of pairable values (a pair judged by m >= 2 annotators
adds 1 / (m - 1) for each ordered pair of their verdicts) and n_c its margins.
Both are None where undefined (expected disagreement 0, or nothing to compare).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import combinations, permutations

Ratings = dict[str, dict[str, str]]  # {annotator: {pair_id: verdict}}


def cohen_kappa(first: dict[str, str], second: dict[str, str]) -> tuple[float | None, int]:
    """(kappa, number of pairs both judged)."""
    common = sorted(first.keys() & second.keys())
    if not common:
        return None, 0
    observed = sum(first[p] == second[p] for p in common) / len(common)
    first_counts = Counter(first[p] for p in common)
    second_counts = Counter(second[p] for p in common)
    expected = sum(first_counts[v] * second_counts[v] for v in first_counts) / len(common) ** 2
    if expected == 1:
        return None, len(common)
    return (observed - expected) / (1 - expected), len(common)


def pairwise_kappa(ratings: Ratings) -> list[dict]:
    """[{first, second, kappa, pairs}] for each pair of annotators with a pair in common."""
    rows = []
    for first, second in combinations(sorted(ratings), 2):
        kappa, pairs = cohen_kappa(ratings[first], ratings[second])
        if pairs:
            rows.append({"first": first, "second": second, "kappa": kappa, "pairs": pairs})
    return rows


def krippendorff_alpha(ratings: Ratings) -> float | None:
    by_pair: dict[str, list[str]] = defaultdict(list)
    for verdicts in ratings.values():
        for pair_id, verdict in verdicts.items():
            by_pair[pair_id].append(verdict)
    coincidences: dict[tuple[str, str], float] = defaultdict(float)
    for values in by_pair.values():
        if len(values) < 2:
            continue  # a value nobody else judged cannot agree or disagree
        for a, b in permutations(range(len(values)), 2):
            coincidences[values[a], values[b]] += 1 / (len(values) - 1)
    margins: dict[str, float] = defaultdict(float)
    for (first, _second), weight in coincidences.items():
        margins[first] += weight
    total = sum(margins.values())
    observed = sum(w for (first, second), w in coincidences.items() if first != second)
    expected = sum(margins[c] * margins[k] for c in margins for k in margins if c != k)
    if total <= 1 or expected == 0:
        return None
    return 1 - (total - 1) * observed / expected
