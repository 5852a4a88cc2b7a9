"""`synpref reward score`: the reward components of a JSONL file, and how the RM and verifier agree.

Each line: `prompt` (a string or a list of messages), `response` (a string), `reference` (any
label the spec reads; null for none), optionally `task`, and optionally `pair` (an id shared by
two lines) with `preferred` (true on one of them) to compare how the RM alone and the combined
reward rank each pair.

Writes OUTPUT/components.jsonl (one line per input line), OUTPUT/report.md, OUTPUT/rm_by_outcome.png
and OUTPUT/reward-spec.yaml (the resolved spec the numbers came from).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synpref.errors import SynprefError
from synpref.reward.combine import BadLabel, Components, HybridReward
from synpref.reward.spec import RewardSpec, save_spec
from synpref.reward.verifiers import Outcome


@dataclass(frozen=True)
class Item:
    line: int
    conversation: list[dict]  # ends with the response, as the scorer takes it
    response: str
    label: Any
    pair: Any = None
    preferred: bool | None = None


def read_items(path: Path) -> list[Item]:
    items = []
    with open(path, encoding="utf-8") as lines:
        for number, text in enumerate(lines, 1):
            if text.strip():
                items.append(_item(number, text, path))
    if not items:
        raise SynprefError(f"{path}: no records")
    return items


def _item(number: int, text: str, path: Path) -> Item:
    where = f"{path}:{number}"
    try:
        record = json.loads(text)
    except ValueError as error:
        raise SynprefError(f"{where}: not JSON ({error})") from None
    prompt, response = record.get("prompt"), record.get("response")
    if not isinstance(response, str):
        raise SynprefError(f"{where}: response must be a string")
    if isinstance(prompt, str):
        history = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        history = prompt
    else:
        raise SynprefError(f"{where}: prompt must be a string or a list of messages")
    label = record.get("reference")
    if "task" in record:
        label = {"task": record["task"], "reference": label}
    conversation = [*history, {"role": "assistant", "content": response}]
    return Item(number, conversation, response, label, record.get("pair"), record.get("preferred"))


def score_items(items: list[Item], spec: RewardSpec, scorer) -> list[Components]:
    scores = scorer.score([item.conversation for item in items])
    hybrid = HybridReward(spec)
    try:
        return hybrid.many(scores, [item.response for item in items], [item.label for item in items])
    except BadLabel as error:
        raise SynprefError(f"line {items[error.index].line}: {error.reason}") from None
    finally:
        hybrid.close()


def score_file(data: Path, spec: RewardSpec, scorer, output: Path) -> dict[str, Any]:
    """Score, verify, combine; write the four files; return the report's figures."""
    items = read_items(data)
    parts = score_items(items, spec, scorer)
    output.mkdir(parents=True, exist_ok=True)
    save_spec(spec, output)
    with open(output / "components.jsonl", "w", encoding="utf-8") as out:
        for item, part in zip(items, parts):
            out.write(json.dumps(_row(item, part)) + "\n")
    figures = summarise(items, parts)
    (output / "report.md").write_text(render_report(figures, data))
    plot_rm_by_outcome(parts, output / "rm_by_outcome.png")
    return figures


def _row(item: Item, part: Components) -> dict[str, Any]:
    verdict = part.verdict
    return {
        "line": item.line, "task": part.task, "rm": part.rm, "rm_term": part.rm_term, "rule": part.rule,
        "combined": part.combined, "outcome": verdict.outcome.value if verdict else None,
        "reason": verdict.reason if verdict else None, "answer": verdict.answer if verdict else None,
    }  # fmt: skip


def summarise(items: list[Item], parts: list[Components]) -> dict[str, Any]:
    outcomes = Counter(p.verdict.outcome.value if p.verdict else "not verified" for p in parts)
    correct = np.array([p.rm for p in parts if p.verdict and p.verdict.outcome is Outcome.CORRECT])
    incorrect = np.array([p.rm for p in parts if p.verdict and p.verdict.outcome is Outcome.INCORRECT])
    figures: dict[str, Any] = {"items": len(parts), "outcomes": dict(outcomes)}
    figures["mean_rm"] = {o: float(np.mean([p.rm for p in parts if (p.verdict.outcome.value if p.verdict else "not verified") == o]))
                          for o in outcomes}  # fmt: skip
    if len(correct) and len(incorrect):
        figures["auroc"] = auroc(correct, incorrect)
        threshold, agreement = best_threshold(correct, incorrect)
        figures["threshold"] = threshold
        figures["agreement"] = agreement
        figures["rm_high_but_incorrect"] = int((incorrect > threshold).sum())
        figures["rm_low_but_correct"] = int((correct <= threshold).sum())
    pairs = pair_ranking(items, parts)
    if pairs:
        figures["pairs"] = pairs
    return figures


def auroc(correct: np.ndarray, incorrect: np.ndarray) -> float:
    """P(a correct answer's RM score > an incorrect one's), ties counting half (Mann-Whitney)."""
    ordered = np.sort(incorrect)
    below = np.searchsorted(ordered, correct, side="left")
    at_or_below = np.searchsorted(ordered, correct, side="right")
    return float((below + 0.5 * (at_or_below - below)).sum() / (len(correct) * len(incorrect)))


def best_threshold(correct: np.ndarray, incorrect: np.ndarray) -> tuple[float, float]:
    """The RM score t that best reproduces the verifier (correct iff rm > t), and that agreement.

    Candidates are midpoints between neighbouring scores (and below the lowest); the lowest t
    wins a tie. This is the calibrated threshold a spec's rm.threshold can take."""
    scores = np.concatenate([correct, incorrect])
    is_correct = np.concatenate([np.ones(len(correct)), np.zeros(len(incorrect))])
    order = np.argsort(scores, kind="stable")
    scores, is_correct = scores[order], is_correct[order]
    unique = np.unique(scores)
    candidates = np.concatenate([[unique[0] - 1.0], (unique[:-1] + unique[1:]) / 2])
    # Agreement at t: correct answers above t plus incorrect ones at or below it.
    below = np.searchsorted(scores, candidates, side="right")
    correct_below = np.concatenate([[0], np.cumsum(is_correct)])[below]
    agree = (len(correct) - correct_below) + (below - correct_below)
    best = int(np.argmax(agree))
    return float(candidates[best]), float(agree[best] / len(scores))


def pair_ranking(items: list[Item], parts: list[Components]) -> dict[str, Any] | None:
    """How often the preferred response ranks above the other, by the RM alone and combined."""
    groups: dict[Any, dict[bool, Components]] = {}
    for item, part in zip(items, parts):
        if item.pair is None:
            continue
        side = groups.setdefault(json.dumps(item.pair), {})
        if bool(item.preferred) in side:
            raise SynprefError(f"line {item.line}: pair {item.pair!r} has two {'preferred' if item.preferred else 'other'} responses")
        side[bool(item.preferred)] = part
    complete = [g for g in groups.values() if len(g) == 2]
    if not complete:
        return None
    result: dict[str, Any] = {"pairs": len(complete), "incomplete": len(groups) - len(complete)}
    for name in ("rm", "combined"):
        margins = [getattr(g[True], name) - getattr(g[False], name) for g in complete]
        result[name] = {"wins": sum(m > 0 for m in margins), "ties": sum(m == 0 for m in margins), "losses": sum(m < 0 for m in margins)}
    return result


def render_report(figures: dict[str, Any], data: Path) -> str:
    lines = [f"# Reward components of {data.name}", "", f"{figures['items']:,} items.", "",
             "| verifier outcome | items | mean RM score |", "|---|---|---|"]  # fmt: skip
    for outcome, count in sorted(figures["outcomes"].items()):
        lines.append(f"| {outcome} | {count:,} | {figures['mean_rm'][outcome]:.3f} |")
    if "auroc" in figures:
        lines += ["", "## RM vs verifier", "",
                  f"- AUROC of the RM score for correct vs incorrect answers: {figures['auroc']:.3f} (0.5: no better than chance)",
                  f"- calibrated threshold (RM > t read as correct, best agreement): t = {figures['threshold']:.4f}",
                  f"- agreement at t: {figures['agreement']:.1%}; they disagree on {1 - figures['agreement']:.1%}: "
                  f"{figures['rm_high_but_incorrect']:,} incorrect answers score above t, "
                  f"{figures['rm_low_but_correct']:,} correct answers at or below it"]  # fmt: skip
    else:
        lines += ["", "No agreement figures: they need both correct and incorrect answers."]
    if "pairs" in figures:
        pairs = figures["pairs"]
        lines += ["", "## Pairs: preferred response ranked first", "", f"{pairs['pairs']:,} complete pairs "
                  f"({pairs['incomplete']:,} incomplete ones left out).", "",
                  "| reward | preferred higher | ties | other higher |", "|---|---|---|---|"]  # fmt: skip
        for name in ("rm", "combined"):
            counts = pairs[name]
            lines.append(f"| {'RM alone' if name == 'rm' else 'combined'} | {counts['wins'] / pairs['pairs']:.1%} "
                         f"| {counts['ties'] / pairs['pairs']:.1%} | {counts['losses'] / pairs['pairs']:.1%} |")  # fmt: skip
    lines += ["", "![RM score by verifier outcome](rm_by_outcome.png)", ""]
    return "\n".join(lines)


def plot_rm_by_outcome(parts: list[Components], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    groups: dict[str, list[float]] = {}
    for part in parts:
        groups.setdefault(part.verdict.outcome.value if part.verdict else "not verified", []).append(part.rm)
    names = sorted(groups)
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.boxplot([groups[n] for n in names], showfliers=False)
    for position, name in enumerate(names, 1):
        jitter = np.random.default_rng(position).uniform(-0.12, 0.12, len(groups[name]))
        axes.scatter(position + jitter, groups[name], s=6, alpha=0.5)
    axes.set_xticks(range(1, len(names) + 1), [f"{n}\n(n={len(groups[n])})" for n in names])
    axes.set_ylabel("RM score")
    axes.set_title("RM score by verifier outcome")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
