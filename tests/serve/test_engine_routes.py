"""Issue 16, acceptance 3: each engine-compatible route answers in its engine's shape, the keyless
allow-list, and `synpref eval` through each protocol equal to in-process scoring."""

from __future__ import annotations

import math

import httpx
import pytest

pytest.importorskip("torch")

from synpref.rm.remote import PROTOCOLS, RemoteScorer  # noqa: E402
from synpref.serve.app import create_app  # noqa: E402
from synpref.serve.config import ServeConfig  # noqa: E402
from tests.conftest import live_server  # noqa: E402
from tests.serve.test_server import CONVERSATIONS, messages  # noqa: E402

MAX_LENGTH = 64


@pytest.fixture(scope="module")
def scorer(tiny_llama_dir):
    from synpref.rm.scorer import RewardScorer

    return RewardScorer.from_pretrained(str(tiny_llama_dir), max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def url(scorer):
    with live_server(create_app(scorer, ServeConfig(), model_name="tiny")) as base:
        yield base


@pytest.fixture(scope="module")
def texts_and_scores(scorer):
    conversations = [messages(c) for c in CONVERSATIONS[:3]]
    return [scorer.formatter.joined_text(c[:-1], c[-1]) for c in conversations], scorer.score(conversations)


def test_vllm_classify_shape(url, texts_and_scores):
    texts, expected = texts_and_scores
    for path in ("/classify", "/v1/classify"):
        body = httpx.post(f"{url}{path}", json={"model": "x", "input": texts}).json()
        assert set(body) == {"id", "object", "created", "model", "data", "usage"}
        assert body["id"].startswith("classify-") and body["object"] == "list" and body["model"] == "x"
        assert isinstance(body["created"], int)
        assert [set(row) for row in body["data"]] == [{"index", "label", "probs", "num_classes"}] * 3
        assert [(row["index"], row["label"], row["num_classes"]) for row in body["data"]] == [(i, "LABEL_0", 1) for i in range(3)]
        assert [row["probs"][0] for row in body["data"]] == pytest.approx(expected, abs=1e-5)
        assert set(body["usage"]) == {"prompt_tokens", "total_tokens", "completion_tokens"}
        assert body["usage"]["completion_tokens"] == 0


def test_vllm_activation_is_a_sigmoid_only_when_asked(url, texts_and_scores):
    texts, expected = texts_and_scores
    probs = httpx.post(f"{url}/classify", json={"input": texts[0], "use_activation": True}).json()["data"][0]["probs"]
    assert probs == pytest.approx([1 / (1 + math.exp(-expected[0]))], abs=1e-6)
    raw = httpx.post(f"{url}/classify", json={"input": texts[0], "activation": False}).json()["data"][0]["probs"]
    assert raw == pytest.approx([expected[0]], abs=1e-5)


def test_vllm_messages_and_token_ids(url, scorer, texts_and_scores):
    _, expected = texts_and_scores
    chat = httpx.post(f"{url}/classify", json={"messages": CONVERSATIONS[0]}).json()
    assert chat["data"][0]["probs"] == pytest.approx([expected[0]], abs=1e-5)
    ids = [scorer.formatter.encode_messages(messages(c)) for c in CONVERSATIONS[:3]]
    by_ids = httpx.post(f"{url}/classify", json={"input": ids}).json()
    assert [row["probs"][0] for row in by_ids["data"]] == pytest.approx(expected, abs=1e-5)
    assert by_ids["usage"]["prompt_tokens"] == sum(len(i) for i in ids)


def test_sglang_native_classify_shape(url, texts_and_scores):
    texts, expected = texts_and_scores
    many = httpx.post(f"{url}/classify", json={"model": "x", "text": texts}).json()
    assert isinstance(many, list) and [set(row) for row in many] == [{"embedding", "meta_info"}] * 3
    assert [row["embedding"][0] for row in many] == pytest.approx(expected, abs=1e-5)
    one = httpx.post(f"{url}/classify", json={"model": "x", "text": texts[0]}).json()
    assert set(one) == {"embedding", "meta_info"} and one["embedding"] == pytest.approx([expected[0]], abs=1e-5)


def test_sglang_embeddings_shape(url, texts_and_scores):
    texts, expected = texts_and_scores
    body = httpx.post(f"{url}/v1/embeddings", json={"model": "x", "input": texts}).json()
    assert set(body) == {"object", "data", "model", "usage"} and body["object"] == "list"
    assert [(row["object"], row["index"]) for row in body["data"]] == [("embedding", i) for i in range(3)]
    assert [row["embedding"][0] for row in body["data"]] == pytest.approx(expected, abs=1e-5)


def test_vllm_pooling_shape(url, texts_and_scores):
    texts, expected = texts_and_scores
    body = httpx.post(f"{url}/pooling", json={"model": "x", "input": texts}).json()
    assert set(body) == {"id", "object", "created", "model", "data", "usage"} and body["id"].startswith("pool-")
    assert [(row["index"], row["object"]) for row in body["data"]] == [(i, "pooling") for i in range(3)]
    assert [row["data"][0] for row in body["data"]] == pytest.approx(expected, abs=1e-5)


def test_models_lists_the_served_model(url):
    body = httpx.get(f"{url}/v1/models").json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"], m["max_model_len"]) for m in body["data"]] == [("tiny", "model", "synpref", MAX_LENGTH)]


def test_over_long_inputs_are_cut_only_when_asked(url, scorer):
    long = messages([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "word " * 200}])
    text = scorer.formatter.joined_text(long[:1], long[1])
    refused = httpx.post(f"{url}/classify", json={"input": text})
    assert refused.status_code == 422
    cut = httpx.post(f"{url}/classify", json={"input": text, "truncate_prompt_tokens": -1}).json()
    assert cut["data"][0]["probs"] == pytest.approx(scorer.score([long]), abs=1e-5)
    assert cut["usage"]["prompt_tokens"] == MAX_LENGTH


def test_one_input_field_only(url):
    both = httpx.post(f"{url}/classify", json={"input": "a", "text": ["b"]})
    assert (both.status_code, both.json()["detail"]) == (422, "send exactly one of input, messages (vLLM), text or input_ids (SGLang)")


def test_keyless_clients_need_no_key_and_others_do(scorer):
    body = {"query": ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>"]}
    with live_server(create_app(scorer, ServeConfig(api_keys=["k"]))) as base:
        assert httpx.post(f"{base}/get_reward", json=body).status_code == 401
    with live_server(create_app(scorer, ServeConfig(api_keys=["k"], keyless_clients=["127.0.0.0/8"]))) as base:
        assert httpx.post(f"{base}/get_reward", json=body).status_code == 200
    with live_server(create_app(scorer, ServeConfig(api_keys=["k"], keyless_clients=["10.0.0.0/8"]))) as base:
        assert httpx.post(f"{base}/get_reward", json=body).status_code == 401
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        ServeConfig(keyless_clients=["not-a-network"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_eval_through_each_protocol_equals_in_process(tiny_llama_dir, scorer, protocol, tmp_path):
    """`synpref eval --model URL --protocol P` on a RewardBench fixture gives the in-process numbers."""
    from synpref.eval.evaluate import evaluate

    data_dir = write_rewardbench_fixture(tmp_path)
    local = evaluate(scorer, ["rewardbench"], data_dir)
    with live_server(create_app(scorer, ServeConfig())) as base:
        remote = evaluate(RemoteScorer(base, protocol, tokenizer=str(tiny_llama_dir), batch_size=4), ["rewardbench"], data_dir)
    assert local.results["rewardbench"].score is not None
    assert remote.results["rewardbench"].score == local.results["rewardbench"].score
    assert remote.results["rewardbench"].subsets == local.results["rewardbench"].subsets


def write_rewardbench_fixture(directory):
    """RewardBench rows whose replies are short and over MAX_LENGTH tokens (cut on every path)."""
    import json

    subsets = ["alpacaeval-easy", "mt-bench-hard", "refusals-dangerous", "math-prm"]
    rows = [{"prompt": f"What is {i} + {i}?", "chosen": f"It is {2 * i}." + " word" * (i * 20),
             "rejected": f"It is {2 * i + 1}.", "subset": subset, "id": i}
            for i, subset in enumerate(subsets * 2)]  # fmt: skip
    (directory / "rewardbench").mkdir()
    (directory / "rewardbench" / "filtered.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory
