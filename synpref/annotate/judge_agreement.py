"""How far to trust each judge: agreement with human gold labels, with each other, and
position bias.

Gold pairs are stored with `chosen` as the human-preferred response, so a judge agrees with
the humans on a gold pair when its verdict (majority over its samples) is "chosen"; a tie or
unsure verdict counts as not agreeing. Between two judges, agreement is over the pairs both
decided (neither unsure). Position bias is the share of a judge's decided
answers (not ties) that pick Candidate 1: 0.5 is unbiased.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from typing import Any

from synpref.annotate.aggregate import self_consistency
from synpref.annotate.store import judgments_log, latest, samples_log


def judge_verdicts(workspace_root) -> tuple[dict[str, dict[str, str]], dict[str, list[dict]]]:
    """({judge: {pair_id: verdict}}, {judge: [valid sample records]}) from the judge log."""
    samples: dict[str, list[dict]] = defaultdict(list)
    for record in latest(samples_log(workspace_root, "judge").read(), "pair_id", "judge", "part"):
        if record["final"]:
            samples[record["judge"]].append(record)
    verdicts: dict[str, dict[str, str]] = {}
    for judge, records in samples.items():
        by_pair: dict[str, list[str]] = defaultdict(list)
        for record in records:
            by_pair[record["pair_id"]].append(record["verdict"] if record["ok"] else "unsure")
        verdicts[judge] = {pair_id: self_consistency(votes) for pair_id, votes in by_pair.items()}
    return verdicts, {judge: [r for r in records if r["ok"]] for judge, records in samples.items()}


def gold_ids(workspace) -> set[str]:
    return {pair.id for _split, pair in workspace.iter_pairs("gold")}


def gold_agreement(workspace) -> dict[str, float]:
    """{judge: share of judged gold pairs where it picked the human-preferred response}."""
    gold = gold_ids(workspace)
    verdicts, _samples = judge_verdicts(workspace.root)
    shares = {}
    for judge, by_pair in verdicts.items():
        judged = [verdict for pair_id, verdict in by_pair.items() if pair_id in gold]
        if judged:
            shares[judge] = judged.count("chosen") / len(judged)
    return shares


def agreement_report(workspace) -> dict[str, Any]:
    """Per judge: gold agreement, position bias; per judge pair: agreement; the ensemble's gold agreement."""
    gold = gold_ids(workspace)
    verdicts, samples = judge_verdicts(workspace.root)
    judges = {}
    for judge, by_pair in sorted(verdicts.items()):
        on_gold = [verdict for pair_id, verdict in by_pair.items() if pair_id in gold]
        picks = [r["answer"]["preferred"] for r in samples[judge] if r["answer"]["preferred"] != "tie"]
        judges[judge] = {
            "pairs": len(by_pair),
            "gold_pairs": len(on_gold),
            "gold_agreement": share(on_gold.count("chosen"), len(on_gold)),
            "gold_unsure_or_tie": sum(v in ("unsure", "tie") for v in on_gold),
            "answers": len(samples[judge]),
            "picks_candidate_1": share(picks.count("Candidate 1"), len(picks)),
        }
    between = {}
    for first, second in combinations(sorted(verdicts), 2):
        # Only pairs both judges decided: an abstention is neither agreement nor disagreement.
        common = [p for p in verdicts[first].keys() & verdicts[second].keys()
                  if "unsure" not in (verdicts[first][p], verdicts[second][p])]
        same = sum(verdicts[first][p] == verdicts[second][p] for p in common)
        between[f"{first} vs {second}"] = {"pairs": len(common), "agreement": share(same, len(common))}
    ensemble = [r["verdict"] for r in latest(judgments_log(workspace.root).read(), "pair_id") if r["pair_id"] in gold]
    return {
        "judges": judges,
        "between_judges": between,
        "ensemble": {"gold_pairs": len(ensemble), "gold_agreement": share(ensemble.count("chosen"), len(ensemble))},
    }


def share(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None
