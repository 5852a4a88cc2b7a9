"""Issue 16, acceptance 2: a live `synpref serve` process gets exactly the request OpenRLHF's
current client sends and answers with rewards and scores equal to /v1/score's.

OpenRLHF (openrlhf/utils/agent.py, SingleTurnAgentExecutor) decodes prompt ids + the sampled
reply's ids with the policy tokenizer, then POSTs `{"query": [text], "prompts": [prompt],
"labels": [label]}` as JSON with no Authorization header, and reads `scores` (else `rewards`)
and `extra_logs`. Here the policy tokenizer is the reward model's own saved tokenizer.
"""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("torch")

from tests.conftest import serve_process  # noqa: E402

KEY = "s3cret"
MAX_LENGTH = 64


@pytest.fixture(scope="module")
def saved_tiny_llama(tiny_llama_dir, tmp_path_factory):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from synpref.rm.saving import save_reward_model

    directory = tmp_path_factory.mktemp("saved-tiny-llama")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama_dir)
    save_reward_model(model, AutoTokenizer.from_pretrained(tiny_llama_dir), directory)
    return directory


@pytest.fixture(scope="module")
def served(saved_tiny_llama, tmp_path_factory):
    """`synpref serve` with a key, open without one to loopback clients (a trusted trainer)."""
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    options = ["--model", str(saved_tiny_llama), "--api-key", KEY, "--keyless-client", "127.0.0.1", "--max-length", str(MAX_LENGTH)]
    with serve_process(options, log_path) as base:
        yield base


def openrlhf_request(tokenizer, history: list[dict], reply: str, label: str) -> dict:
    prompt = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(text=prompt, add_special_tokens=False)["input_ids"]
    action_ids = tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]  # vLLM keeps the EOS
    query = tokenizer.decode(prompt_ids + action_ids, skip_special_tokens=False)
    return {"query": [query], "prompts": [prompt], "labels": [label]}


@pytest.mark.parametrize("reply", ["It is 4.", "word " * 200], ids=["short", "over-max-length"])
def test_openrlhf_request_gets_the_scores_of_v1_score(served, saved_tiny_llama, reply):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(saved_tiny_llama)
    history = [{"role": "user", "content": "What is 2 + 2?"}]
    request = openrlhf_request(tokenizer, history, reply, label="4")
    answer = httpx.post(f"{served}/get_reward", json=request, headers={"Content-Type": "application/json"}, timeout=60)
    assert answer.status_code == 200
    expected = httpx.post(
        f"{served}/v1/score", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
        json={"conversations": [[*history, {"role": "assistant", "content": reply}]], "truncate": True},
    ).json()["scores"]  # fmt: skip
    body = answer.json()
    assert body["rewards"] == pytest.approx(expected, abs=1e-5)
    assert body["scores"] == pytest.approx(expected, abs=1e-5)
    over = len(tokenizer(request["query"][0])["input_ids"])
    assert body["extra_logs"] == {"truncated": [float(over > MAX_LENGTH)], "query_tokens": [float(over)]}
    assert (over > MAX_LENGTH) == (reply != "It is 4.")


def test_other_paths_still_need_a_key_from_elsewhere(served):
    # Loopback is on the allow-list here, so only the absence of a 401 can be shown from this host;
    # the allow-list's refusal of other addresses is tested in-process (test_engine_routes.py).
    assert httpx.get(f"{served}/v1/models", timeout=10).status_code == 200
