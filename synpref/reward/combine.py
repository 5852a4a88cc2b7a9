"""One reward from the RM's score and a verifier's verdict, as the reward spec says.

Labels arrive as trainers send them: OpenRLHF's `labels` entries are whatever the dataset's
`--label_key` column holds, veRL's reward functions get `data_source` and `ground_truth`. So a
label is a plain reference (the spec's default task), or an object with `task` (or
`data_source`) and `reference` (or `ground_truth`); null means no reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from synpref.reward.spec import RewardSpec, RmTransform, TaskSpec
from synpref.reward.verifiers import BadReference, Outcome, Verdict, Verifier, get_verifier


@dataclass(frozen=True)
class Components:
    task: str
    rm: float  # the reward model's raw score
    rm_term: float  # f(rm), the transformed score
    rule: float  # 1.0 correct, else 0.0 (0.0 too when no verifier ran)
    combined: float
    verdict: Verdict | None  # None: no verifier ran (RM-only task, or no reference)


def transform_rm(score: float, rm: RmTransform) -> float:
    if rm.transform == "clip":
        return min(score, rm.threshold)
    if rm.transform == "sigmoid":
        return 1 / (1 + math.exp(-(score - rm.threshold) / rm.temperature))
    return score


def combine(task: TaskSpec, rm: float, verdict: Verdict | None) -> tuple[float, float, float]:
    """(f(rm), rule, combined) for one item."""
    rm_term = transform_rm(rm, task.rm)
    rule = 1.0 if verdict is not None and verdict.outcome is Outcome.CORRECT else 0.0
    if verdict is None or task.combine == "rm":
        base = rm_term if task.combine == "rm" else task.w_rm * rm_term  # no reference: the RM alone speaks
    elif task.combine == "rule":
        base = rule
    else:
        base = task.w_rm * rm_term + task.w_rule * rule
    penalty = task.unparseable_penalty if verdict is not None and verdict.outcome is Outcome.UNPARSEABLE else 0.0
    return rm_term, rule, base - penalty


def read_label(label: Any, default_task: str) -> tuple[str, Any]:
    """(task, reference or None) from one label, in OpenRLHF's or veRL's shape."""
    if isinstance(label, dict):
        task = label.get("task", label.get("data_source", default_task))
        return task, label.get("reference", label.get("ground_truth"))
    return default_task, label


class HybridReward:
    """A reward spec with its verifiers built once."""

    def __init__(self, spec: RewardSpec):
        self.spec = spec
        self.verifiers: dict[str, Verifier] = {
            name: get_verifier(task.verifier, task.options) for name, task in spec.tasks.items() if task.verifier
        }

    def components(self, rm: float, response: str, label: Any) -> Components:
        """Raises BadReference for a label the spec cannot use (unknown task, bad reference)."""
        name, reference = read_label(label, self.spec.default_task)
        task = self.spec.tasks.get(name) if isinstance(name, str) else None
        if task is None:
            raise BadReference(f"unknown task {name!r:.60}; the reward spec has {', '.join(self.spec.tasks)}")
        verifier = self.verifiers.get(name)
        if task.combine == "rule" and reference is None:
            raise BadReference(f"task {name!r} is scored by its verifier alone and needs a reference")
        verdict = verifier.verify(response, reference) if verifier is not None and reference is not None else None
        rm_term, rule, combined = combine(task, rm, verdict)
        return Components(name, rm, rm_term, rule, combined, verdict)

    def many(self, scores: list[float], responses: list[str], labels: list[Any]) -> list[Components]:
        """Components of every item; a BadReference names the item's index."""
        results = []
        for index, (rm, response, label) in enumerate(zip(scores, responses, labels, strict=True)):
            try:
                results.append(self.components(rm, response, label))
            except BadReference as error:
                raise BadReference(f"item {index}: {error}") from None
        return results


def numeric_logs(components: list[Components]) -> dict[str, list[float]]:
    """Per-item components as numbers only (OpenRLHF turns each extra_logs entry into a tensor).

    outcome: 1 correct, 0 incorrect, -1 unparseable; verified: 1 where a verifier ran."""
    code = {Outcome.CORRECT: 1.0, Outcome.INCORRECT: 0.0, Outcome.UNPARSEABLE: -1.0}
    return {
        "rm": [c.rm for c in components],
        "rule": [c.rule for c in components],
        "combined": [c.combined for c in components],
        "verified": [float(c.verdict is not None) for c in components],
        "outcome": [code[c.verdict.outcome] if c.verdict else 0.0 for c in components],
    }
