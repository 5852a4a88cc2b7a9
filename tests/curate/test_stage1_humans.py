"""Humans in Stage 1: undecided pairs go to the annotation app, the loop waits, labels come back.

Stage 1 runs in a subprocess that is killed with SIGKILL on the way; two annotators label the
queue over the app's HTTP routes, an admin exports, and the next run finishes the iteration.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synpref.curate.known_answers import flip_labels, objective_records
from synpref.curate.stage1 import exported_labels, last_state
from synpref.data.ingest import IngestOptions, ingest
from synpref.data.workspace import Workspace
from tests.conftest import write_jsonl
from tests.curate.conftest import GOLD_PAIRS, TEST_RM

pytest.importorskip("fastapi")

BUDGET = 3
CONFIG = {
    "judges": {"judges": [{"name": "rules", "backend": "verifier", "model": "rules", "api_key_env": None}]},
    "rm": {**TEST_RM, "max_steps": 1}, "shard_size": 20, "k_max": 2,
    "stage1": {"iterations": 1, "seed_size": 12, "human_budget": BUDGET},
}
RUN = ("import json, sys\nfrom synpref.curate.config import CurateConfig\nfrom synpref.curate.stage1 import run_stage1\n"
       "from synpref.data.workspace import Workspace\n"
       "summaries = run_stage1(Workspace(sys.argv[1]), CurateConfig.model_validate_json(sys.argv[2]), log=lambda *_: None)\n"
       "print(json.dumps(summaries[-1]))\n")


def _workspace(root: Path) -> Workspace:
    """Gold with references; a pool where only the sums carry one (the repeats are left to humans)."""
    workspace = Workspace.init(root / "ws", name="stage1-humans")
    pool = flip_labels(objective_records(40, seed=2), 0.3, seed=3)
    pool = [{k: v for k, v in r.items() if k != "reference" or r["meta"]["task"] == "sum"} for r in pool]
    ingest(workspace, IngestOptions([str(write_jsonl(root / "gold.jsonl", objective_records(GOLD_PAIRS, seed=1, offset=10_000)))],
                                    split="gold", workers=1))
    ingest(workspace, IngestOptions([str(write_jsonl(root / "pool.jsonl", pool))], split="pool", workers=1))
    return workspace


def _stage1(workspace: Workspace, *, kill_when: Path | None = None) -> dict | None:
    """Run Stage 1 in a subprocess; with `kill_when`, SIGKILL it once that file exists."""
    command = [sys.executable, "-c", RUN, str(workspace.root), json.dumps(CONFIG)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_when is not None:
        deadline = time.monotonic() + 240
        while not kill_when.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        return None
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _label_over_http(workspace: Workspace, truth: dict[str, bool]) -> dict[str, str]:
    """Two annotators label what the queue serves them (the right answer), an admin exports."""
    from fastapi.testclient import TestClient

    from synpref.label import work_queue
    from synpref.label.app import create_app
    from tests.label.conftest import add_users, csrf_of, login

    app = create_app(workspace.root)
    add_users(app, ("ann-1", "password-one", "annotator"), ("ann-2", "password-two", "annotator"), ("boss", "admin-password", "admin"))
    clients = {name: TestClient(app) for name in ("ann-1", "ann-2")}
    for name, password in (("ann-1", "password-one"), ("ann-2", "password-two")):
        login(clients[name], name, password)
    labelled: dict[str, str] = {}
    turn = 0
    while True:
        name = ("ann-1", "ann-2")[turn % 2]
        page = clients[name].get("/label", follow_redirects=True)
        if "/label/" not in str(page.url):
            if all("/label/" not in str(c.get("/label", follow_redirects=True).url) for c in clients.values()):
                break
            turn += 1
            continue
        pair_id = str(page.url).rsplit("/", 1)[1]
        right = "rejected" if truth[pair_id] else "chosen"
        order = work_queue.shown_order(app.state.secret, name, pair_id)
        submission = page.text.split('name="submission_id" value="')[1].split('"')[0]
        response = clients[name].post(f"/label/{pair_id}", data={"csrf_token": csrf_of(page.text), "submission_id": submission,
                                                               "choice": str(order.index(right) + 1)})
        assert response.status_code in (200, 303), response.text[:300]
        labelled[pair_id] = name
        turn += 1
    admin = TestClient(app)
    login(admin, "boss", "admin-password")
    export = admin.post("/admin/export", data={"csrf_token": csrf_of(admin.get("/admin").text)}, follow_redirects=True)
    assert export.status_code == 200 and "exported" in export.text
    return labelled


def test_stage1_waits_for_human_labels_and_finishes_with_them_despite_sigkill(tmp_path):
    workspace = _workspace(tmp_path)
    truth = {pair.id: pair.meta["flipped"] for _, pair in workspace.iter_pairs("pool")}
    iteration = workspace.root / "runs" / "stage1" / "iter-1"

    _stage1(workspace, kill_when=iteration / "gold_p.parquet")  # killed mid-iteration
    waiting = _stage1(workspace)
    assert waiting == {"iteration": 1, "status": "waiting", "waiting_for_human_labels": BUDGET, "sent_to_humans": BUDGET,
                       "human_labels_exported": 0}
    assert not (iteration / "summary.json").exists()
    sent = pq.read_table(iteration / "human.parquet").column("id").to_pylist()
    judged = {r["id"]: r for r in pq.read_table(iteration / "judgments.parquet").to_pylist()}
    assert len(sent) == BUDGET and all(judged[i]["verdict"] == "unsure" for i in sent)
    gold_p = [r["gold_p"] for r in pq.read_table(iteration / "retrieved.parquet").to_pylist() if judged[r["id"]]["verdict"] == "unsure"]
    assert sorted(pq.read_table(iteration / "human.parquet").column("gold_p").to_pylist()) == sorted(gold_p)[:BUDGET]
    request = json.loads((workspace.label_requests_dir / "stage1-iter-1.json").read_text())
    assert request["ids"] == sent

    labelled = _label_over_http(workspace, truth)
    assert set(labelled) == set(sent) and set(labelled.values()) == {"ann-1", "ann-2"}  # each pair once, both annotators
    assert exported_labels(workspace, set(sent)) == {i: "rejected" if truth[i] else "chosen" for i in sent}

    _stage1(workspace, kill_when=iteration / "state.parquet")  # killed again, perhaps after the state, before the summary
    finished = _stage1(workspace)
    assert finished["iteration"] == 1 and "status" not in finished
    assert finished["sent_to_humans"] == BUDGET and finished["added_by"]["human"] == BUDGET
    assert finished["added_by"]["verifier"] > 0  # the sums were the verifier's
    rows = last_state(workspace)["rows"]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))  # every pair labelled once
    human = {r["id"]: r for r in rows if r["origin"] == "iter-1 human"}
    assert set(human) == set(sent)
    assert all(r["flipped"] == truth[i] and r["verdict"] == ("rejected" if truth[i] else "chosen") for i, r in human.items())
    assert all(i in last_state(workspace)["silver"] for i in sent)
    assert _stage1(workspace) == finished  # finished: a rerun changes nothing and asks nobody again
    assert sorted(p.name for p in workspace.label_requests_dir.iterdir()) == ["stage1-iter-1.json"]
    assert os.path.getsize(workspace.root / "annotations.db") > 0
