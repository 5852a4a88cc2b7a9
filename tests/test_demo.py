"""`synpref demo --tiny` end to end: every step runs on real (tiny) models, and a rerun resumes."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

pytest.importorskip("torch")


def test_tiny_demo_runs_every_step_and_resumes(tmp_path):
    workspace = tmp_path / "demo"
    command = [sys.executable, "-m", "synpref", "demo", "--tiny", "--workspace", str(workspace)]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:] + first.stdout[-3000:]
    steps = json.loads((workspace / "runs" / "demo" / "steps.json").read_text())
    assert list(steps) == ["data", "ingest", "attributes", "stage1", "stage2", "ablation", "train", "evaluate", "report"]
    assert steps["ingest"]["counts"]["pool"] == {"read": 120, "kept": 120, "duplicates": 0, "contaminated": 0, "quarantined": 0}
    assert steps["evaluate"]["held_out_pairs"] == 40
    assert list(steps["ablation"]["accuracy"]) == ["raw", "kept", "kept+flipped", "gold", "random", "longer wins"]
    assert steps["ablation"]["noise"]["decided"] == 120  # Stage 2 decides every pool pair
    page = (workspace / "report.html").read_text()
    assert page.index("Does curation pay?") < page.index("<h2>Steps</h2>")  # the report leads with the ablation
    assert "Judges, measured on each fold&#39;s loop gold" in page or "Judges, measured on each fold's loop gold" in page
    gate = json.loads((workspace / "runs" / "judge-gate" / "gating.json").read_text())
    assert [(row["judge"], row["kind"], row["asked"]) for row in gate] == [("smollm2", "llm", 6), ("verifier", "verifier", 24)]
    assert gate[1]["accuracy"] >= 0.95 and gate[1]["weight"] > 0  # the generated objective pairs carry references
    stage1 = steps["stage1"]
    assert len(stage1["iterations"]) == 3 and all(s["added_by"]["verifier"] >= 1 for s in stage1["iterations"])
    assert stage1["sources"]["verifier"]["agree_with_truth"] >= 0.99
    assert len(stage1["held_out"]) == 3
    assert "Stage 1: labels added per iteration" in page
    from synpref.annotate import llamacpp

    engine = "llama.cpp server (openai backend)" if llamacpp.available() else "transformers (local backend)"
    assert steps["attributes"]["judge"] == engine
    assert page.count("src='data:image/png;base64,") + page.count('src="data:image/png;base64,') >= 2
    assert 'src="gold_accuracy.png"' not in page  # every plot is inlined
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0
    assert (again.stderr + again.stdout).count("done earlier, skipped") == 9


@pytest.mark.parametrize("installed", [False, True])
def test_the_demo_judge_is_the_llamacpp_server_only_where_the_extra_is_installed(installed, monkeypatch, tmp_path):
    from synpref.annotate import llamacpp
    from synpref.demo.run import Budget, DemoOptions, _Context

    if installed and not llamacpp.available():
        pytest.skip("the llamacpp extra is not installed (pip install 'synpref[llamacpp]')")
    if not installed:
        monkeypatch.setattr(llamacpp, "available", lambda: False)
    options = DemoOptions(workspace=tmp_path)
    workspace = types.SimpleNamespace(root=tmp_path)
    context = _Context(options, workspace, Budget.for_options(options), None, log=lambda message: None)
    try:
        judge = context._judges().judges[0]
        if installed:  # a real server, started by the first step that asks for the judge
            assert judge.base_url == context.judge_server.base_url and judge.base_url.startswith("http://127.0.0.1:")
            assert (judge.name, judge.backend, judge.structured_output, judge.max_tokens) == ("smollm2", "openai", "json_schema", 448)
            assert context._judges().judges[0].base_url == judge.base_url  # one server for every step
        else:
            assert (judge.name, judge.backend, judge.model, judge.max_tokens) == ("smollm2", "local", "smollm2-135m", 160)
            assert context.judge_server is None
    finally:
        server = context.judge_server
        context.close()
    if installed:
        assert server.process.returncode == 0  # stopped by SIGTERM, cleanly
