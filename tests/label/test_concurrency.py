"""20 annotators submit 50 judgments each at once through real HTTP (acceptance item 3).

A live uvicorn server on loopback; each annotator is a thread with its own HTTP client and
session. All log in, wait at a barrier, then post as fast as they can; each also resends its
first form at the end (a double click), which must not add a row. Against SQLite and, when a
throwaway PostgreSQL server can be started, against PostgreSQL.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import distinct, func, select

from synpref.label import work_queue as queue
from synpref.label.app import create_app
from synpref.label.db import JudgmentRow, QueueItem
from synpref.label.users import add_user
from tests.label.conftest import arithmetic_records, csrf_of, live_server, make_workspace

ANNOTATORS = 20
JUDGMENTS_EACH = 50


def annotate(base_url: str, name: str, pair_ids: list[str], barrier: threading.Barrier) -> tuple[list[int], float, float]:
    """Log in, then post one judgment per pair; returns (status codes, start, end of the posting)."""
    with httpx.Client(base_url=base_url, timeout=120) as client:
        token = csrf_of(client.get("/login").text)
        client.post("/login", data={"csrf_token": token, "name": name, "password": f"{name}-password"})
        token = csrf_of(client.get("/protocol").text)  # the session's token after login
        barrier.wait()
        started = time.perf_counter()
        forms = [
            {"csrf_token": token, "submission_id": uuid.uuid4().hex, "choice": "120"[i % 3], "rationale": f"{name} on {i}"}
            for i in range(len(pair_ids))
        ]
        statuses = [client.post(f"/label/{pair_id}", data=form).status_code for pair_id, form in zip(pair_ids, forms)]
        statuses.append(client.post(f"/label/{pair_ids[0]}", data=forms[0]).status_code)  # resent
        return statuses, started, time.perf_counter()


def run_annotators(tmp_path, db_url: str | None) -> dict:
    workspace = make_workspace(tmp_path / "ws", arithmetic_records(JUDGMENTS_EACH))
    app = create_app(workspace.root, db_url)
    names = [f"annotator{i:02d}" for i in range(ANNOTATORS)]
    for name in names:
        add_user(app.state.sessions, name, f"{name}-password", "annotator")
    with app.state.sessions.begin() as session:
        assert queue.load_pairs(session, workspace, queue.LoadOptions(annotations_wanted=ANNOTATORS), "boss") == (JUDGMENTS_EACH, 0)
    with app.state.sessions() as session:
        pair_ids = list(session.scalars(select(QueueItem.pair_id).order_by(QueueItem.id)))
    barrier = threading.Barrier(ANNOTATORS)
    with live_server(app) as base_url, ThreadPoolExecutor(ANNOTATORS) as pool:
        results = [future.result() for future in [pool.submit(annotate, base_url, name, pair_ids, barrier) for name in names]]
    statuses = [status for codes, _start, _end in results for status in codes]
    seconds = max(end for *_, end in results) - min(start for _, start, _end in results)
    with app.state.sessions() as session:
        count = lambda column: session.scalar(select(func.count(distinct(column))))  # noqa: E731
        return {
            "statuses": {s: statuses.count(s) for s in set(statuses)},
            "rows": session.scalar(select(func.count()).select_from(JudgmentRow)),
            "submissions": count(JudgmentRow.submission_id),
            "annotator_pairs": session.scalar(select(func.count()).select_from(
                select(JudgmentRow.annotator, JudgmentRow.pair_id).distinct().subquery())),
            "per_annotator": set(session.execute(select(func.count()).select_from(JudgmentRow).group_by(JudgmentRow.annotator)).scalars()),
            "per_pair": set(session.execute(select(func.count()).select_from(JudgmentRow).group_by(JudgmentRow.pair_id)).scalars()),
            "rationales": count(JudgmentRow.rationale),
            "seconds": seconds,
        }


def check(result: dict) -> None:
    total = ANNOTATORS * JUDGMENTS_EACH
    print(f"\n{total} judgments + {ANNOTATORS} resent forms over HTTP in {result['seconds']:.1f} s; stored {result['rows']}")
    assert result["statuses"] == {303: total + ANNOTATORS}  # every post answered with the redirect to /label
    assert result["rows"] == result["submissions"] == result["annotator_pairs"] == result["rationales"] == 1000
    assert result["per_annotator"] == {JUDGMENTS_EACH} and result["per_pair"] == {ANNOTATORS}


def test_twenty_annotators_at_once_on_sqlite(tmp_path):
    check(run_annotators(tmp_path, None))


def test_twenty_annotators_at_once_on_postgresql(tmp_path, postgres_url):
    check(run_annotators(tmp_path, postgres_url))


@pytest.fixture(autouse=True)
def _quiet_httpx_logs(caplog):
    caplog.set_level("WARNING", logger="httpx")
