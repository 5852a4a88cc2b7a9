"""Issue 19, acceptance 2: OpenRLHF's request with `labels` to a live `synpref serve --reward-spec`
gets the spec's combination of the RM score and the verifier result, components in extra_logs.

The RM is the embedded MiniLM (an encoder: OpenRLHF's query is prompt + "[SEP]" + reply)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("torch")

from tests.conftest import live_server, serve_process  # noqa: E402

SPEC = """\
default_task: math
tasks:
  math: {verifier: math, combine: hybrid, w_rm: 0.5, w_rule: 2.0, rm: {transform: clip, threshold: 0.03}, unparseable_penalty: 1.0}
  mc: {verifier: choice, combine: rule}
"""
HISTORY = [{"role": "user", "content": "What is 17 + 25?"}]
REPLIES = ["17 + 25 = 42", "The sum is \\boxed{41}.", "I would rather not say.", "The answer is (B)."]
LABELS = ["42", "42", "42", {"task": "mc", "reference": "B"}]
RULE = [1.0, 0.0, 0.0, 1.0]


@pytest.fixture(scope="module")
def scorer():
    from synpref.rm.scorer import RewardScorer

    return RewardScorer.from_pretrained("minilm-l6", device="cpu")


@pytest.fixture(scope="module")
def rm_scores(scorer) -> list[float]:
    return scorer.score([[*HISTORY, {"role": "assistant", "content": reply}] for reply in REPLIES])


def expected_rewards(rm: list[float]) -> list[float]:
    """The spec by hand: math 0.5 * min(rm, 0.03) + 2 * rule - 1 if unparseable; mc the rule alone."""
    return [0.5 * min(rm[0], 0.03) + 2.0, 0.5 * min(rm[1], 0.03), 0.5 * min(rm[2], 0.03) - 1.0, 1.0]


def openrlhf_request(scorer) -> dict:
    from synpref.data.models import Message

    prompt = scorer.formatter.text([Message(**HISTORY[0])], Message(role="assistant", content=""))[0]
    sep = scorer.formatter.tokenizer.sep_token
    return {"query": [prompt + sep + reply for reply in REPLIES], "prompts": [prompt] * 4, "labels": list(LABELS)}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`synpref serve --reward-spec` in its own process, logs and the spec in a temporary folder."""
    folder = tmp_path_factory.mktemp("hybrid-serve")
    (folder / "spec.yaml").write_text(SPEC)
    options = ["--model", "minilm-l6", "--reward-spec", str(folder / "spec.yaml"), "--log-dir", str(folder / "logs")]
    with serve_process(options, folder / "stdout.log") as base:
        yield base, folder / "logs"


def test_openrlhf_labels_get_the_specs_combination(served, scorer, rm_scores):
    base, logs = served
    answer = httpx.post(f"{base}/get_reward", json=openrlhf_request(scorer), timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["rewards"] == pytest.approx(expected_rewards(rm_scores), abs=1e-5)
    assert body["scores"] == body["rewards"]
    extra = body["extra_logs"]
    assert extra["rm"] == pytest.approx(rm_scores, abs=1e-5)
    assert extra["rule"] == RULE
    assert extra["combined"] == body["rewards"]
    assert extra["outcome"] == [1.0, 0.0, -1.0, 1.0] and extra["verified"] == [1.0] * 4
    assert extra["truncated"] == [0.0] * 4
    assert all(isinstance(v, float) for values in extra.values() for v in values)  # OpenRLHF makes tensors of them
    # the run can be reproduced: the resolved spec beside the server's log, which names its hash
    saved = (logs / "reward-spec.yaml").read_text()
    digest = saved.splitlines()[0].removeprefix("# sha256 ")
    assert "w_rule: 2.0" in saved and f"(sha256 {digest}) saved as" in (logs / "serve.log").read_text()


def test_a_label_the_spec_cannot_use_is_a_422_naming_the_item(served, scorer):
    base, _ = served
    request = openrlhf_request(scorer)
    request["labels"][2] = {"task": "code", "reference": "x"}
    answer = httpx.post(f"{base}/get_reward", json=request, timeout=60)
    assert answer.status_code == 422
    assert answer.json()["detail"] == "item 2: unknown task 'code'; the reward spec has math, mc"


def test_v1_score_takes_a_reference(scorer, rm_scores):
    import yaml

    from synpref.reward.spec import RewardSpec
    from synpref.serve.app import create_app

    conversations = [[*HISTORY, {"role": "assistant", "content": reply}] for reply in REPLIES]
    spec = RewardSpec.model_validate(yaml.safe_load(SPEC))
    with live_server(create_app(scorer, reward_spec=spec)) as base:
        body = httpx.post(f"{base}/v1/score", json={"conversations": conversations, "reference": LABELS}, timeout=60).json()
        plain = httpx.post(f"{base}/v1/score", json={"conversations": conversations}, timeout=60).json()
    assert body["scores"] == pytest.approx(rm_scores, abs=1e-5)
    assert body["rewards"] == pytest.approx(expected_rewards(rm_scores), abs=1e-5)
    assert body["components"]["rule"] == RULE
    assert body["reasons"] == ["42 equals the reference", "41 differs from 42", "no final answer (no \\boxed{}, no number)", "chose B"]
    assert set(plain) == {"scores"}


def test_without_a_spec_nothing_changes(scorer, rm_scores):
    from synpref.serve.app import create_app

    conversations = [[*HISTORY, {"role": "assistant", "content": reply}] for reply in REPLIES]
    with live_server(create_app(scorer)) as base:
        scored = httpx.post(f"{base}/v1/score", json={"conversations": conversations, "reference": LABELS}, timeout=60).json()
        rewarded = httpx.post(f"{base}/get_reward", json=openrlhf_request(scorer), timeout=60).json()
    assert set(scored) == {"scores"} and scored["scores"] == pytest.approx(rm_scores, abs=1e-5)
    assert rewarded["rewards"] == pytest.approx(rm_scores, abs=1e-5)
    assert set(rewarded["extra_logs"]) == {"truncated", "query_tokens"}


def test_the_reply_is_read_from_a_decoded_decoder_query(smollm2_tokenizer):
    """OpenRLHF decodes left padding, the prompt and the reply's EOS into the query."""
    from synpref.reward.queries import ReplyReader
    from synpref.rm.formatting import RewardFormatter

    reader = ReplyReader(RewardFormatter(smollm2_tokenizer))
    prompt = smollm2_tokenizer.apply_chat_template(HISTORY, tokenize=False, add_generation_prompt=True)
    pad, eos = smollm2_tokenizer.pad_token or "<|endoftext|>", "<|im_end|>"
    query = pad * 3 + prompt + "17 + 25 = 42" + eos
    assert reader.reply(query, prompt) == "17 + 25 = 42"
    assert reader.reply(query) == "17 + 25 = 42"  # without the prompt: after the last assistant header


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    from synpref.rm.models import convert_smollm2

    return AutoTokenizer.from_pretrained(convert_smollm2())


def test_specs_are_checked_before_the_model_loads(tmp_path: Path):
    (tmp_path / "spec.yaml").write_text("default_task: math\ntasks: {math: {verifier: maths}}\n")
    result = subprocess.run([sys.executable, "-m", "synpref", "serve", "--model", "no-such-model",
                             "--reward-spec", str(tmp_path / "spec.yaml")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert "unknown verifier 'maths'" in result.stderr
