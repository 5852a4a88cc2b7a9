"""Roles on every route, CSRF on every form, SQL metacharacters verbatim (acceptance item 2).

The browser half of item 2 (hostile model text renders inert) is in test_browser.py.
"""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from synpref.label import work_queue as queue
from synpref.label.app import create_app
from synpref.label.db import JudgmentRow, User
from synpref.label.render import markdown
from tests.label.conftest import (
    ADMIN,
    ANNOTATOR,
    SQL_TEXT,
    XSS_RESPONSE,
    add_users,
    csrf_of,
    login,
    make_workspace,
    pair_record,
)


@pytest.fixture
def app(tmp_path):
    records = [pair_record("Say hi", XSS_RESPONSE, "hi"), pair_record(f"Quote {SQL_TEXT}", f"Sure: {SQL_TEXT}", "no")]
    workspace = make_workspace(tmp_path / "ws", records)
    app = create_app(workspace.root)
    add_users(app, (*ADMIN, "admin"), (*ANNOTATOR, "annotator"))
    with app.state.sessions.begin() as session:
        queue.load_pairs(session, workspace, queue.LoadOptions(), "boss")
    return app


def app_routes(app) -> list:
    """Every APIRoute the app serves (recent FastAPI keeps included routers as one entry each)."""
    found = []
    for entry in app.routes:
        if hasattr(entry, "methods"):
            found.append(entry)
        elif hasattr(entry, "original_router"):
            found.extend(app_routes(entry.original_router))
    return found


def routes(app, prefix: str = "") -> list[tuple[str, str]]:
    """(method, path) of every page route, path parameters filled with a queued pair id."""
    with app.state.sessions() as session:
        pair_id = session.query(queue.QueueItem.pair_id).first()[0]
    found = []
    for route in app_routes(app):
        if not route.path.startswith(prefix):
            continue
        for method in sorted(route.methods - {"HEAD"}):
            found.append((method, route.path.replace("{pair_id}", pair_id)))
    return found


ADMIN_ROUTES = {
    ("GET", "/admin"), ("POST", "/admin/load"), ("GET", "/admin/users"), ("POST", "/admin/users"),
    ("GET", "/admin/disagreements"), ("GET", "/admin/pair/{id}"), ("POST", "/admin/pair/{id}/adjudicate"),
    ("POST", "/admin/export"), ("GET", "/admin/export.jsonl"), ("GET", "/admin/protocol"), ("POST", "/admin/protocol"),
}


def test_every_admin_route_forbids_annotators_and_redirects_anonymous(app):
    admin_routes = routes(app, "/admin")
    assert {(m, re.sub(r"/[0-9a-f]{32}", "/{id}", p)) for m, p in admin_routes} == ADMIN_ROUTES
    annotator = TestClient(app)
    token = csrf_of(login(annotator, *ANNOTATOR).text)
    anonymous = TestClient(app)
    for method, path in admin_routes:
        response = annotator.request(method, path, data={"csrf_token": token} if method == "POST" else None, follow_redirects=False)
        assert response.status_code == 403, (method, path)
        response = anonymous.request(method, path, follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (303, "/login"), (method, path)


def test_every_page_but_login_needs_a_session(app):
    anonymous = TestClient(app)
    for method, path in routes(app):
        response = anonymous.request(method, path, follow_redirects=False)
        if path == "/login":
            assert response.status_code == (200 if method == "GET" else 403)
        else:
            assert (response.status_code, response.headers["location"]) == (303, "/login"), (method, path)


def test_every_form_post_without_or_with_a_wrong_csrf_token_is_rejected(app):
    admin = TestClient(app)
    login(admin, *ADMIN)
    posts = [path for method, path in routes(app) if method == "POST"]
    assert len(posts) == 9
    for path in posts:
        for data in ({}, {"csrf_token": "forged"}):
            response = admin.post(path, data={**data, "choice": "1", "submission_id": "s" * 20, "name": "x" * 9,
                                              "password": "y" * 9, "role": "annotator", "protocol": "changed"},
                                  follow_redirects=False)
            assert response.status_code == 403 and "CSRF" in response.text, path
    with app.state.sessions() as session:
        assert session.query(JudgmentRow).count() == 0 and session.query(User).count() == 2
    assert admin.get("/admin").status_code == 200  # the session survived: nothing was logged out


def test_session_cookie_is_httponly_and_samesite_and_pages_send_a_csp(app):
    client = TestClient(app)
    response = client.get("/login")
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert "script-src 'self'" in response.headers["content-security-policy"]


@pytest.mark.real_hashing
def test_passwords_are_stored_as_argon2id_hashes_with_the_library_defaults(tmp_path):
    from argon2 import PasswordHasher

    from synpref.label.db import open_database
    from synpref.label.users import add_user, authenticate

    sessions = open_database(f"sqlite:///{tmp_path / 'a.db'}")
    add_user(sessions, "someone", "correct horse battery", "annotator")
    with sessions() as session:
        stored = session.query(User).one().password_hash
    defaults = PasswordHasher()
    assert stored.startswith(f"$argon2id$v=19$m={defaults.memory_cost},t={defaults.time_cost},p={defaults.parallelism}$")
    assert "correct horse" not in stored
    assert authenticate(sessions, "someone", "correct horse battery").name == "someone"
    assert authenticate(sessions, "someone", "correct horse batterY") is None


def test_wrong_password_and_unknown_user_are_refused(app):
    client = TestClient(app)
    for name, password in [("boss", "wrong-password"), ("nobody", "whatever-1")]:
        token = csrf_of(client.get("/login").text)
        response = client.post("/login", data={"csrf_token": token, "name": name, "password": password})
        assert "wrong name or password" in response.text
        assert client.get("/label", follow_redirects=False).status_code == 303


def test_markdown_escapes_html_and_drops_script_links():
    rendered = str(markdown(XSS_RESPONSE))
    assert "<script" not in rendered and "<img" not in rendered and "javascript:" not in rendered.replace("[click me](javascript:", "")
    assert "&lt;script&gt;window.__xss = 1; alert('script')&lt;/script&gt;" in rendered
    assert "<pre><code class=\"language-html\">&lt;script&gt;" in rendered and "<li>item one</li>" in rendered
    assert "<a " not in rendered  # the javascript: link stays text


def shown(text: str, page: str, markdown: bool = False) -> bool:
    """`text` is on the page, exactly, as Jinja2 (or markdown-it for model text) escapes it."""
    if markdown:  # markdown-it escapes only & < > " and leaves ' alone
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;") in page
    return str(escape(text)) in page


def test_sql_metacharacters_in_every_text_field_are_stored_and_shown_verbatim(app):
    admin = TestClient(app)
    token = csrf_of(login(admin, *ADMIN).text)
    # user name and password
    name, password = f"user {SQL_TEXT}", f"pw {SQL_TEXT}"
    admin.post("/admin/users", data={"csrf_token": token, "name": name, "password": password, "role": "annotator"})
    assert shown(name, admin.get("/admin/users").text)
    # load filters are compared as text: "contains" finds exactly the pair quoting it (queued already)
    for field, already in (("source", 0), ("contains", 1), ("ids", 0)):
        response = admin.post("/admin/load", data={"csrf_token": token, "split": "pool", field: SQL_TEXT}, follow_redirects=True)
        assert f"loaded 0 pairs ({already} already in the queue)" in response.text, field
    # the protocol
    admin.post("/admin/protocol", data={"csrf_token": token, "protocol": f"Protocol {SQL_TEXT}"})
    assert (app.state.workspace.root / "prompts" / "guideline.md").read_text() == f"Protocol {SQL_TEXT}"
    # the labelling form, as the new user: rationale and the two free-text attributes
    annotator = TestClient(app)
    page = login(annotator, name, password)
    assert shown(f"Protocol {SQL_TEXT}", page.text, markdown=True)  # the protocol is Markdown
    pair_id = str(page.url).rsplit("/", 1)[1]
    submission = re.search(r'name="submission_id" value="([^"]+)"', page.text).group(1)
    annotator.post(f"/label/{pair_id}", data={
        "csrf_token": csrf_of(page.text), "submission_id": submission, "choice": "1", "rationale": f"because {SQL_TEXT}",
        "desired_attributes": f"attr {SQL_TEXT}", "guideline": f"guide {SQL_TEXT}",
    })
    with app.state.sessions() as session:
        [row] = session.query(JudgmentRow).all()
        assert (row.annotator, row.rationale) == (name, f"because {SQL_TEXT}")
        assert json.loads(row.attributes_json) == {"desired_attributes": [f"attr {SQL_TEXT}"], "guideline": f"guide {SQL_TEXT}"}
    page_of_pair = admin.get(f"/admin/pair/{pair_id}").text
    for text in (name, f"because {SQL_TEXT}", f"guide {SQL_TEXT}"):
        assert shown(text, page_of_pair), text
    [record] = [json.loads(line) for line in admin.get("/admin/export.jsonl").text.splitlines()]
    assert record["judgments"][0]["rationale"] == f"because {SQL_TEXT}"
    assert record["judgments"][0]["annotator"] == name
    # model text with metacharacters, shown on the labelling screen
    sql_pair = next(p for _s, p in app.state.workspace.iter_pairs() if SQL_TEXT in p.chosen.content)
    assert shown(f"Sure: {SQL_TEXT}", annotator.get(f"/label/{sql_pair.id}").text, markdown=True)
