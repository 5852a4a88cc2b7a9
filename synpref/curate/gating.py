"""Judges earn their vote: each LLM judge's say is its measured agreement with human gold.

Before a curation stage asks the judges anything, each judge labels a seeded sample of the
gold pairs the loop holds (the other gold pairs are its examples, so no pair shows itself).
Its weight is 2a - 1 for accuracy a (0 at chance, 1 when always right), and 0 unless a is
above chance with a one-sided binomial p-value below `alpha`; unsure counts as wrong. Judges
with weight 0 are not asked at all, the rest vote weighted. A verifier judge (`backend:
verifier`) costs nothing per pair, so it is measured on every gold pair, and only on the ones it
decides: it answers only where a pair carries a reference, and its abstentions elsewhere are
not errors. On gold without references it decides nothing and gets weight 0. A judge at chance (the local
SmolLM2 says "Candidate 1" to everything) thus changes no decision: with no judge left, the
Stage 2 rule reads only the reward models, which is the RM-only rule.

    <stage dir>/gating/<judge>/      that judge's annotation logs for the calibration sample
                                     (synpref/annotate/store.py), which resume a killed gate
    <stage dir>/gating.json          per judge: n, correct, accuracy, p-value, weight, why
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

from synpref.data.models import PreferencePair
from synpref.retrieval.embed import model_slug

GATING_FILE = "gating.json"


def binomial_p_value(correct: int, n: int) -> float:
    """P(X >= correct) for X ~ Binomial(n, 1/2): how likely a coin does at least this well."""
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(correct, n + 1)) / 2**n


def judge_weight(correct: int, n: int, alpha: float) -> tuple[float, str]:
    """(weight, why) from `correct` right answers out of `n` gold pairs."""
    if n == 0:
        return 0.0, "no calibration pairs"
    accuracy, p_value = correct / n, binomial_p_value(correct, n)
    if p_value >= alpha:
        return 0.0, f"accuracy {accuracy:.3f} on {n} gold pairs is not above chance (p = {p_value:.3g} >= {alpha})"
    return 2 * accuracy - 1, f"accuracy {accuracy:.3f} on {n} gold pairs (p = {p_value:.3g}): weight 2a - 1"


def calibration_split(gold: list[PreferencePair], size: int, seed: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(calibration pairs, example pairs): a seeded sample of gold and the rest."""
    order = sorted(gold, key=lambda p: p.id)
    random.Random(seed).shuffle(order)
    return order[:size], order[size:]


def gate_judges(workspace_root: Path, job: dict[str, Any], gold: list[PreferencePair], directory: Path, *,
                size: int, alpha: float, seed: int = 0, log=print) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the job with measured weights and only judges that earned a say, or None; report rows)."""
    from synpref.annotate.verifier_judge import is_verifier_judge
    from synpref.curate.judging import judge_name, judge_pairs

    path = directory / GATING_FILE
    if path.is_file():
        report = json.loads(path.read_text())
    else:
        calibration, examples = calibration_split(gold, size, seed)
        report = []
        for judge in job["judges"]:
            name, rule = judge_name(judge), is_verifier_judge(judge)
            single = {**job, "judges": [judge], "combine": "majority"}
            asked = gold if rule else calibration
            verdicts = judge_pairs(workspace_root, asked, examples, single, directory / "gating" / model_slug(name))
            said = [verdicts.get(p.id, ("unsure", 0.0))[0] for p in asked]
            correct = sum(v == "chosen" for v in said)  # gold is stored chosen = the humans' choice
            n = len(asked) - said.count("unsure") if rule else len(asked)  # a verifier is measured where it decides
            weight, why = judge_weight(correct, n, alpha)
            if rule and n == 0:
                why = f"decides none of the {len(asked)} gold pairs (none carries a usable reference): no say"
            report.append({"judge": name, "kind": "verifier" if rule else "llm", "asked": len(asked), "n": n,
                           "correct": correct, "said_chosen": said.count("chosen"), "said_rejected": said.count("rejected"),
                           "said_unsure": said.count("unsure"), "accuracy": correct / max(1, n),
                           "p_value": binomial_p_value(correct, n), "weight": weight, "why": why})
            log(f"judge gate: {name}: {why}")
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(GATING_FILE + ".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(path)
    return gated_job(job, report), report


def gated_job(job: dict[str, Any], report: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The judges with positive weight, combined by weight; None when no judge earned a say."""
    from synpref.curate.judging import judge_name

    weights = {row["judge"]: row["weight"] for row in report}
    kept = [{**j, "weight": weights[judge_name(j)]} for j in job["judges"] if weights.get(judge_name(j), 0) > 0]
    return {**job, "judges": kept, "combine": "weighted"} if kept else None
