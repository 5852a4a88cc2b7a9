"""The `synpref label` commands, import hygiene, and the adjudication and protocol pages."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time

import httpx
from fastapi.testclient import TestClient

from synpref.label import work_queue as queue
from synpref.label.app import create_app
from tests.label.conftest import ADMIN, add_users, csrf_of, login


def synpref(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synpref", *args], capture_output=True, text=True, timeout=120, **kwargs)


def test_importing_synpref_and_its_cli_loads_no_web_stack():
    code = (
        "import sys, synpref, synpref.cli, synpref.label; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'sqlalchemy', 'starlette', 'uvicorn', 'argon2'}))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_add_user_serve_and_export_from_the_command_line(small_workspace):
    root = str(small_workspace.root)
    assert synpref("label", "add-user", "boss", "-w", root, "--role", "admin", "--password", "admin-password").returncode == 0
    prompted = synpref("label", "add-user", "ann", "-w", root, input="annotator-password\nannotator-password\n")
    assert prompted.returncode == 0, prompted.stderr
    duplicate = synpref("label", "add-user", "ann", "-w", root, "--password", "annotator-password")
    assert (duplicate.returncode, duplicate.stderr.strip()) == (2, "error: user 'ann' already exists")
    short = synpref("label", "add-user", "eve", "-w", root, "--password", "short")
    assert (short.returncode, short.stderr.strip()) == (2, "error: password: at least 8 characters")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "synpref", "label", "serve", "-w", root, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    token = csrf_of(client.get("/login").text)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and server.poll() is None, "server did not start"
                    time.sleep(0.2)
            admin = client.post("/login", data={"csrf_token": token, "name": "boss", "password": "admin-password"}, follow_redirects=True)
            client.post("/admin/load", data={"csrf_token": csrf_of(admin.text), "split": "pool", "limit": "1"})
            client.cookies.clear()
            token = csrf_of(client.get("/login").text)
            page = client.post("/login", data={"csrf_token": token, "name": "ann", "password": "annotator-password"}, follow_redirects=True)
            submission = re.search(r'name="submission_id" value="([^"]+)"', page.text).group(1)
            client.post(page.url.path, data={"csrf_token": csrf_of(page.text), "submission_id": submission, "choice": "0"})
            assert "Nothing waiting for you" in client.get("/label").text
    finally:
        server.terminate()
        server.wait(timeout=30)

    output = small_workspace.root.parent / "gold.jsonl"
    exported = synpref("label", "export", "-w", root, "--output", str(output))
    summary = json.loads(exported.stdout)
    assert (summary["path"], summary["pairs"], summary["labels"], summary["added_to_workspace"]) == (str(output), 1, {"unsure": 1}, 1)
    [record] = [json.loads(line) for line in output.read_text().splitlines()]
    assert (record["label"], record["judgments"][0]["annotator"], record["judgments"][0]["choice"]) == ("unsure", "ann", "0")
    assert [pair.id for _split, pair in small_workspace.iter_pairs("discarded")] == [record["id"]]


def test_disagreement_is_listed_then_adjudicated(small_workspace):
    app = create_app(small_workspace.root)
    add_users(app, (*ADMIN, "admin"))
    with app.state.sessions.begin() as session:
        queue.load_pairs(session, small_workspace, queue.LoadOptions(limit=1, annotations_wanted=2), "boss")
        item = session.query(queue.QueueItem).one()
        for annotator, verdict in (("a", "chosen"), ("b", "rejected")):
            order = ("chosen", "rejected")
            queue.submit(session, item, annotator, order, {"choice": str(order.index(verdict) + 1), "submission_id": f"{annotator}-submission"})
    admin = TestClient(app)
    login(admin, *ADMIN)
    assert f"/admin/pair/{item.pair_id}" in admin.get("/admin/disagreements").text
    page = admin.get(f"/admin/pair/{item.pair_id}").text
    assert f"Pair <code>{item.pair_id}</code>: disputed" in page
    submission = re.search(r'name="submission_id" value="([^"]+)"', page).group(1)
    admin.post(f"/admin/pair/{item.pair_id}/adjudicate", data={
        "csrf_token": csrf_of(page), "submission_id": submission, "choice": "2", "rationale": "b is right"})
    assert f"/admin/pair/{item.pair_id}" not in admin.get("/admin/disagreements").text
    [record] = [json.loads(line) for line in admin.get("/admin/export.jsonl").text.splitlines()]
    assert record["label"] == "rejected"
    assert [(j["annotator"], j["kind"], j["verdict"]) for j in record["judgments"]] == [
        ("a", "label", "chosen"), ("b", "label", "rejected"), ("boss", "adjudication", "rejected")]


def test_protocol_is_the_workspace_guideline_and_one_click_from_labelling(small_workspace):
    app = create_app(small_workspace.root)
    add_users(app, (*ADMIN, "admin"))
    admin = TestClient(app)
    page = login(admin, *ADMIN)
    default = admin.get("/protocol").text
    assert "Correctness comes first" in default  # synpref/annotate's default guideline
    admin.post("/admin/protocol", data={"csrf_token": csrf_of(page.text), "protocol": "# House rules\n\n- be **fair**\n"})
    assert (small_workspace.root / "prompts" / "guideline.md").read_text() == "# House rules\n\n- be **fair**\n"
    assert "<h1>House rules</h1>\n<ul>\n<li>be <strong>fair</strong></li>" in admin.get("/protocol").text
    with app.state.sessions.begin() as session:
        queue.load_pairs(session, small_workspace, queue.LoadOptions(limit=1), "boss")
    label_page = admin.get("/label").text
    assert '<details class="protocol card"><summary>Protocol (how to decide)</summary>' in label_page
    assert "<li>be <strong>fair</strong></li>" in label_page
