"""Several judges end to end: attributes, preverify, judging, weighted combining and the
agreement report, against one fault injector that answers per model."""

from __future__ import annotations

import json
import re

from synpref.annotate.config import JobConfig
from synpref.annotate.judge_agreement import agreement_report
from synpref.annotate.runner import run_job
from synpref.annotate.store import judgments_log, latest, samples_log
from tests.annotate.conftest import GOLD, POOL, fault_injector_judge
from tests.annotate.fault_injector import FaultInjector

CHOSEN = {r["chosen"]["content"] for r in POOL + GOLD}
TARGET = re.compile(r"## Pair to judge\n.*### Candidate 1\n(.*)\n\n### Candidate 2\n", re.DOTALL)


def answer_by_model(body: dict) -> str:
    """oracle: picks the human-preferred response; contrarian: the other; first: Candidate 1."""
    model, prompt = body["model"], body["messages"][-1]["content"]
    if body["response_format"]["json_schema"]["name"] == "attributes":
        objectivity = "objective" if "?" in prompt else "subjective"
        return json.dumps({"task_category": "factual_qa", "objectivity": objectivity, "controversiality": "low",
                           "desired_attributes": ["correct"], "guideline": "Right beats wrong."})
    if body["response_format"]["json_schema"]["name"] == "preverify":
        response = prompt.split("### Response\n")[1].split("\n\n")[0]
        return json.dumps({"correct": response in CHOSEN, "reason": "checked"})
    first_is_chosen = TARGET.search(prompt).group(1) in CHOSEN
    picks_first = {"oracle": first_is_chosen, "contrarian": not first_is_chosen, "first": True}[model]
    return json.dumps({"preferred": "Candidate 1" if picks_first else "Candidate 2"})


def judges(url: str, **job) -> JobConfig:
    return JobConfig(
        judges=[fault_injector_judge(url, name=m, model=m, concurrency=2) for m in ("oracle", "contrarian", "first")],
        examples=1, seed=2, **job,  # seed 2 shows "first" one gold pair each way round
    )


def verdicts(workspace) -> dict[str, tuple[str, float]]:
    return {r["pair_id"]: (r["verdict"], r["agreement"]) for r in latest(judgments_log(workspace.root).read(), "pair_id")}


def test_agreement_report_and_weighted_combining(pairs_workspace):
    with FaultInjector(answer=answer_by_model) as injector:
        run_job(pairs_workspace, "judge", judges(injector.url), split="gold")
        report = agreement_report(pairs_workspace)
        assert report["judges"]["oracle"]["gold_agreement"] == 1.0
        assert report["judges"]["contrarian"]["gold_agreement"] == 0.0
        assert report["judges"]["first"] == {
            "pairs": 2, "gold_pairs": 2, "gold_agreement": 0.5, "gold_unsure_or_tie": 0,
            "answers": 2, "picks_candidate_1": 1.0,
        }
        assert report["between_judges"]["contrarian vs oracle"] == {"pairs": 2, "agreement": 0.0}
        # Majority: "first" decides between the two opposite judges. It was shown the
        # rejected "22" first, and the chosen "12" first.
        two_plus_two, even = (pair.id for _split, pair in pairs_workspace.iter_pairs("gold"))
        assert verdicts(pairs_workspace) == {two_plus_two: ("rejected", 0.666667), even: ("chosen", 0.666667)}
        assert report["ensemble"] == {"gold_pairs": 2, "gold_agreement": 0.5}

        # Weighted by gold agreement (1.0, 0.0, 0.5): the oracle wins every pool pair.
        run_job(pairs_workspace, "judge", judges(injector.url, combine="weighted"))
        pool_ids = [pair.id for _split, pair in pairs_workspace.iter_pairs("pool")]
        first_pick = {r["pair_id"]: r["verdict"] for r in samples_log(pairs_workspace.root, "judge").read() if r["judge"] == "first"}
        expected = {i: ("chosen", 1.0 if first_pick[i] == "chosen" else 0.666667) for i in pool_ids}
        assert {i: verdicts(pairs_workspace)[i] for i in pool_ids} == expected
        # On four of them "first" sided with the contrarian: majority would have said rejected.
        assert sorted(agreement for _verdict, agreement in expected.values()) == [0.666667] * 4 + [1.0] * 2


def test_attributes_then_preverify_on_objective_pairs_only(pairs_workspace):
    with FaultInjector(answer=answer_by_model) as injector:
        config = JobConfig(judges=[fault_injector_judge(injector.url, name="oracle", model="oracle")])
        summary = run_job(pairs_workspace, "attributes", config)
        assert (summary.pairs, summary.done) == (8, 8)  # every split
        summary = run_job(pairs_workspace, "preverify", config)
        # Four pool prompts and one gold prompt are questions (objective), two responses each.
        assert (summary.pairs, summary.units, summary.done) == (5, 10, 10)
        records = samples_log(pairs_workspace.root, "preverify").read()
        assert sorted((r["part"], r["answer"]["correct"]) for r in records) == [("chosen", True)] * 5 + [("rejected", False)] * 5
        # The judge prompt now shows each pair's attributes.
        run_job(pairs_workspace, "judge", config, limit=1)
        assert "### Attributes\nTask category: factual_qa; objective; controversiality low\n" in injector.received[-1]["body"]["messages"][0]["content"]


def test_only_the_pairs_asked_for(pairs_workspace):
    with FaultInjector(answer=answer_by_model) as injector:
        pool = [pair.id for _split, pair in pairs_workspace.iter_pairs("pool")]
        config = JobConfig(judges=[fault_injector_judge(injector.url, name="oracle", model="oracle")], examples=0)
        summary = run_job(pairs_workspace, "judge", config, pair_ids={pool[4], pool[1]})
        assert (summary.pairs, summary.done) == (2, 2)
        assert verdicts(pairs_workspace) == {pool[1]: ("chosen", 1.0), pool[4]: ("chosen", 1.0)}
