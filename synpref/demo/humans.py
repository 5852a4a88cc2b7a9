"""The demo's humans: simulated annotators who label what Stage 1 sends to the annotation app.

Stage 1 with a human budget queues the pairs no judge decided (WORKSPACE/label/requests/) and
waits for their labels. The demo has no people, so three simulated annotators, each right 90%
of the time against the generator's truth (like those behind the demo's gold), label every
queued pair through the app's own queue and submission code; where they disagree a simulated
lead adjudicates by their majority; then the gold set is exported as `synpref label export`
does, and Stage 1 picks the labels up. Submissions have fixed ids, so a rerun stores nothing twice.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

ANNOTATORS = ("simulated-1", "simulated-2", "simulated-3")
LEAD = "simulated-lead"
ACCURACY = 0.9
ORDER = ("chosen", "rejected")  # Candidate 1 is the stored chosen response


def label_requests(workspace, truth: Path, seed: int = 0) -> dict[str, Any]:
    """Label every queued pair not labelled yet, adjudicate disagreements, export; returns counts."""
    from sqlalchemy import select

    from synpref.label import work_queue
    from synpref.label.db import QueueItem, default_url, open_database
    from synpref.label.export import export_gold, judgments_by_pair, pair_label

    flipped = {row["id"]: row["flipped"] for row in map(json.loads, truth.read_text().splitlines())}
    sessions = open_database(default_url(workspace.root))
    with sessions.begin() as session:
        work_queue.load_requests(session, workspace, set())
    labelled = adjudicated = 0
    with sessions.begin() as session:
        items = list(session.scalars(select(QueueItem).where(QueueItem.pair_id.in_(list(flipped)))))
        for item in items:
            right = "rejected" if flipped[item.pair_id] else "chosen"
            votes = []
            for annotator in ANNOTATORS:
                vote = right if _draw(seed, annotator, item.pair_id) < ACCURACY else _other(right)
                votes.append(vote)
                labelled += work_queue.submit(session, item, annotator, ORDER, _form(annotator, item.pair_id, vote))
        session.flush()
        rows = judgments_by_pair(session)
        for item in items:
            if pair_label(rows.get(item.pair_id, [])) == "disputed":
                said = [row.verdict for row in rows[item.pair_id] if row.kind == "label"]
                majority = max(("chosen", "rejected"), key=said.count)
                adjudicated += work_queue.submit(session, item, LEAD, ORDER, _form(LEAD, item.pair_id, majority), kind="adjudication")
    with sessions() as session:
        exported = export_gold(session, workspace)
    sessions.kw["bind"].dispose()
    return {"judgments": labelled, "adjudicated": adjudicated, "exported": exported["labels"]}


def _draw(seed: int, annotator: str, pair_id: str) -> float:
    digest = hashlib.sha256(f"{seed}:{annotator}:{pair_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _other(verdict: str) -> str:
    return "rejected" if verdict == "chosen" else "chosen"


def _form(annotator: str, pair_id: str, verdict: str) -> dict[str, str]:
    submission = hashlib.sha256(f"{annotator}:{pair_id}".encode()).hexdigest()[:32]
    return {"choice": str(ORDER.index(verdict) + 1), "submission_id": submission}
