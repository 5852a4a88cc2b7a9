"""The queue, the append-only judgments and the gold export, below the web layer."""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from synpref.annotate.store import samples_log
from synpref.label import work_queue as queue
from synpref.label.app import create_app
from synpref.label.db import AttributeEdit, Claim, JudgmentRow, QueueItem, utc_now
from synpref.label.export import export_gold, gold_records
from tests.label.conftest import add_users, csrf_of, login

SECRET = "test-secret"


def pair_ids(workspace) -> list[str]:
    """Ids of the arithmetic fixture, ordered by the number in the prompt."""
    pairs = sorted((pair for _s, pair in workspace.iter_pairs()), key=lambda p: int(p.conversation[0].content.split()[2]))
    return [pair.id for pair in pairs]


def write_attributes(workspace, pair_id: str, objectivity: str, controversiality: str) -> None:
    answer = {"task_category": "math", "objectivity": objectivity, "controversiality": controversiality,
              "desired_attributes": ["correct sum"], "guideline": "check the arithmetic"}
    samples_log(workspace.root, "attributes").append({"pair_id": pair_id, "judge": "j", "part": "s0", "ok": True, "final": True, "answer": answer})


def loaded(small_workspace, annotations_wanted: int = 1, **options):
    app = create_app(small_workspace.root)
    with app.state.sessions.begin() as session:
        added, already = queue.load_pairs(session, small_workspace, queue.LoadOptions(annotations_wanted=annotations_wanted, **options), "boss")
    return app, added, already


def judge(app, annotator: str, pair_id: str, choice: str, submission_id: str | None = None, **fields) -> bool:
    with app.state.sessions.begin() as session:
        item = session.query(QueueItem).filter_by(pair_id=pair_id).one()
        order = queue.shown_order(SECRET, annotator, pair_id)
        form = {"choice": choice, "submission_id": submission_id or f"{annotator}-{pair_id}-{choice}", **fields}
        return queue.submit(session, item, annotator, order, form)


def next_for(app, annotator: str) -> str | None:
    with app.state.sessions() as session:
        return queue.next_pair_id(session, annotator)


def test_objective_low_controversiality_first_then_unknown_then_subjective(small_workspace):
    ids = pair_ids(small_workspace)
    write_attributes(small_workspace, ids[0], "subjective", "low")
    write_attributes(small_workspace, ids[1], "objective", "high")
    write_attributes(small_workspace, ids[2], "objective", "low")
    write_attributes(small_workspace, ids[3], "subjective", "high")
    app, added, already = loaded(small_workspace)
    assert (added, already) == (6, 0)
    served = []
    while (pair_id := next_for(app, "ann")) is not None:
        served.append(ids.index(pair_id))
        judge(app, "ann", pair_id, "1")
    # priorities: p2 0, p1 2, p4 4, p5 4 (no attributes), p0 6, p3 8; load order breaks ties
    assert served == [2, 1, 4, 5, 0, 3]


def test_load_by_ids_filter_and_limit_and_reload(small_workspace):
    ids = pair_ids(small_workspace)
    app, added, _ = loaded(small_workspace, ids=[ids[4], ids[1]])
    assert added == 2
    with app.state.sessions.begin() as session:
        assert queue.load_pairs(session, small_workspace, queue.LoadOptions(contains="What is 3 +"), "boss") == (1, 0)
        assert queue.load_pairs(session, small_workspace, queue.LoadOptions(contains="What is 3 +"), "boss") == (0, 1)
        assert queue.load_pairs(session, small_workspace, queue.LoadOptions(split="gold"), "boss") == (0, 0)
        assert queue.load_pairs(session, small_workspace, queue.LoadOptions(source="other"), "boss") == (0, 0)
        assert queue.load_pairs(session, small_workspace, queue.LoadOptions(limit=2), "boss")[0] == 2
        assert queue.load_pairs(session, small_workspace, queue.LoadOptions(), "boss") == (1, 5)


def test_reloading_picks_up_attributes_written_since(small_workspace):
    ids = pair_ids(small_workspace)
    app, _, _ = loaded(small_workspace, ids=ids[:2])
    assert next_for(app, "ann") in ids[:2]
    write_attributes(small_workspace, ids[1], "objective", "low")
    with app.state.sessions.begin() as session:
        assert queue.load_pairs(session, small_workspace, queue.LoadOptions(ids=ids[:2]), "boss") == (0, 2)
    with app.state.sessions() as session:
        item = session.query(QueueItem).filter_by(pair_id=ids[1]).one()
        assert (item.priority, json.loads(item.attributes_json)["controversiality"]) == (0, "low")
    assert next_for(app, "ann") == ids[1]  # now objective and low: served first


def test_k_annotators_per_pair_and_nobody_judges_twice(small_workspace):
    ids = pair_ids(small_workspace)
    app, _, _ = loaded(small_workspace, annotations_wanted=2, ids=[ids[0]])
    assert next_for(app, "a") == next_for(app, "b") == next_for(app, "c") == ids[0]
    judge(app, "a", ids[0], "1")
    assert next_for(app, "a") is None
    judge(app, "b", ids[0], "2")
    assert next_for(app, "b") is None and next_for(app, "c") is None  # two judgments: done


def test_a_pair_open_on_one_screen_is_not_served_to_another(small_workspace):
    ids = pair_ids(small_workspace)
    app, _, _ = loaded(small_workspace, ids=ids[:2])
    with app.state.sessions.begin() as session:
        first = queue.next_pair_id(session, "a")
        queue.claim(session, "a", first)
        second = queue.next_pair_id(session, "b")
        queue.claim(session, "b", second)
        assert {first, second} == set(ids[:2])
        assert queue.next_pair_id(session, "c") is None and queue.waiting_count(session, "c") == 0
        assert queue.next_pair_id(session, "a") == first  # its own claim does not hide it
    with app.state.sessions.begin() as session:
        queue.skip(session, "b", second)  # a skip releases the claim
        assert queue.next_pair_id(session, "c") == second
        stale = utc_now() - timedelta(minutes=queue.CLAIM_MINUTES + 1)
        session.execute(update(Claim).where(Claim.annotator == "a").values(created_at=stale))
        assert queue.waiting_count(session, "c") == 2  # an abandoned page frees its pair


def test_skipped_pair_comes_back_after_the_rest(small_workspace):
    ids = pair_ids(small_workspace)
    app, _, _ = loaded(small_workspace, ids=ids[:3])
    first = next_for(app, "ann")
    with app.state.sessions.begin() as session:
        queue.skip(session, "ann", first)
    order = []
    while (pair_id := next_for(app, "ann")) is not None:
        order.append(pair_id)
        judge(app, "ann", pair_id, "0")
    assert order == [p for p in ids[:3] if p != first] + [first]
    assert next_for(app, "other") is None  # k = 1: every pair has its judgment


def test_judgments_are_appended_never_overwritten(small_workspace):
    ids = pair_ids(small_workspace)
    app, _, _ = loaded(small_workspace, ids=[ids[0]])
    assert judge(app, "ann", ids[0], "1", submission_id="first-submission")
    assert not judge(app, "ann", ids[0], "1", submission_id="first-submission")  # resent form
    assert judge(app, "ann", ids[0], "2", submission_id="second-submission", rationale="changed my mind", used_tools="on")
    with app.state.sessions() as session:
        rows = session.query(JudgmentRow).order_by(JudgmentRow.id).all()
        records = gold_records(session)
    order = queue.shown_order(SECRET, "ann", ids[0])
    assert [(r.choice, r.verdict, r.shown_order) for r in rows] == [("1", order[0], ",".join(order)), ("2", order[1], ",".join(order))]
    assert [(j["verdict"], j["used_tools"], j["rationale"]) for j in records[0]["judgments"]] == [
        (order[0], False, None), (order[1], True, "changed my mind")]
    assert records[0]["label"] == order[1]  # the annotator's latest verdict counts


def test_attribute_corrections_are_recorded_field_by_field(small_workspace):
    ids = pair_ids(small_workspace)
    write_attributes(small_workspace, ids[0], "objective", "high")
    app, _, _ = loaded(small_workspace, ids=[ids[0]])
    judge(app, "ann", ids[0], "1", task_category="math", objectivity="objective", controversiality="low",
          desired_attributes="correct sum\nshows the work\n", guideline="check the arithmetic")
    with app.state.sessions() as session:
        edits = [(e.field, json.loads(e.before_json), json.loads(e.after_json)) for e in session.query(AttributeEdit)]
        [record] = gold_records(session)
    assert edits == [("controversiality", "high", "low"), ("desired_attributes", ["correct sum"], ["correct sum", "shows the work"])]
    assert record["attributes"]["controversiality"] == "low"
    assert record["llm_attributes"]["controversiality"] == "high"
    assert [e["field"] for e in record["judgments"][0]["attribute_edits"]] == ["controversiality", "desired_attributes"]


def test_export_keeps_original_orientation_and_fills_workspace_splits(small_workspace):
    ids = pair_ids(small_workspace)
    app, _, _ = loaded(small_workspace, ids=ids[:4], annotations_wanted=2)
    want = {ids[0]: "chosen", ids[1]: "rejected", ids[2]: "unsure"}
    for annotator in ("a", "b"):
        for pair_id, verdict in want.items():
            order = queue.shown_order(SECRET, annotator, pair_id)
            judge(app, annotator, pair_id, "0" if verdict == "unsure" else str(order.index(verdict) + 1))
    judge(app, "a", ids[3], "1")
    judge(app, "b", ids[3], "2")  # a and b disagree on ids[3]: disputed, not exported to a split
    by_id = {pair.id: pair for _s, pair in small_workspace.iter_pairs("pool")}
    with app.state.sessions() as session:
        summary = export_gold(session, small_workspace)
        again = export_gold(session, small_workspace)
    assert (summary["pairs"], summary["labels"], summary["added_to_workspace"]) == (4, {"chosen": 1, "rejected": 1, "unsure": 1, "disputed": 1}, 3)
    assert again["added_to_workspace"] == 0  # nothing twice
    records = [json.loads(line) for line in open(summary["path"])]
    assert {r["id"]: r["label"] for r in records} == {**want, ids[3]: "disputed"}
    for record in records:
        assert (record["chosen"], record["rejected"]) == (by_id[record["id"]].chosen.model_dump(), by_id[record["id"]].rejected.model_dump())
    gold = {pair.meta["label"]["original_id"]: pair for _s, pair in small_workspace.iter_pairs("gold")}
    discarded = [pair.id for _s, pair in small_workspace.iter_pairs("discarded")]
    assert sorted(gold) == sorted([ids[0], ids[1]]) and discarded == [ids[2]]
    still_pooled = {pair.id for _s, pair in small_workspace.iter_pairs("pool")}
    assert still_pooled == set(by_id) - {ids[0], ids[2]}  # same id, new split: moved, not copied
    assert gold[ids[0]].id == ids[0] and gold[ids[0]].chosen == by_id[ids[0]].chosen
    assert gold[ids[1]].chosen == by_id[ids[1]].rejected and gold[ids[1]].rejected == by_id[ids[1]].chosen  # human-preferred first


def test_an_annotator_never_sees_another_verdict(small_workspace):
    ids = pair_ids(small_workspace)
    app, _, _ = loaded(small_workspace, ids=[ids[0]], annotations_wanted=2)
    add_users(app, ("first-annotator", "password-1", "annotator"), ("second-annotator", "password-2", "annotator"))
    first, second = TestClient(app), TestClient(app)
    page = login(first, "first-annotator", "password-1")
    submission = page.text.split('name="submission_id" value="')[1].split('"')[0]
    first.post(f"/label/{ids[0]}", data={"csrf_token": csrf_of(page.text), "submission_id": submission, "choice": "1",
                                         "rationale": "UNIQUE-RATIONALE-OF-THE-FIRST"})
    page = login(second, "second-annotator", "password-2")
    assert str(page.url).endswith(f"/label/{ids[0]}")
    assert "UNIQUE-RATIONALE-OF-THE-FIRST" not in page.text and "first-annotator" not in page.text
    assert not any(f'value="{c}" checked' in page.text or f'id="choice-{c}" checked' in page.text for c in "120")
