"""The engine over pairs passed as values: their own ids, logs in the caller's directory, resumable."""

from __future__ import annotations

import json

from synpref.annotate.config import JobConfig
from synpref.annotate.runner import annotate_pairs
from synpref.annotate.store import JUDGMENTS, SAMPLES, ResultLog
from synpref.data.models import Message, PreferencePair, Reference
from tests.annotate.conftest import fault_injector_judge
from tests.annotate.fault_injector import FaultInjector


def _pair(number: int, *, flipped: bool) -> PreferencePair:
    good, bad = f"good answer {number}", f"bad answer {number}"
    return PreferencePair(conversation=[Message(role="user", content=f"Question {number}?")],
                          chosen=Message(role="assistant", content=bad if flipped else good),
                          rejected=Message(role="assistant", content=good if flipped else bad),
                          source="in-memory", meta={"flipped": flipped}, reference=Reference(answer=good))


def _prefers_good(body: dict) -> str:
    """Picks the candidate whose text starts with "good" in the target pair (not the examples)."""
    target = body["messages"][-1]["content"].split("## Pair to judge", 1)[1]
    first = target.split("### Candidate 1", 1)[1].split("### Candidate 2", 1)[0].strip()
    return json.dumps({"preferred": "Candidate 1" if first.startswith("good") else "Candidate 2", "reason": "scripted"})


def test_pairs_passed_as_values_are_judged_under_their_ids_and_a_rerun_sends_only_what_failed(tmp_path):
    pairs = [_pair(n, flipped=n % 2 == 1) for n in range(4)]
    gold = [_pair(10, flipped=False)]
    directory, cache = tmp_path / "stage" / "judging", tmp_path / "cache" / "llm"
    # The second request fails for good (no retries): that unit stays open, the others finish.
    with FaultInjector(["ok", "500"], answer=_prefers_good) as server:
        config = JobConfig(judges=[fault_injector_judge(server.url, max_retries=0)], examples=1)

        def run():
            return annotate_pairs("judge", config, iter(pairs + pairs[:1]), gold=gold, directory=directory, cache_dir=cache)

        first = run()
        second = run()
    assert (first.pairs, first.units, first.done, first.request_failed, first.judgments) == (4, 4, 3, 1, 3)
    assert (second.already_done, second.done, second.cached, second.judgments) == (3, 1, 0, 1)
    assert server.behaviours() == ["ok", "500", "ok", "ok", "ok"]  # the failed unit asked again, nothing else
    assert len(set(server.answered_hashes())) == 4
    assert all("good answer 10" in r["body"]["messages"][-1]["content"] for r in server.received)  # the gold example

    judged = {r["pair_id"]: r["verdict"] for r in ResultLog(directory / JUDGMENTS).read()}
    assert judged == {p.id: "rejected" if p.meta["flipped"] else "chosen" for p in pairs}
    assert sorted(p.name for p in directory.iterdir()) == sorted([SAMPLES, JUDGMENTS, "samples.parquet", "judgments.parquet"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "stage"]  # no workspace, no JSONL of pairs

    (directory / JUDGMENTS).unlink()
    with FaultInjector() as silent:
        config = JobConfig(judges=[fault_injector_judge(silent.url)], examples=1)
        again = annotate_pairs("judge", config, pairs, gold=gold, directory=directory, cache_dir=tmp_path / "empty-cache")
    assert (again.already_done, again.judgments, silent.received) == (4, 4, [])  # the samples log alone resumes
