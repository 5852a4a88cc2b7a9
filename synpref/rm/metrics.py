"""How well a reward model ranks preference pairs: the one accuracy rule every caller shares."""

from __future__ import annotations

from collections.abc import Sequence


def pairwise_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float:
    """Share of pairs whose chosen response gets the strictly higher reward. A tie counts as
    wrong: a model that gives both responses one reward has not ranked them. NaN for no pairs."""
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen rewards but {len(rejected)} rejected ones")
    if not len(chosen):
        return float("nan")
    return sum(c > r for c, r in zip(chosen, rejected)) / len(chosen)
