"""Judging of a chosen list of pairs: LLM judges through the annotation engine
(synpref/annotate/runner.py `annotate_pairs`), verifier judges (`backend: verifier`) through
the rule verifiers, one vote each.

The engine is handed the pairs to judge and the gold pairs (the judges' examples) as they
are, under their own ids, and keeps its logs in the directory the caller names (a Stage 1
iteration's judging/, a Stage 2 shard's (runs/stage2/judging/<shard>/), a gated judge's gating/<judge>/; no
workspace is made there): its samples log makes a killed judging job resume where it
stopped, and the main workspace's LLM cache means a rerun never pays twice. Prompts and
attributes are the main workspace's. Verifier judges read each pair's reference
(synpref/annotate/verifier_judge.py) and write nothing there.

Each judge's verdict (an LLM's after self-consistency) is then combined as the job says
(majority, or weighted by the judges' measured weights); a judge that is unsure abstains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from synpref.data.models import PreferencePair


class PairVerdict(NamedTuple):
    verdict: str  # chosen | rejected | tie | unsure
    agreement: float  # the winner's share of the judges' weight
    decided_by: str  # "verifier" when a verifier judge voted for the verdict, "llm" when only LLMs did, "" unsure
    reason: str = ""  # the verifier's reason, where a verifier judge voted


def judge_pairs(workspace_root: Path, pairs: list[PreferencePair], gold: list[PreferencePair], job: dict[str, Any], directory: Path) -> dict[str, PairVerdict]:
    """{pair id: PairVerdict} of the judges for `pairs`; a pair an LLM judge could not finish
    has that judge abstaining. The LLM judges' logs go in `directory`: a rerun resumes them."""
    from synpref.annotate.aggregate import combine, self_consistency
    from synpref.annotate.cache import RequestCache
    from synpref.annotate.verifier_judge import is_verifier_judge, verify_pairs

    if not pairs:
        return {}
    rule_judges = [judge_name(j) for j in job["judges"] if is_verifier_judge(j)]
    llm_judges = [j for j in job["judges"] if not is_verifier_judge(j)]
    votes: dict[str, dict[str, str]] = {pair.id: {judge_name(j): "unsure" for j in job["judges"]} for pair in pairs}
    reasons: dict[str, str] = {}
    if rule_judges:
        for pair_id, (verdict, reason) in verify_pairs(pairs, RequestCache(llm_cache_dir(workspace_root))).items():
            votes[pair_id].update({name: verdict for name in rule_judges})
            reasons[pair_id] = reason
    if llm_judges:
        for pair_id, judge, samples in _llm_votes(workspace_root, pairs, gold, {**job, "judges": llm_judges}, directory):
            votes[pair_id][judge] = self_consistency(samples)
    weighted = job.get("combine") == "weighted"
    weights = {judge_name(j): float(j.get("weight", 1.0)) for j in job["judges"]} if weighted else None
    results = {}
    for pair_id, said in votes.items():
        verdict, agreement = combine(said, weights, job.get("min_agreement", 0.5))
        by_rule = verdict in ("chosen", "rejected") and any(said[name] == verdict for name in rule_judges)
        decided_by = "verifier" if by_rule else "llm" if verdict in ("chosen", "rejected") else ""
        results[pair_id] = PairVerdict(verdict, agreement, decided_by, reasons.get(pair_id, ""))
    return results


def judge_name(judge: dict[str, Any]) -> str:
    return judge.get("name") or judge["model"]


def _llm_votes(workspace_root: Path, pairs: list[PreferencePair], gold: list[PreferencePair], job: dict[str, Any], directory: Path):
    """(pair id, judge, its sample verdicts) from the LLM judges' aggregated judgments."""
    from synpref.annotate.config import JobConfig
    from synpref.annotate.runner import annotate_pairs, load_attributes
    from synpref.annotate.store import JUDGMENTS, ResultLog, latest

    annotate_pairs("judge", JobConfig.model_validate(job), pairs, gold=gold, directory=directory,
                   cache_dir=llm_cache_dir(workspace_root), prompts_root=workspace_root,
                   attributes=load_attributes(workspace_root))
    wanted = {pair.id for pair in pairs}
    for record in latest(ResultLog(Path(directory) / JUDGMENTS).read(), "pair_id"):
        if record["pair_id"] in wanted:
            for judge, samples in record["votes"].items():
                yield record["pair_id"], judge, samples


def llm_cache_dir(workspace_root: Path) -> Path:
    """The main workspace's LLM cache (`Workspace.llm_cache_dir`), shared by every judging run."""
    return Path(workspace_root) / "cache" / "llm"
