"""The app in headless Chromium (Debian's package, driven by Playwright): acceptance items 1 and 2.

1. An admin loads 5 pairs; an annotator labels them with the keyboard, corrects one attribute,
   skips one and comes back to it; the admin exports; the exported file holds exactly those
   verdicts in the original chosen/rejected orientation. Screenshots go to a temp dir.
2. Hostile text (model output, a rationale, a user name) renders inert: no script runs, no
   dialog opens, the DOM holds no script, image or javascript: link made from it.
"""

from __future__ import annotations

import json
import re

import pytest

from synpref.annotate.store import samples_log
from synpref.label import work_queue as queue
from synpref.label.app import create_app
from synpref.label.db import QueueItem
from tests.label.conftest import (
    ADMIN,
    ANNOTATOR,
    XSS_RESPONSE,
    add_users,
    arithmetic_records,
    live_server,
    make_workspace,
    pair_record,
)

PLAN = ("chosen", "rejected", "unsure")  # the verdict for pair "What is n + n?" is PLAN[n % 3]
KEY_FOR_UNSURE = "0"


def log_in(page, base_url: str, name: str, password: str) -> None:
    page.goto(f"{base_url}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("button[type=submit]")


def write_machine_annotations(workspace) -> None:
    """LLM attributes for every pair and a pre-verification hint for each response of one."""
    for _split, pair in workspace.iter_pairs():
        samples_log(workspace.root, "attributes").append({"pair_id": pair.id, "judge": "j", "part": "s0", "ok": True, "answer": {
            "task_category": "math", "objectivity": "objective", "controversiality": "high",
            "desired_attributes": ["the right sum"], "guideline": "Add the numbers; the exact sum wins."}})
        for side, correct in (("chosen", True), ("rejected", False)):
            samples_log(workspace.root, "preverify").append({"pair_id": pair.id, "judge": "j", "part": side, "ok": True, "answer": {
                "correct": correct, "reason": f"recomputed: the sum is {'right' if correct else 'off by one'}"}})


def number_of(pair: dict) -> int:
    return int(re.search(r"What is (\d+) \+", pair["conversation"][0]["content"]).group(1))


def label_everything(page, base_url: str, pairs: dict[str, dict], screenshots) -> dict:
    """Skip the first pair, label the rest by keyboard (correcting one attribute), then the skipped one."""
    seen, corrected = [], None
    skipped = page.get_attribute("#judgment-form", "data-pair")
    with page.expect_navigation():
        page.click("#skip")
    while page.locator("#judgment-form").count():
        pair_id = page.get_attribute("#judgment-form", "data-pair")
        seen.append(pair_id)
        if len(seen) == 1:
            assert page.locator(f"a.skipped[href='/label/{skipped}']").count() == 1  # there to come back to
        if len(seen) == 2:
            page.select_option("#attr-controversiality", "low")
            page.evaluate("document.activeElement.blur()")  # keys typed into a field do not count
            corrected = pair_id
            page.screenshot(path=screenshots / "labelling-screen.png", full_page=True)
        verdict = PLAN[number_of(pairs[pair_id]) % 3]
        first_is_chosen = page.inner_text("#candidate-1 .markdown").strip() == pairs[pair_id]["chosen"]["content"]
        key = KEY_FOR_UNSURE if verdict == "unsure" else ("1" if (verdict == "chosen") == first_is_chosen else "2")
        page.keyboard.press(key)
        assert page.is_checked(f"#choice-{key}")
        with page.expect_navigation():
            page.keyboard.press("Enter")
    assert "Nothing waiting for you" in page.inner_text("main")
    return {"seen": seen, "skipped": skipped, "corrected": corrected}


def test_admin_loads_annotator_labels_by_keyboard_admin_exports(tmp_path, browser):
    workspace = make_workspace(tmp_path / "ws", arithmetic_records(8))
    write_machine_annotations(workspace)
    app = create_app(workspace.root)
    add_users(app, (*ADMIN, "admin"), (*ANNOTATOR, "annotator"))
    screenshots = tmp_path / "screenshots"
    screenshots.mkdir()
    with live_server(app) as base_url:
        admin = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        log_in(admin, base_url, *ADMIN)
        admin.fill("#load-limit", "5")
        with admin.expect_navigation():
            admin.click("#load")
        assert admin.inner_text("#flash") == "loaded 5 pairs (0 already in the queue)"
        with app.state.sessions() as session:
            pairs = {item.pair_id: json.loads(item.pair_json) for item in session.query(QueueItem)}

        annotator = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        log_in(annotator, base_url, *ANNOTATOR)
        assert annotator.inner_text("#progress").startswith("Judged by you: 0 · waiting for you: 5")
        done = label_everything(annotator, base_url, pairs, screenshots)
        assert len(done["seen"]) == 5 and done["seen"][-1] == done["skipped"]  # it came back last

        admin.goto(f"{base_url}/admin")
        progress_row = admin.inner_text("#annotators tbody tr:has(td.user-name:text-is('ann'))").split("\t")
        assert progress_row[:5] == ["ann", "annotator", "5", "0", "1"]
        with admin.expect_navigation():
            admin.click("#export")
        assert "exported 5 pairs" in admin.inner_text("#flash")
        admin.screenshot(path=screenshots / "admin-page.png", full_page=True)
    print(f"\nscreenshots: {screenshots}")

    [exported] = (workspace.root / "label").glob("gold-*.jsonl")
    records = [json.loads(line) for line in exported.read_text().splitlines()]
    expected = {pair_id: PLAN[number_of(pair) % 3] for pair_id, pair in pairs.items()}
    assert {r["id"]: r["label"] for r in records} == expected
    for record in records:
        [judgment] = record["judgments"]
        assert (judgment["annotator"], judgment["verdict"]) == ("ann", expected[record["id"]])
        assert (record["chosen"], record["rejected"]) == (pairs[record["id"]]["chosen"], pairs[record["id"]]["rejected"])
        chosen_position = judgment["shown_order"].index("chosen") + 1
        assert judgment["choice"] == {"chosen": str(chosen_position), "rejected": str(3 - chosen_position), "unsure": "0"}[judgment["verdict"]]
        edits = [{"field": "controversiality", "before": "high", "after": "low"}] if record["id"] == done["corrected"] else []
        assert judgment["attribute_edits"] == edits
    decided = [j["choice"] for r in records for j in r["judgments"] if j["choice"] != "0"]
    assert progress_row[5] == f"{100 * decided.count('1') / len(decided):.0f}%"  # position bias, 4 decided verdicts
    assert (screenshots / "labelling-screen.png").stat().st_size > 10_000
    assert (screenshots / "admin-page.png").stat().st_size > 10_000


def test_hostile_text_renders_inert(tmp_path, browser):
    rejected = (
        "<img src=x onerror=\"window.__xss = 5; alert('rejected')\"> [go](javascript:alert('rejected'))\n\n"
        "<JaVaScRiPt:alert('autolink')> [ref][x] [data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)\n\n"
        "[x]: JAVASCRIPT:alert('reference')\n"
    )
    records = [pair_record("Show me <script>window.__xss = 4; alert('prompt')</script> please", XSS_RESPONSE, rejected)]
    workspace = make_workspace(tmp_path / "ws", records)
    app = create_app(workspace.root)
    hostile_name = "<img src=x onerror=alert('name')>"
    add_users(app, (*ADMIN, "admin"), (hostile_name, "annotator-password", "annotator"))
    with app.state.sessions.begin() as session:
        queue.load_pairs(session, workspace, queue.LoadOptions(), "boss")
    context = browser.new_context()
    effects: list[str] = []
    page = context.new_page()
    context.on("page", lambda popup: effects.append(f"popup {popup.url}"))
    page.on("dialog", lambda dialog: (effects.append(f"dialog {dialog.message}"), dialog.dismiss()))
    page.on("pageerror", lambda error: effects.append(f"error {error}"))

    with live_server(app) as base_url:
        log_in(page, base_url, hostile_name, "annotator-password")
        assert_inert(page, effects)
        assert "<script>window.__xss = 1; alert('script')</script>" in page.inner_text("section.candidates")
        page.screenshot(path=tmp_path / "hostile-text.png", full_page=True)
        page.click("text=click me")  # plain text, not a link: nothing happens
        page.fill("#rationale", "<script>window.__xss = 6; alert('rationale')</script>")
        page.check("#choice-1")
        with page.expect_navigation():
            page.click("#submit-judgment")
        log_in(page, base_url, *ADMIN)
        for path in ("/admin", "/admin/users", f"/admin/pair/{next(workspace.iter_pairs())[1].id}"):
            page.goto(base_url + path)
            assert_inert(page, effects)
        assert "<script>window.__xss = 6; alert('rationale')</script>" in page.inner_text("#judgments")
        assert hostile_name in page.inner_text("#judgments")

    # The same checks catch a page that does run the payload (raw, on about:blank, no CSP):
    # they are not vacuous.
    control = browser.new_page()
    control.on("dialog", lambda dialog: (effects.append(f"dialog {dialog.message}"), dialog.dismiss()))
    control.set_content(XSS_RESPONSE.replace("\n\n", "<br>"))
    control.wait_for_timeout(200)
    assert control.evaluate("window.__xss") == 2 and effects == ["dialog script", "dialog in code", "dialog img"]
    control.close()


def assert_inert(page, effects: list[str]) -> None:
    page.wait_for_load_state("load")
    page.wait_for_timeout(100)  # give an onerror handler the chance to fire
    assert effects == []
    assert page.evaluate("window.__xss") is None
    assert page.locator("main script, main img, main iframe, main [onerror]").count() == 0
    assert page.locator("a[href^='javascript:' i], a[href^='data:' i]").count() == 0


@pytest.fixture(autouse=True)
def _browser_available(browser):
    """Every test here needs Chromium; the `browser` fixture skips with a message without it."""
