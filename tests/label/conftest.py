"""Fixtures for the annotation app: a small workspace, logged-in clients, live servers,
a throwaway PostgreSQL server and a headless Chromium."""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from synpref.data.ingest import IngestOptions, ingest
from synpref.data.workspace import Workspace
from tests.conftest import live_server  # noqa: F401  (used by the label tests)

ADMIN = ("boss", "admin-password")
ANNOTATOR = ("ann", "annotator-password")
XSS_RESPONSE = (
    "Here you go:\n\n<script>window.__xss = 1; alert('script')</script>\n\n"
    "<img src=x onerror=\"window.__xss = 2; alert('img')\">\n\n"
    "[click me](javascript:window.__xss=3;alert('link'))\n\n"
    "```html\n<script>alert('in code')</script>\n```\n\n- item one\n- item two"
)
SQL_TEXT = "x'); DROP TABLE judgments; -- \" OR 1=1 /* % _ \\ ;"


def pair_record(prompt: str, chosen: str, rejected: str) -> dict:
    return {
        "conversation": [{"role": "user", "content": prompt}],
        "chosen": {"role": "assistant", "content": chosen},
        "rejected": {"role": "assistant", "content": rejected},
        "source": "fixture",
    }


def make_workspace(root: Path, records: list[dict], split: str = "pool") -> Workspace:
    workspace = Workspace.init(root, name="label-test")
    path = root / "input.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    ingest(workspace, IngestOptions([str(path)], split=split, workers=1))
    path.unlink()
    return workspace


def arithmetic_records(count: int) -> list[dict]:
    return [pair_record(f"What is {i} + {i}?", f"{i} + {i} = {2 * i}.", f"{i} + {i} = {2 * i + 1}.") for i in range(count)]


def pytest_configure(config):
    config.addinivalue_line("markers", "real_hashing: keep argon2-cffi's default (slow) password hashing")


@pytest.fixture(autouse=True)
def fast_password_hashing(request, monkeypatch):
    """Cheap argon2 parameters for the users tests create (the defaults cost ~0.25 s a hash on a
    busy 2-core box); tests marked `real_hashing` keep the defaults."""
    if request.node.get_closest_marker("real_hashing") is None:
        from argon2 import PasswordHasher

        from synpref.label import users

        monkeypatch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def small_workspace(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path / "ws", arithmetic_records(6))


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def login(client, name: str, password: str):
    """Log `client` (TestClient or httpx.Client) in through the form; returns the landing page."""
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"csrf_token": token, "name": name, "password": password}, follow_redirects=True)
    assert response.status_code == 200 and "/login" not in str(response.url), response.text[:500]
    return response


def add_users(app, *users: tuple[str, str, str]) -> None:
    from synpref.label.users import add_user

    for name, password, role in users:
        add_user(app.state.sessions, name, password, role)




@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server (Debian's binaries) in a temp dir on a free port, or a skip."""
    initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdbs:
        pytest.skip("PostgreSQL binaries not found (/usr/lib/postgresql/*/bin; Debian package `postgresql`, "
                    "which .ci/run installs): the PostgreSQL run is skipped")
    bin_dir = Path(initdbs[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="synpref-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as `postgres`
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no `postgres` user to run PostgreSQL as: the PostgreSQL run is skipped")
        os.chown(root, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = root / "data"
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    try:
        subprocess.run([*as_user, bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True)
        subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-l", root / "log", "-o", options, "-w", "start"],
                       check=True, capture_output=True)
    except subprocess.CalledProcessError as error:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL could not be started ({error.stderr.decode(errors='replace').strip()[-300:]}): skipped")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the throwaway server."""
    import psycopg

    name = "t" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_server.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return f"{postgres_server}/{name}"


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found (Debian package `chromium`, which .ci/run installs)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()
