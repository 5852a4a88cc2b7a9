"""`synpref reward score`: components per item, the RM-vs-verifier report, the plot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synpref.reward.offline import auroc, best_threshold

pytest.importorskip("torch")

SPEC = "default_task: math\ntasks:\n  math: {verifier: math, combine: hybrid, w_rm: 1.0, w_rule: 10.0}\n"


def test_auroc_and_threshold_by_hand():
    correct, incorrect = np.array([3.0, 2.0, 0.5]), np.array([1.0, 0.5, -1.0])
    # pairs (c > i): 3>all (3), 2>all (3), 0.5 > -1 (1) and = 0.5 (a half): 7.5 of 9
    assert auroc(correct, incorrect) == 7.5 / 9
    # t = 1.5: correct above {3, 2}, incorrect at or below {1, 0.5, -1}: 5 of 6
    assert best_threshold(correct, incorrect) == (1.5, 5 / 6)


def test_reward_score_command(tmp_path):
    from typer.testing import CliRunner

    from synpref.cli import app

    records = []
    for pair, (a, b) in enumerate([(17, 25), (40, 2), (9, 9)]):
        prompt, right = f"What is {a} + {b}?", a + b
        records.append({"prompt": prompt, "response": f"{a} + {b} = {right}", "reference": str(right), "pair": pair, "preferred": True})
        records.append({"prompt": prompt, "response": f"{a} + {b} = {right + 60}", "reference": str(right), "pair": pair, "preferred": False})
    records.append({"prompt": "Say hi.", "response": "hmm", "reference": "hi"})  # no number: unparseable
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "spec.yaml").write_text(SPEC)
    output = tmp_path / "out"
    result = CliRunner().invoke(app, ["reward", "score", "--spec", str(tmp_path / "spec.yaml"), "--data",
                                      str(tmp_path / "data.jsonl"), "--model", "minilm-l6", "--output", str(output)])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (output / "components.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in rows] == ["correct", "incorrect"] * 3 + ["unparseable"]
    assert [r["rule"] for r in rows] == [1.0, 0.0] * 3 + [0.0]
    assert all(r["combined"] == pytest.approx(r["rm"] + 10 * r["rule"]) for r in rows)
    report = (output / "report.md").read_text()
    assert "| correct | 3 |" in report and "| incorrect | 3 |" in report and "| unparseable | 1 |" in report
    assert "| combined | 100.0% | 0.0% | 0.0% |" in report  # the verifier decides every pair
    assert "3 complete pairs" in report
    assert (output / "rm_by_outcome.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (output / "reward-spec.yaml").exists()
