"""Sessions, secrets, pair ownership and login throttling (issue 13, label findings)."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import threading
import time

import pytest
from fastapi.testclient import TestClient

from synpref.label import users
from synpref.label import work_queue as queue
from synpref.label.app import create_app
from synpref.label.db import JudgmentRow, QueueItem
from synpref.label.export import export_gold
from synpref.label.logins import LoginThrottle
from tests.label.conftest import add_users, csrf_of, login
from tests.label.test_queue import judge, loaded, next_for, pair_ids

A = ("first-annotator", "password-1")
B = ("second-annotator", "password-2")


@pytest.fixture
def two_annotators(small_workspace):
    app, _, _ = loaded(small_workspace, ids=pair_ids(small_workspace)[:3], annotations_wanted=1)
    add_users(app, (*A, "annotator"), (*B, "annotator"))
    return app


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def submission_form(page_text: str, **fields) -> dict:
    submission = re.search(r'name="submission_id" value="([^"]+)"', page_text).group(1)
    return {"csrf_token": csrf_of(page_text), "submission_id": submission, "choice": "1", **fields}


# --- 1. logout ends the session on the server --------------------------------------------


def test_logout_ends_the_session_on_the_server(two_annotators):
    client = TestClient(two_annotators)
    page = login(client, *A)
    stolen = client.cookies.get("synpref_session")
    client.post("/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    replay = TestClient(two_annotators, cookies={"synpref_session": stolen})
    for path in ("/label", "/protocol"):
        response = replay.get(path, follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (303, "/login"), path


# --- 2. the signing secret in its own private file, the database private ------------------


def test_secret_is_a_private_file_and_the_database_is_created_private(small_workspace):
    old_umask = os.umask(0o022)  # the usual default: files would come out world-readable
    try:
        app = create_app(small_workspace.root)
        add_users(app, (*A, "annotator"))  # a write: SQLite creates its -wal and -shm files
        secret_file = small_workspace.root / "label" / "session-secret"
        assert mode(secret_file) == 0o600
        assert secret_file.read_text().strip() == app.state.secret and len(app.state.secret) == 64
        database = small_workspace.root / "annotations.db"
        with app.state.sessions() as session:  # hold a connection open so -wal and -shm exist
            session.query(QueueItem).count()
            assert {name: mode(f"{database}{name}") for name in ("", "-wal", "-shm")} == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
        tables = {row[0] for row in sqlite3.connect(database).execute("select name from sqlite_master where type='table'")}
        assert "settings" not in tables
        assert create_app(small_workspace.root).state.secret == app.state.secret  # every server shares it
    finally:
        os.umask(old_umask)


def test_an_old_database_loses_its_stored_secret_and_its_loose_permissions(small_workspace):
    database = small_workspace.root / "annotations.db"
    with sqlite3.connect(database) as connection:  # the layout older versions wrote
        connection.execute("create table settings (name varchar(60) primary key, value text)")
        connection.execute("insert into settings values ('secret_key', 'leaked-secret')")
    os.chmod(database, 0o644)
    app = create_app(small_workspace.root)
    assert app.state.secret != "leaked-secret"
    assert sqlite3.connect(database).execute("select count(*) from settings").fetchone() == (0,)
    assert mode(database) == 0o600


# --- 3. claims per pair; nobody judges a pair that is not open to them -------------------


def test_a_claim_still_counts_after_its_holder_judged_another_pair(two_annotators, small_workspace):
    ids = pair_ids(small_workspace)
    with two_annotators.state.sessions.begin() as session:
        queue.claim(session, "a", ids[0])
    judge(two_annotators, "a", ids[0], "1")
    with two_annotators.state.sessions.begin() as session:
        queue.claim(session, "a", ids[1])  # a now has ids[1] open; k = 1
        assert queue.waiting_count(session, "b") == 1
    assert next_for(two_annotators, "b") == ids[2]


def test_k1_two_annotators_through_the_web_get_different_pairs(two_annotators, small_workspace):
    first, second = TestClient(two_annotators), TestClient(two_annotators)
    page = login(first, *A)
    first.post(page.url.path, data=submission_form(page.text))
    a_second = first.get("/label").url.path  # a judged one pair and opened the next
    b_first = login(second, *B).url.path
    assert a_second != b_first and {a_second, b_first} <= {f"/label/{i}" for i in pair_ids(small_workspace)}


def test_another_annotators_pair_cannot_be_opened_or_submitted_by_url(two_annotators):
    owner, intruder = TestClient(two_annotators), TestClient(two_annotators)
    owned = login(owner, *A).url.path
    own_page = login(intruder, *B)
    assert own_page.url.path != owned
    response = intruder.get(owned)
    assert (response.status_code, response.text) == (403, '{"detail":"this pair is not open to you: take the next one from /label"}')
    forged = submission_form(own_page.text, annotator=A[0], kind="adjudication")
    for data in (submission_form(own_page.text), forged):
        response = intruder.post(owned, data=data, follow_redirects=False)
        assert response.status_code == 403
    response = intruder.post(f"{owned}/skip", data={"csrf_token": csrf_of(own_page.text)}, follow_redirects=False)
    assert response.status_code == 403
    with two_annotators.state.sessions() as session:
        assert session.query(JudgmentRow).count() == 0


def test_forged_annotator_and_kind_fields_are_refused(two_annotators):
    client = TestClient(two_annotators)
    page = login(client, *B)
    response = client.post(page.url.path, data=submission_form(page.text, annotator=A[0], kind="adjudication"))
    assert (response.status_code, response.text) == (400, "unexpected form fields: annotator, kind")
    response = client.post(page.url.path, data=submission_form(page.text), follow_redirects=False)
    assert response.status_code == 303
    with two_annotators.state.sessions() as session:
        assert [(r.annotator, r.kind) for r in session.query(JudgmentRow)] == [(B[0], "label")]
    again = client.get(page.url.path)  # a changed mind: one's own judged pair stays open
    assert again.status_code == 200 and "You judged this pair before" in again.text


# --- 4. login throttling and bounded hashing ----------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def try_login(client, name: str, password: str):
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"csrf_token": token, "name": name, "password": password}, follow_redirects=False)


def test_failed_logins_back_off_per_account(two_annotators):
    clock = FakeClock()
    two_annotators.state.throttle = LoginThrottle(two_annotators.state.sessions, clock=clock)
    client = TestClient(two_annotators)
    for _ in range(5):
        response = try_login(client, A[0], "wrong-password")
        assert response.status_code == 200 and "wrong name or password" in response.text
    for password in ("wrong-password", A[1]):  # locked: not even the right password is checked
        response = try_login(client, A[0], password)
        assert (response.status_code, response.headers["retry-after"]) == (429, "30")
        assert "too many failed logins: try again in 30 seconds" in response.text
    assert try_login(client, B[0], B[1]).status_code == 303  # other accounts are not locked
    clock.now += 30
    assert try_login(client, A[0], "wrong-password").status_code == 200
    assert try_login(client, A[0], A[1]).headers["retry-after"] == "60"  # doubled
    clock.now += 60
    response = try_login(client, A[0], A[1])
    assert (response.status_code, response.headers["location"]) == (303, "/label")
    assert try_login(client, A[0], "wrong-password").status_code == 200  # a success clears the count


def test_failed_logins_back_off_per_address(two_annotators):
    two_annotators.state.throttle = LoginThrottle(two_annotators.state.sessions, clock=FakeClock())
    client = TestClient(two_annotators)
    for number in range(20):  # a new name each time: only the address links them
        assert try_login(client, f"guess-{number}", "wrong-password").status_code == 200
    response = try_login(client, A[0], A[1])
    assert (response.status_code, response.headers["retry-after"]) == (429, "30")


def test_password_hashing_runs_at_most_two_at_a_time(two_annotators, monkeypatch):
    running, peak, lock = [0], [0], threading.Lock()

    class SlowHasher:
        def verify(self, _hash, _password):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1
            return True

    monkeypatch.setattr(users, "_hasher", SlowHasher())
    threads = [threading.Thread(target=users.authenticate, args=(two_annotators.state.sessions, A[0], "x")) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == 2


# --- 7. a gold export of a pool pair: one pair, one split ---------------------------------


def test_a_pool_pair_exported_as_gold_is_listed_once_in_gold(small_workspace):
    ids = pair_ids(small_workspace)
    app, _, _ = loaded(small_workspace, ids=[ids[0]])
    order = queue.shown_order("test-secret", "ann", ids[0])
    judge(app, "ann", ids[0], str(order.index("chosen") + 1))  # agrees with the source: same id
    with app.state.sessions() as session:
        assert export_gold(session, small_workspace)["added_to_workspace"] == 1
    listed = [(split, pair.id) for split, pair in small_workspace.iter_pairs()]
    assert len(listed) == 6 and len({pair_id for _, pair_id in listed}) == 6
    assert ("gold", ids[0]) in listed and ("pool", ids[0]) not in listed
    assert [pair.id for _, pair in small_workspace.iter_pairs("gold")] == [ids[0]]
    assert len(list(small_workspace.iter_pairs("pool"))) == 5
    table = small_workspace.pair_table(columns=["id", "split"])
    assert table.num_rows == 6 and {"id": ids[0], "split": "gold"} in table.to_pylist()
