"""The labelling queue: which pairs are loaded, who sees what next, and what they submit.

Objective, low-controversiality pairs are served first (DESIGN.md Stage 1, step 1): they are
the ones humans verify fastest and most reliably. A pair stays in an annotator's queue until
that annotator judged it or `annotations_wanted` other annotators judged it or have it open on
their screen; a skipped pair goes to the back of the skipper's queue, so it comes back once the
rest is done.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import case, delete, distinct, exists, func, select, update
from sqlalchemy.orm import Session

from synpref.data.models import Attributes, PreferencePair, TaskCategory
from synpref.label.db import AttributeEdit, Claim, JudgmentRow, QueueItem, Skip, utc_now

ATTRIBUTE_FIELDS = tuple(Attributes.model_fields)  # task_category, objectivity, ...
ATTRIBUTE_CHOICES = {
    "task_category": [c.value for c in TaskCategory],
    "objectivity": ["objective", "subjective"],
    "controversiality": ["low", "medium", "high"],
}
CHOICES = {"1": "Candidate 1", "2": "Candidate 2", "0": "can't decide"}
# What the labelling and adjudication forms send. Anything else is refused rather than ignored,
# so a hand-made form (`annotator=`, `kind=adjudication`) gets a clear no.
FORM_FIELDS = {"csrf_token", "submission_id", "choice", "rationale", "used_tools", *ATTRIBUTE_FIELDS}
# A pair open on someone's screen is not served to others for this long (so five annotators
# starting at once get five different pairs); an abandoned page frees its pair after it.
CLAIM_MINUTES = 20


class BadSubmission(ValueError):
    """A form value outside what the page offers: answered 400 with this message."""


@dataclass
class LoadOptions:
    """Which workspace pairs an admin loads into the queue."""

    split: str | None = "pool"
    ids: list[str] = field(default_factory=list)  # when given, only these pairs
    source: str | None = None
    contains: str | None = None  # a substring of the conversation
    task_category: str | None = None  # filters on the LLM attributes
    objectivity: str | None = None
    limit: int | None = None
    annotations_wanted: int = 1  # k annotators per pair


def priority(attributes: dict[str, Any] | None) -> int:
    """Lower first: objective before unknown before subjective, then by controversiality."""
    attributes = attributes or {}
    objectivity = {"objective": 0, "subjective": 2}.get(attributes.get("objectivity"), 1)
    controversiality = {"low": 0, "high": 2}.get(attributes.get("controversiality"), 1)
    return 3 * objectivity + controversiality


def machine_annotations(workspace_root) -> tuple[dict[str, dict], dict[str, dict]]:
    """({pair_id: LLM attributes}, {pair_id: {side: [pre-verification]}}) from synpref.annotate.

    Both are optional: a workspace nobody ran `synpref annotate` on has neither.
    """
    try:
        from synpref.annotate.store import latest, samples_log
    except ImportError:
        return {}, {}
    attributes = {r["pair_id"]: r["answer"] for r in samples_log(workspace_root, "attributes").read() if r.get("ok")}
    hints: dict[str, dict[str, list]] = {}
    records = latest(samples_log(workspace_root, "preverify").read(), "pair_id", "judge", "part")
    for record in records:
        if record.get("ok") and record.get("part") in ("chosen", "rejected"):
            side = hints.setdefault(record["pair_id"], {}).setdefault(record["part"], [])
            side.append({"judge": record["judge"], **record["answer"]})
    return attributes, hints


def load_pairs(session: Session, workspace, options: LoadOptions, loaded_by: str) -> tuple[int, int]:
    """Add matching workspace pairs to the queue; returns (added, already queued).

    A pair already queued gets the machine annotations written since (attributes from a later
    `synpref annotate` run, say) and the priority they imply; its judgments are untouched.
    """
    attributes, hints = machine_annotations(workspace.root)
    queued = set(session.scalars(select(QueueItem.pair_id)))
    wanted_ids = set(options.ids)
    added = already = 0
    for _split, pair in workspace.iter_pairs(None if wanted_ids else options.split):
        if not _matches(pair, attributes.get(pair.id), options, wanted_ids):
            continue
        if pair.id in queued:
            already += 1
            _refresh(session, pair.id, attributes.get(pair.id), hints.get(pair.id))
            continue
        queued.add(pair.id)
        session.add(QueueItem(
            pair_id=pair.id,
            pair_json=pair.model_dump_json(),
            attributes_json=_json_or_none(attributes.get(pair.id)),
            preverify_json=_json_or_none(hints.get(pair.id)),
            priority=priority(attributes.get(pair.id)),
            annotations_wanted=options.annotations_wanted,
            loaded_by=loaded_by,
        ))
        added += 1
        if options.limit is not None and added >= options.limit:
            break
    return added, already


def load_requests(session: Session, workspace, loaded: set[str]) -> int:
    """Load the label requests steps wrote (WORKSPACE/label/requests/*.json, e.g. Stage 1's pairs
    no judge decided) that are not in `loaded` yet; returns the pairs added. Loading is
    idempotent (a queued pair stays as it is), so a restarted app loading them again is harmless."""
    directory = workspace.label_requests_dir
    added = 0
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        if path.name in loaded:
            continue
        try:
            request = json.loads(path.read_text())
            ids = [str(i) for i in request["ids"]]
            wanted = int(request.get("annotations_wanted", 1))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half-written or foreign: looked at again next time
        options = LoadOptions(split=None, ids=ids, annotations_wanted=max(1, wanted))
        added += load_pairs(session, workspace, options, loaded_by=str(request.get("requested_by", path.stem))[:200])[0]
        loaded.add(path.name)
    return added


def _refresh(session: Session, pair_id: str, attributes: dict | None, hints: dict | None) -> None:
    if attributes is None and hints is None:
        return  # nothing machine-written for it yet: keep what was loaded
    values = {"preverify_json": _json_or_none(hints)} if hints is not None else {}
    if attributes is not None:
        values |= {"attributes_json": _json_or_none(attributes), "priority": priority(attributes)}
    session.execute(update(QueueItem).where(QueueItem.pair_id == pair_id).values(**values))


def _matches(pair: PreferencePair, attributes: dict | None, options: LoadOptions, wanted_ids: set[str]) -> bool:
    if wanted_ids and pair.id not in wanted_ids:
        return False
    if options.source and pair.source != options.source:
        return False
    if options.contains and not any(options.contains in m.content for m in pair.conversation):
        return False
    for name in ("task_category", "objectivity"):
        wanted = getattr(options, name)
        if wanted and (attributes or {}).get(name) != wanted:
            return False
    return True


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _open_for(annotator: str):
    """Conditions for a queue item still waiting for `annotator`: not judged by them, and fewer
    than `annotations_wanted` others have judged it or have it open."""
    judged_by_annotator = select(JudgmentRow.pair_id).where(JudgmentRow.annotator == annotator)
    labels = (
        select(func.count(distinct(JudgmentRow.annotator)))
        .where(JudgmentRow.pair_id == QueueItem.pair_id, JudgmentRow.kind == "label")
        .correlate(QueueItem)
        .scalar_subquery()
    )
    # A claim stops counting once its holder judged *this* pair (then `labels` counts them).
    # Correlated with the claim's own row: matched against the outer queue item instead, the
    # subquery saw the holder's judgments of every pair, and one judgment anywhere freed
    # all their open pairs for others.
    holder_judged_it = exists().where(JudgmentRow.pair_id == Claim.pair_id, JudgmentRow.annotator == Claim.annotator)
    holders = (
        select(func.count(distinct(Claim.annotator)))
        .where(
            Claim.pair_id == QueueItem.pair_id, Claim.annotator != annotator,
            Claim.created_at > _claim_cutoff(), ~holder_judged_it,
        )
        .correlate(QueueItem)
        .scalar_subquery()
    )
    return [QueueItem.pair_id.not_in(judged_by_annotator), labels + holders < QueueItem.annotations_wanted]


def _claim_cutoff():
    return utc_now() - timedelta(minutes=CLAIM_MINUTES)


def may_judge(session: Session, annotator: str, pair_id: str) -> bool:
    """Whether `annotator` may open and judge this pair: it still waits for them, or they have
    it open (served to them before `CLAIM_MINUTES` ran out), or they judged it before (a
    changed mind is a new row). Not a pair that other annotators fill."""
    mine = [
        exists().where(JudgmentRow.pair_id == pair_id, JudgmentRow.annotator == annotator),
        exists().where(Claim.pair_id == pair_id, Claim.annotator == annotator, Claim.created_at > _claim_cutoff()),
        exists().where(QueueItem.pair_id == pair_id, *_open_for(annotator)),
    ]
    return any(session.scalar(select(condition)) for condition in mine)


def next_pair_id(session: Session, annotator: str) -> str | None:
    last_skip = (
        select(func.max(Skip.id))
        .where(Skip.annotator == annotator, Skip.pair_id == QueueItem.pair_id)
        .scalar_subquery()
    )
    query = (
        select(QueueItem.pair_id)
        .where(*_open_for(annotator))
        .order_by(case((last_skip.is_(None), 0), else_=1), last_skip, QueueItem.priority, QueueItem.id)
        .limit(1)
    )
    return session.scalars(query).first()


def waiting_count(session: Session, annotator: str) -> int:
    return session.scalar(select(func.count()).select_from(QueueItem).where(*_open_for(annotator)))


def judged_count(session: Session, annotator: str) -> int:
    query = select(func.count(distinct(JudgmentRow.pair_id))).where(JudgmentRow.annotator == annotator)
    return session.scalar(query)


def skipped_pair_ids(session: Session, annotator: str) -> list[str]:
    """Pairs the annotator skipped and has not judged yet, oldest skip first."""
    query = (
        select(Skip.pair_id)
        .where(Skip.annotator == annotator, *_open_for(annotator))
        .join(QueueItem, QueueItem.pair_id == Skip.pair_id)
        .group_by(Skip.pair_id)
        .order_by(func.min(Skip.id))
    )
    return list(session.scalars(query))


def skip(session: Session, annotator: str, pair_id: str) -> None:
    session.add(Skip(annotator=annotator, pair_id=pair_id))
    session.execute(delete(Claim).where(Claim.annotator == annotator, Claim.pair_id == pair_id))


def claim(session: Session, annotator: str, pair_id: str) -> None:
    session.add(Claim(annotator=annotator, pair_id=pair_id))


def shown_order(secret: str, annotator: str, pair_id: str) -> tuple[str, str]:
    """Which response is Candidate 1: random per (annotator, pair), stable across reloads.

    Keyed by the server secret, so the order cannot be worked out from the ids; it is recorded
    with every judgment, so position bias stays measurable.
    """
    digest = hmac.new(secret.encode(), f"{annotator}\x1f{pair_id}".encode(), hashlib.sha256).digest()
    return ("chosen", "rejected") if digest[0] % 2 == 0 else ("rejected", "chosen")


def edited_attributes(original: dict | None, form: dict[str, str]) -> tuple[dict | None, list[tuple[str, Any, Any]]]:
    """(attributes as the annotator left them, [(field, before, after)] for each change)."""
    original = original or {}
    result: dict[str, Any] = {}
    edits = []
    for name in ATTRIBUTE_FIELDS:
        value = _attribute_value(name, form.get(name, ""))
        if value in ("", []) and name not in original:
            continue  # an empty field the LLM did not fill either: nothing to record
        result[name] = value
        if value != original.get(name):
            edits.append((name, original.get(name), value))
    return (result or None), edits


def _attribute_value(name: str, text: str) -> Any:
    if name == "desired_attributes":
        return [line.strip() for line in text.splitlines() if line.strip()]
    if name in ATTRIBUTE_CHOICES and text and text not in ATTRIBUTE_CHOICES[name]:
        raise BadSubmission(f"{name}: {text!r} is not one of {', '.join(ATTRIBUTE_CHOICES[name])}")
    return text


def submission_stored(session: Session, submission_id: str) -> bool:
    return session.scalar(select(JudgmentRow.id).where(JudgmentRow.submission_id == submission_id)) is not None


def submit(session: Session, item: QueueItem, annotator: str, order: tuple[str, str], form: dict[str, str], kind: str = "label") -> bool:
    """Append one judgment and its attribute edits; False when this submission was stored before.

    Two copies of one submission racing each other: the unique `submission_id` makes the
    second transaction fail with IntegrityError, which the caller treats as "stored before".
    """
    unexpected = set(form) - FORM_FIELDS
    if unexpected:
        raise BadSubmission(f"unexpected form fields: {', '.join(sorted(unexpected))}")
    choice = form.get("choice", "")
    if choice not in CHOICES:
        raise BadSubmission("choose Candidate 1, Candidate 2 or can't decide")
    submission_id = form.get("submission_id", "")
    if not 8 <= len(submission_id) <= 64:
        raise BadSubmission("the form lost its submission id; reload the page")
    if submission_stored(session, submission_id):
        return False  # a resent form (double click, retry): stored once already
    original = json.loads(item.attributes_json) if item.attributes_json else None
    attributes, edits = edited_attributes(original, form)
    session.add(JudgmentRow(
        submission_id=submission_id, pair_id=item.pair_id, annotator=annotator, kind=kind,
        choice=choice, verdict=order[int(choice) - 1] if choice != "0" else "unsure",
        shown_order=",".join(order), rationale=form.get("rationale") or None,
        used_tools=form.get("used_tools") == "on", attributes_json=_json_or_none(attributes),
    ))
    session.flush()  # the edits refer to this row: insert it first
    for name, before, after in edits:
        session.add(AttributeEdit(
            submission_id=submission_id, pair_id=item.pair_id, annotator=annotator, field=name,
            before_json=json.dumps(before, ensure_ascii=False), after_json=json.dumps(after, ensure_ascii=False),
        ))
    return True
