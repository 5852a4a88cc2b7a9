"""The reward spec (validation, saving) and the combination, on hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from synpref.errors import SynprefError
from synpref.reward.combine import HybridReward, numeric_logs, transform_rm
from synpref.reward.spec import RewardSpec, RmTransform, load_spec, save_spec
from synpref.reward.verifiers import BadReference

SPEC = {
    "default_task": "math",
    "tasks": {
        "math": {"verifier": "math", "combine": "hybrid", "w_rm": 0.5, "w_rule": 2.0,
                 "rm": {"transform": "clip", "threshold": 1.0}, "unparseable_penalty": 0.25},
        "mc": {"verifier": "choice", "options": {"letters": "ABCD"}, "combine": "rule"},
        "chat": {"combine": "rm", "rm": {"transform": "sigmoid", "threshold": 2.0, "temperature": 0.5}},
    },
}  # fmt: skip


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_combinations_by_hand():
    hybrid = HybridReward(RewardSpec.model_validate(SPEC))
    correct = hybrid.components(3.0, "\\boxed{4}", "4")  # 0.5 * min(3, 1) + 2 * 1
    assert (correct.rm, correct.rm_term, correct.rule, correct.combined) == (3.0, 1.0, 1.0, 2.5)
    wrong = hybrid.components(-1.0, "4 + 1 = 6", "5")  # 0.5 * -1 + 2 * 0
    assert (wrong.rule, wrong.combined, wrong.verdict.outcome.value) == (0.0, -0.5, "incorrect")
    unparseable = hybrid.components(0.5, "no idea", "5")  # 0.5 * 0.5 - 0.25
    assert unparseable.combined == 0.0
    no_reference = hybrid.components(0.8, "anything", None)  # the RM alone: 0.5 * 0.8
    assert (no_reference.combined, no_reference.verdict) == (0.4, None)
    mc = hybrid.components(9.0, "The answer is (B)", {"task": "mc", "reference": "B"})
    assert mc.combined == 1.0
    chat = hybrid.components(2.5, "Hello!", {"data_source": "chat", "ground_truth": None})
    assert chat.combined == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert numeric_logs([correct, wrong, unparseable, no_reference]) == {
        "rm": [3.0, -1.0, 0.5, 0.8], "rule": [1.0, 0.0, 0.0, 0.0], "combined": [2.5, -0.5, 0.0, 0.4],
        "verified": [1.0, 1.0, 1.0, 0.0], "outcome": [1.0, 0.0, -1.0, 0.0],
    }  # fmt: skip


def test_labels_the_spec_cannot_use_name_the_item():
    hybrid = HybridReward(RewardSpec.model_validate(SPEC))
    with pytest.raises(BadReference, match="item 1: unknown task 'code'"):
        hybrid.many([0.0, 0.0], ["a", "b"], ["4", {"task": "code", "reference": "x"}])
    with pytest.raises(BadReference, match="item 0: task 'mc' is scored by its verifier alone and needs a reference"):
        hybrid.many([0.0], ["(A)"], [{"task": "mc"}])


def test_transforms():
    assert transform_rm(5.0, RmTransform()) == 5.0
    assert transform_rm(5.0, RmTransform(transform="clip", threshold=2.0)) == 2.0
    assert transform_rm(2.0, RmTransform(transform="sigmoid", threshold=2.0)) == 0.5


@pytest.mark.parametrize(
    "text, message",
    [
        ("default_task: math\ntasks: {math: {verifier: math, wieght: 1}}\n", "tasks.math.wieght: Extra inputs are not permitted"),
        ("default_task: math\ntasks: {math: {verifier: maths}}\n", "unknown verifier 'maths'"),
        ("default_task: qa\ntasks: {math: {verifier: math}}\n", "default_task 'qa' is not among the tasks (math)"),
        ("default_task: math\ntasks: {math: {combine: rule}}\n", "combine: rule needs a verifier"),
        ("default_task: math\ntasks: {math: {verifier: math, rm: {transform: clip}}}\n", "rm.transform clip needs rm.threshold"),
        ("default_task: math\ntasks: {math: {verifier: choice, options: {letters: ab}}}\n", "letters must be capital letters"),
        ("default_task: math\nextra: 1\ntasks: {math: {verifier: math}}\n", "extra: Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_invalid_specs_are_refused_with_the_field(tmp_path, text, message):
    with pytest.raises(SynprefError, match="reward spec .*" + message.replace("(", r"\(").replace(")", r"\)")):
        load_spec(write(tmp_path, text))


def test_the_saved_spec_is_resolved_and_loads_back(tmp_path):
    spec = load_spec(write(tmp_path, "default_task: math\ntasks: {math: {verifier: math}}\n"))
    saved = save_spec(spec, tmp_path / "logs")
    assert saved.read_text().splitlines()[0] == f"# sha256 {spec.digest()}"
    assert "unparseable_penalty: 0.0" in saved.read_text()  # defaults are written out
    assert load_spec(saved) == spec
