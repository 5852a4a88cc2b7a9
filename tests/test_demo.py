"""`synpref demo --tiny` end to end: every step runs on real (tiny) models, and a rerun resumes."""

from __future__ import annotations

import json
import subprocess
import sys

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
    assert len(steps["stage1"]["iterations"]) == 2
    assert steps["evaluate"]["held_out_pairs"] == 40
    assert list(steps["ablation"]["accuracy"]) == ["raw", "kept", "kept+flipped", "gold", "random", "longer wins"]
    assert steps["ablation"]["noise"]["decided"] == 120  # Stage 2 decides every pool pair
    page = (workspace / "report.html").read_text()
    assert page.index("Does curation pay?") < page.index("<h2>Steps</h2>")  # the report leads with the ablation
    assert "Judges, measured on each fold&#39;s loop gold" in page or "Judges, measured on each fold's loop gold" in page
    gate = json.loads((workspace / "runs" / "judge-gate" / "gating.json").read_text())
    assert [(row["judge"], row["n"]) for row in gate] == [("smollm2", 6)]
    assert page.count("src='data:image/png;base64,") + page.count('src="data:image/png;base64,') >= 2
    assert 'src="gold_accuracy.png"' not in page  # every plot is inlined
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0
    assert (again.stderr + again.stdout).count("done earlier, skipped") == 9
