"""Login throttling under concurrent tries, and who a stranger's failures can lock out.

Tries from one address at once must not all pass the limit check before any is counted (the
check and the count are one transaction), on SQLite and PostgreSQL; and failures from one
address must not lock the account for its owner at another.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from fastapi.testclient import TestClient

from synpref.label import users
from synpref.label.app import create_app
from tests.label.conftest import add_users, csrf_of, live_server

OWNER = ("owner", "owner-password")
TRIES = 16


class CountingHasher:
    """The fast test hasher, counting verifications and slowed so concurrent tries overlap."""

    def __init__(self, hasher):
        self.hasher, self.verified, self.lock = hasher, 0, threading.Lock()

    def verify(self, password_hash, password):
        with self.lock:
            self.verified += 1
        time.sleep(0.05)
        return self.hasher.verify(password_hash, password)


def try_login(client, name: str, password: str):
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"csrf_token": token, "name": name, "password": password}, follow_redirects=False)


def wrong_tries_at_once(base_url: str) -> list[int]:
    """TRIES clients, each with its CSRF token in hand, post a wrong password at the same moment."""
    barrier = threading.Barrier(TRIES)

    def one_try(_number: int) -> int:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            token = csrf_of(client.get("/login").text)
            barrier.wait()
            form = {"csrf_token": token, "name": OWNER[0], "password": "wrong-password"}
            return client.post("/login", data=form).status_code

    with ThreadPoolExecutor(TRIES) as pool:
        return sorted(pool.map(one_try, range(TRIES)))


def concurrent_wrong_passwords(workspace, db_url: str | None, monkeypatch) -> tuple[list[int], int]:
    app = create_app(workspace.root, db_url)
    add_users(app, (*OWNER, "annotator"))
    hasher = CountingHasher(users._hasher)
    monkeypatch.setattr(users, "_hasher", hasher)
    with live_server(app) as base_url:
        statuses = wrong_tries_at_once(base_url)
    return statuses, hasher.verified


def test_concurrent_wrong_passwords_verify_only_up_to_the_limit_on_sqlite(small_workspace, monkeypatch):
    statuses, verified = concurrent_wrong_passwords(small_workspace, None, monkeypatch)
    assert statuses == [200] * 5 + [429] * 11
    assert verified == 5


def test_concurrent_wrong_passwords_verify_only_up_to_the_limit_on_postgresql(small_workspace, postgres_url, monkeypatch):
    statuses, verified = concurrent_wrong_passwords(small_workspace, postgres_url, monkeypatch)
    assert statuses == [200] * 5 + [429] * 11
    assert verified == 5


def test_a_strangers_failures_do_not_lock_the_owner_out(small_workspace):
    app = create_app(small_workspace.root)
    add_users(app, (*OWNER, "annotator"))
    stranger = TestClient(app, client=("203.0.113.7", 40000))
    owner = TestClient(app, client=("198.51.100.2", 40000))
    for _ in range(5):
        assert try_login(stranger, OWNER[0], "wrong-password").status_code == 200
    response = try_login(stranger, *OWNER)  # the stranger's address is slowed, even with the password
    assert (response.status_code, response.headers["retry-after"]) == (429, "30")
    response = try_login(owner, *OWNER)
    assert (response.status_code, response.headers["location"]) == (303, "/label")


def test_failures_spread_over_addresses_lock_the_account_at_fifty(small_workspace):
    app = create_app(small_workspace.root)
    add_users(app, (*OWNER, "annotator"))
    for number in range(50):
        guesser = TestClient(app, client=(f"10.0.{number // 4}.{number % 4}", 40000))
        assert try_login(guesser, OWNER[0], "wrong-password").status_code == 200
    response = try_login(TestClient(app, client=("198.51.100.2", 40000)), *OWNER)
    assert (response.status_code, response.headers["retry-after"]) == (429, "30")


def test_a_success_gives_the_address_back_only_its_own_try(small_workspace):
    app = create_app(small_workspace.root)
    add_users(app, (*OWNER, "annotator"))
    client = TestClient(app, client=("198.51.100.2", 40000))
    for number in range(19):  # one short of the address limit of 20, under other names
        assert try_login(client, f"guess-{number}", "wrong-password").status_code == 200
    assert try_login(client, *OWNER).status_code == 303  # counted, then given back: still 19
    assert try_login(client, "guess-19", "wrong-password").status_code == 200
    response = try_login(client, "guess-20", "wrong-password")
    assert (response.status_code, response.headers["retry-after"]) == (429, "30")
