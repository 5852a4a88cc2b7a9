"""Judging of a chosen list of pairs: LLM judges through the annotation engine (`run_job`),
verifier judges (`backend: verifier`) through the rule verifiers, one vote each.

`run_job` selects pairs by split, so the pairs to judge are put in a small selection
workspace of their own: the gold pairs (the judges' examples) as `gold`, the targets as
`pool`. It shares the main workspace's LLM cache, so a rerun never pays twice, and its
annotation logs make a killed judging job resume where it stopped. Verifier judges need no
selection workspace: they read each pair's reference (synpref/annotate/verifier_judge.py).

Each judge's verdict (an LLM's after self-consistency) is then combined as the job says
(majority, or weighted by the judges' measured weights); a judge that is unsure abstains.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple

from synpref.data.models import PreferencePair

CONFIG_FILE = "synpref.yaml"


class PairVerdict(NamedTuple):
    verdict: str  # chosen | rejected | tie | unsure
    agreement: float  # the winner's share of the judges' weight
    decided_by: str  # "verifier" when a verifier judge voted for the verdict, "llm" when only LLMs did, "" unsure
    reason: str = ""  # the verifier's reason, where a verifier judge voted


def judge_pairs(workspace_root: Path, pairs: list[PreferencePair], gold: list[PreferencePair], job: dict[str, Any], directory: Path) -> dict[str, PairVerdict]:
    """{pair id: PairVerdict} of the judges for `pairs`; a pair an LLM judge could not finish
    has that judge abstaining."""
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
        for pair_id, (verdict, reason) in verify_pairs(pairs, RequestCache(Path(workspace_root) / "cache" / "llm")).items():
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


def _llm_votes(workspace_root, pairs, gold, job: dict[str, Any], directory: Path):
    """(pair id, judge, its sample verdicts) from the LLM judges' aggregated judgments."""
    from synpref.annotate.config import JobConfig
    from synpref.annotate.runner import run_job
    from synpref.annotate.store import judgments_log, latest

    selection = _selection_workspace(Path(workspace_root), pairs, gold, directory)
    run_job(selection, "judge", JobConfig.model_validate(job), split="pool")
    wanted = {pair.id for pair in pairs}
    for record in latest(judgments_log(selection.root).read(), "pair_id"):
        if record["pair_id"] in wanted:
            for judge, samples in record["votes"].items():
                yield record["pair_id"], judge, samples


def _selection_workspace(workspace_root: Path, pairs: list[PreferencePair], gold: list[PreferencePair], directory: Path):
    from synpref.data.ingest import IngestOptions, ingest
    from synpref.data.workspace import Workspace

    directory.mkdir(parents=True, exist_ok=True)
    # The main workspace's config, so its Stage 0 limits accept the pairs it already holds.
    shutil.copyfile(workspace_root / CONFIG_FILE, directory / CONFIG_FILE)
    selection = Workspace(directory)
    _link(workspace_root / "cache" / "llm", directory / "cache" / "llm")
    attributes = workspace_root / "annotate" / "attributes" / "samples.jsonl"
    if attributes.is_file() and not (directory / "annotate" / "attributes" / "samples.jsonl").is_file():
        (directory / "annotate" / "attributes").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(attributes, directory / "annotate" / "attributes" / "samples.jsonl")
    for split, items in (("gold", gold), ("pool", pairs)):
        if not items:
            continue  # e.g. no gold left for examples when all of it calibrates the judges
        path = directory / f"{split}.jsonl"
        if not path.is_file():
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(json.dumps(_record(p)) + "\n" for p in items))
            tmp.replace(path)
        ingest(selection, IngestOptions([str(path)], split=split, workers=1))  # resumes; repeats are duplicates
    return selection


def _record(pair: PreferencePair) -> dict[str, Any]:
    return {"conversation": [m.model_dump() for m in pair.conversation], "chosen": pair.chosen.model_dump(),
            "rejected": pair.rejected.model_dump(), "source": pair.source, "meta": pair.meta,
            "reference": pair.reference.model_dump() if pair.reference else None}


def _link(target: Path, link: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target.resolve(), target_is_directory=True)
