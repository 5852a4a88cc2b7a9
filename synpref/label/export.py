"""The gold set: every labelled pair with its human judgments, derived from the append-only rows.

A pair's label is the latest adjudication if an admin made one, else the verdict all its
annotators agree on (each annotator's latest judgment counts), else "disputed" until adjudicated.
Verdicts are in the pair's original orientation: "chosen" means the humans agree with the
source's preference, "rejected" that they prefer the other response.

Back in the workspace (DESIGN.md: gold pairs have the human-preferred response as `chosen`,
see synpref/annotate/judge_agreement.py): a "chosen" pair joins `gold` as it is, a "rejected" pair
joins `gold` with its responses swapped (a new pair id; `meta.label.original_id` points back),
an undecidable one joins `discarded`, and a disputed one waits. A pair keeping its id leaves
its old split: the workspace shows the latest copy of each id (synpref/data/workspace.py).
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from synpref.data.models import Judgment, PreferencePair
from synpref.label.db import AttributeEdit, JudgmentRow, QueueItem

VERDICTS = ("chosen", "rejected", "unsure")


def latest_labels(rows: list[JudgmentRow]) -> dict[str, JudgmentRow]:
    """{annotator: their latest "label" judgment} (rows in insertion order)."""
    latest = {}
    for row in rows:
        if row.kind == "label":
            latest[row.annotator] = row
    return latest


def pair_label(rows: list[JudgmentRow]) -> str:
    adjudications = [row for row in rows if row.kind == "adjudication"]
    if adjudications:
        return adjudications[-1].verdict
    verdicts = {row.verdict for row in latest_labels(rows).values()}
    if len(verdicts) == 1:
        return verdicts.pop()
    return "disputed" if verdicts else "unlabelled"


def judgments_by_pair(session: Session) -> dict[str, list[JudgmentRow]]:
    by_pair: dict[str, list[JudgmentRow]] = defaultdict(list)
    for row in session.scalars(select(JudgmentRow).order_by(JudgmentRow.id)):
        by_pair[row.pair_id].append(row)
    return by_pair


def human_ratings(session: Session) -> dict[str, dict[str, str]]:
    """{annotator: {pair_id: latest verdict}} for the agreement statistics."""
    ratings: dict[str, dict[str, str]] = defaultdict(dict)
    for pair_id, rows in judgments_by_pair(session).items():
        for annotator, row in latest_labels(rows).items():
            ratings[annotator][pair_id] = row.verdict
    return dict(ratings)


def gold_records(session: Session) -> list[dict[str, Any]]:
    """One record per judged pair, in load order: the pair, its label and every judgment."""
    by_pair = judgments_by_pair(session)
    edits: dict[str, list[dict]] = defaultdict(list)
    for edit in session.scalars(select(AttributeEdit).order_by(AttributeEdit.id)):
        edits[edit.submission_id].append({
            "field": edit.field, "before": json.loads(edit.before_json), "after": json.loads(edit.after_json),
        })
    records = []
    for item in session.scalars(select(QueueItem).order_by(QueueItem.id)):
        rows = by_pair.get(item.pair_id)
        if not rows:
            continue
        pair = json.loads(item.pair_json)
        records.append({
            **pair,
            "label": pair_label(rows),
            "attributes": final_attributes(item, rows),
            "llm_attributes": json.loads(item.attributes_json) if item.attributes_json else None,
            "judgments": [_judgment_record(row, edits[row.submission_id]) for row in rows],
        })
    return records


def final_attributes(item: QueueItem, rows: list[JudgmentRow]) -> dict | None:
    """The latest human-reviewed attributes, else the LLM's."""
    for row in reversed(rows):
        if row.attributes_json:
            return json.loads(row.attributes_json)
    return json.loads(item.attributes_json) if item.attributes_json else None


def _judgment_record(row: JudgmentRow, edits: list[dict]) -> dict[str, Any]:
    judgment = Judgment(
        pair_id=row.pair_id, annotator_kind="human", annotator=row.annotator, verdict=row.verdict,
        rationale=row.rationale, shown_order=row.shown_order.split(","), created_at=as_utc(row.created_at),
    )
    return {
        **judgment.model_dump(mode="json"),
        "kind": row.kind,
        "choice": row.choice,
        "used_tools": row.used_tools,
        "attributes": json.loads(row.attributes_json) if row.attributes_json else None,
        "attribute_edits": edits,
    }


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time stored here was UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def write_jsonl(records: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    tmp.replace(path)
    return path


def export_gold(session: Session, workspace, output: Path | None = None) -> dict[str, Any]:
    """Write the gold set as JSONL (WORKSPACE/label/gold-<time>.jsonl unless `output` is given)
    and add decided pairs to the workspace splits."""
    records = gold_records(session)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    path = write_jsonl(records, output or Path(workspace.root) / "label" / f"gold-{stamp}.jsonl")
    added = add_to_workspace(workspace, records, stamp)
    labels = defaultdict(int)
    for record in records:
        labels[record["label"]] += 1
    return {"path": str(path), "pairs": len(records), "labels": dict(labels), "added_to_workspace": added}


def workspace_row(record: dict[str, Any]) -> tuple[str, PreferencePair] | None:
    """(split, pair) this labelled pair joins, or None while it is disputed."""
    label = record["label"]
    if label not in VERDICTS:
        return None
    original = PreferencePair.model_validate({k: record[k] for k in PreferencePair.model_fields if k in record})
    meta = {**original.meta, "label": {
        "original_id": original.id, "verdict": label, "judgments": len(record["judgments"]),
        "attributes": record["attributes"],
    }}
    if label == "unsure":
        return "discarded", original.model_copy(update={"meta": meta})
    if label == "chosen":
        return "gold", original.model_copy(update={"meta": meta})
    swapped = PreferencePair(
        conversation=original.conversation, chosen=original.rejected, rejected=original.chosen,
        source=original.source, meta=meta, reference=original.reference,
    )
    return "gold", swapped


def add_to_workspace(workspace, records: list[dict[str, Any]], stamp: str) -> int:
    """Add the decided pairs to the workspace as one shard; pairs already in that split are left
    out. Not through ingest, which would drop a gold pair as a duplicate of its own pool copy."""
    present = workspace.pair_table(columns=["id", "split"]).to_pylist()
    present = {(row["split"], row["id"]) for row in present}
    rows = []
    for record in records:
        target = workspace_row(record)
        if target is None or (target[0], target[1].id) in present:
            continue
        present.add((target[0], target[1].id))
        rows.append(target)
    return workspace.add_pairs(rows, f"label-{stamp}", spec="synpref label export", format="synpref-label")
