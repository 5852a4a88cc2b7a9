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
from synpref.reward.verifiers import BadReference, Outcome, Verdict


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
        return _sigmoid((score - rm.threshold) / rm.temperature)
    return score


def _sigmoid(x: float) -> float:
    """Without overflow: exp is only taken of a non-positive number (x may be +-inf)."""
    if x >= 0:
        return 1 / (1 + math.exp(-x))
    return math.exp(x) / (1 + math.exp(x))


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


class BadLabel(BadReference):
    """A label of one item of a batch that the spec cannot use: "item INDEX: REASON"."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"item {index}: {reason}")
        self.index, self.reason = index, reason


class HybridReward:
    """A reward spec whose verifiers run in a `VerifierPool` (worker processes with time and
    memory limits, started on first use); `close()` stops them."""

    def __init__(self, spec: RewardSpec):
        from synpref.reward.sandbox import VerifierPool

        self.spec = spec
        self.pool = VerifierPool(spec)
        self.verified_tasks = {name for name, task in spec.tasks.items() if task.verifier}

    def close(self) -> None:
        self.pool.close()

    def components(self, rm: float, response: str, label: Any) -> Components:
        """Raises BadReference for a label the spec cannot use (unknown task, bad reference)."""
        return self.many([rm], [response], [label])[0]

    def many(self, scores: list[float], responses: list[str], labels: list[Any], deadline: float | None = None,
             cancel=None) -> list[Components]:  # fmt: skip
        """Components of every item; raises `BadLabel` (a BadReference) naming an unusable label. `deadline` (monotonic)
        and `cancel` (a threading.Event) drop the verification, raising `sandbox.Cancelled`."""
        tasks = [self._task(index, label) for index, label in enumerate(labels)]
        to_verify = [i for i, (name, reference) in enumerate(tasks) if name in self.verified_tasks and reference is not None]
        verdicts = self.pool.verify([(tasks[i][0], responses[i], tasks[i][1]) for i in to_verify], deadline, cancel)
        by_item: dict[int, Verdict] = {}
        for index, verdict in zip(to_verify, verdicts):
            if isinstance(verdict, BadReference):
                raise BadLabel(index, str(verdict))
            by_item[index] = verdict
        results = []
        for index, ((name, _), rm) in enumerate(zip(tasks, scores, strict=True)):
            rm_term, rule, combined = combine(self.spec.tasks[name], rm, by_item.get(index))
            results.append(Components(name, rm, rm_term, rule, combined, by_item.get(index)))
        return results

    def _task(self, index: int, label: Any) -> tuple[str, Any]:
        name, reference = read_label(label, self.spec.default_task)
        task = self.spec.tasks.get(name) if isinstance(name, str) else None
        if task is None:
            raise BadLabel(index, f"unknown task {name!r:.60}; the reward spec has {', '.join(self.spec.tasks)}")
        if task.combine == "rule" and reference is None:
            raise BadLabel(index, f"task {name!r} is scored by its verifier alone and needs a reference")
        return name, reference


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
