"""The reward server over real HTTP on loopback, with a tiny real Llama behind it."""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytest.importorskip("torch")

from synpref.data.models import Message  # noqa: E402
from synpref.serve.app import create_app  # noqa: E402
from synpref.serve.config import ServeConfig  # noqa: E402
from synpref.serve.limits import UNAUTHORIZED  # noqa: E402
from tests.conftest import live_server  # noqa: E402

MAX_LENGTH = 64


@pytest.fixture(scope="module")
def scorer(tiny_llama_dir):
    from synpref.rm.scorer import RewardScorer

    return RewardScorer.from_pretrained(str(tiny_llama_dir), max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def url(scorer):
    config = ServeConfig(max_body_bytes=20_000, max_items=16, max_wait_ms=20)
    with live_server(create_app(scorer, config, model_name="tiny-llama")) as base:
        yield base


def chat(user: str, reply: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]


def messages(conversation: list[dict]) -> list[Message]:
    return [Message(**m) for m in conversation]


CONVERSATIONS = [chat(f"What is {a} + {a}?", f"It is {2 * a}." + " Indeed." * (a % 5)) for a in range(1, 41)]


def test_score_matches_the_scorer(url, scorer):
    response = httpx.post(f"{url}/v1/score", json={"conversations": CONVERSATIONS[:3]})
    assert response.status_code == 200
    assert response.json()["scores"] == pytest.approx(scorer.score([messages(c) for c in CONVERSATIONS[:3]]), abs=1e-5)


def test_compare_and_best_of_n_schemas(url, scorer):
    body = {"conversation": [{"role": "user", "content": "Say hi."}], "responses": ["Hi!", "No.", "Hello there!"]}
    expected = scorer.score([[Message(role="user", content="Say hi."), Message(role="assistant", content=r)]
                             for r in body["responses"]])
    compared = httpx.post(f"{url}/v1/compare", json=body).json()
    assert set(compared) == {"scores", "probabilities", "preferences"}
    assert compared["scores"] == pytest.approx(expected, abs=1e-5)
    assert sum(compared["probabilities"]) == pytest.approx(1.0)
    assert compared["preferences"][0][1] == pytest.approx(1 / (1 + 2.718281828459045 ** (expected[1] - expected[0])))
    assert compared["preferences"][1][1] == 0.5
    best = httpx.post(f"{url}/v1/best-of-n", json=body).json()
    ranking = sorted(range(3), key=lambda i: -expected[i])
    assert (best["ranking"], best["best"], best["best_response"]) == (ranking, ranking[0], body["responses"][ranking[0]])


def test_get_reward_speaks_openrlhf_and_matches_the_scorer(url, scorer):
    conversations = [messages(c) for c in CONVERSATIONS[:4]]
    texts = [scorer.formatter.text(c[:-1], c[-1])[0] for c in conversations]
    response = httpx.post(f"{url}/get_reward", json={"query": texts, "prompts": ["ignored"] * 4})
    assert response.status_code == 200
    assert response.json()["rewards"] == pytest.approx(scorer.score(conversations), abs=1e-5)
    # padding a trainer leaves around decoded sequences does not change the reward
    padded = [scorer.formatter.tokenizer.pad_token + texts[0] + scorer.formatter.tokenizer.pad_token * 3]
    again = httpx.post(f"{url}/get_reward", json={"query": padded}).json()["rewards"]
    assert again == pytest.approx(response.json()["rewards"][:1], abs=1e-5)


def test_health_and_metrics(url):
    assert httpx.get(f"{url}/health").json() == {
        "status": "ok", "model": "tiny-llama", "queue": 0, "batch_tokens": {"gather": 16384, "forward": 1024},
    }  # fmt: skip
    text = httpx.get(f"{url}/metrics").text
    assert 'synpref_requests_total{path="/health",status="200"}' in text
    assert "synpref_queue_depth 0.0" in text


@pytest.mark.parametrize(
    "body,status,detail",
    [
        (b'{"conversations": [[{"role": "user", "content": "hi"}', 400, "malformed JSON body"),
        (json.dumps({"conversations": "hello"}).encode(), 422, "conversations: Input should be a valid list"),
        (json.dumps({"conversations": []}).encode(), 422, "conversations: List should have at least 1 item after validation, not 0"),
        (json.dumps({"conversations": [[{"role": "robot", "content": "x"}]]}).encode(), 422,
         "conversations.0.0.role: Input should be 'system', 'user', 'assistant' or 'tool'"),
        (json.dumps({"conversations": [[{"role": "user", "content": "no reply"}]]}).encode(), 422,
         "a conversation to score needs a history and a final assistant message"),
        (json.dumps({"conversations": [chat("hi", "word " * 200)]}).encode(), 422,
         "a conversation has 212 tokens, over the limit of 64 (send truncate: true to cut it)"),
        (json.dumps({"conversations": [chat("hi", "x" * 30_000)]}).encode(), 413,
         "request body over the limit of 20,000 bytes"),
        (json.dumps({"conversations": [chat("hi", "yo")] * 17}).encode(), 413,
         "17 items in one request; the limit is 16"),
        # issue 13: a lone surrogate and a reply to no user turn were scored (or were a 500)
        (b'{"conversations": [[{"role": "user", "content": "\\ud800"}, {"role": "assistant", "content": "x"}]]}', 422,
         "body: Value error, text must be valid Unicode (a lone surrogate such as \\ud800 is not)"),
        (json.dumps({"conversations": [[{"role": "system", "content": "be brief"}, {"role": "assistant", "content": "ok"}]]}).encode(),
         422, "a conversation to score needs a user turn before the final assistant message"),
    ],
)
def test_bad_requests_get_a_clear_4xx(url, body, status, detail):
    response = httpx.post(f"{url}/v1/score", content=body, headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["detail"]) == (status, detail)


def test_oversize_body_without_declared_length_is_refused(url):
    def chunks():
        yield b'{"conversations": [[{"role": "user", "content": "'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"}]]}'

    response = httpx.post(f"{url}/v1/score", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_truncation_only_when_asked(url, scorer):
    long = chat("hi", "word " * 200)
    response = httpx.post(f"{url}/v1/score", json={"conversations": [long], "truncate": True})
    assert response.status_code == 200
    assert response.json()["scores"] == pytest.approx(scorer.score([messages(long)]), abs=1e-5)


def test_api_keys(scorer):
    with live_server(create_app(scorer, ServeConfig(api_keys=["s3cret"]))) as base:
        body = {"conversations": [chat("hi", "hello")]}
        missing = httpx.post(f"{base}/v1/score", json=body)
        wrong = httpx.post(f"{base}/v1/score", json=body, headers={"Authorization": "Bearer nope"})
        right = httpx.post(f"{base}/v1/score", json=body, headers={"Authorization": "Bearer s3cret"})
        assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
        assert missing.json()["detail"] == UNAUTHORIZED
        assert missing.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{base}/health").status_code == 200


def test_concurrent_scores_equal_scores_alone(url, scorer):
    alone = [scorer.score([messages(c)])[0] for c in CONVERSATIONS]
    before = _batches(url)

    def one(conversation):
        return httpx.post(f"{url}/v1/score", json={"conversations": [conversation]}, timeout=60).json()["scores"][0]

    with ThreadPoolExecutor(max_workers=20) as pool:
        served = list(pool.map(one, CONVERSATIONS))
    assert served == pytest.approx(alone, abs=1e-5)
    assert _batches(url) - before < len(CONVERSATIONS)  # requests were merged into batches


def _batches(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return float(re.search(r"^synpref_batch_sequences_count (\S+)$", text, re.M).group(1))


def test_full_queue_answers_503(scorer):
    release = threading.Event()

    class StalledScorer:  # fault injector: a model that stalls until released
        formatter = scorer.formatter

        def score_ids(self, sequences):
            release.wait(30)
            return [0.0] * len(sequences)

    with live_server(create_app(StalledScorer(), ServeConfig(max_queue=2, max_wait_ms=0))) as base:
        body = {"conversations": [chat("hi", "hello")] * 2}
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(httpx.post, f"{base}/v1/score", json=body, timeout=30)
            deadline = time.monotonic() + 10
            while httpx.get(f"{base}/health").json()["queue"] < 2:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            busy = httpx.post(f"{base}/v1/score", json=body)
            release.set()
            assert first.result().status_code == 200
        assert (busy.status_code, busy.headers["retry-after"]) == (503, "1")
        assert busy.json()["detail"] == "server busy: the scoring queue is full"


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_the_serve_command_serves_over_a_socket(tiny_llama_dir, scorer, bf16):
    """`synpref serve` as users start it: a separate process, options wired through; with
    --bf16 the served scores are the bfloat16 scorer's, not the fp32 ones."""
    import socket
    import subprocess
    import sys

    import torch

    from synpref.rm.scorer import RewardScorer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "synpref", "serve", "--model", str(tiny_llama_dir), "--port", str(port),
               "--max-length", str(MAX_LENGTH), "--max-batch-tokens", "512", "--model-batch-tokens", "96"]  # fmt: skip
    if bf16:
        command.append("--bf16")
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "synpref serve did not come up"
            try:
                health = httpx.get(f"{base}/health", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert health == {"status": "ok", "model": str(tiny_llama_dir), "queue": 0, "batch_tokens": {"gather": 512, "forward": 96}}
        response = httpx.post(f"{base}/v1/score", json={"conversations": CONVERSATIONS[:6]}, timeout=60)
        texts = [messages(c) for c in CONVERSATIONS[:6]]
        fp32 = scorer.score(texts)
        expected = fp32
        if bf16:
            bf16_scorer = RewardScorer.from_pretrained(str(tiny_llama_dir), max_length=MAX_LENGTH, token_budget=96, dtype=torch.bfloat16)
            expected = bf16_scorer.score(texts)  # the same forward-pass size as the server
            assert max(abs(a - b) for a, b in zip(expected, fp32)) > 1e-4  # bf16 really differs
        assert response.status_code == 200
        assert max(abs(a - b) for a, b in zip(response.json()["scores"], expected)) < 1e-5
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_failing_batch_is_rescored_so_only_the_bad_input_fails(scorer):
    """A model that fails on some input used to fail every request batched with it (500s);
    now the batch is scored again one input at a time and only the request at fault gets 422."""

    class FailsOnLongInputs:  # fault injector: a model with fewer positions than an input
        formatter = scorer.formatter
        token_budget = None
        calls: list[int] = []

        def score_ids(self, sequences):
            self.calls.append(len(sequences))
            if any(len(s) > 30 for s in sequences):
                raise RuntimeError("The size of tensor a (41) must match the size of tensor b (30)\nmore detail")
            return [float(len(s)) for s in sequences]

    model = FailsOnLongInputs()
    good, bad = chat("hi", "hello"), chat("hi", "word " * 30)
    lengths = [len(scorer.formatter.encode_messages(messages(c))) for c in (good, bad)]
    assert lengths[0] <= 30 < lengths[1] <= MAX_LENGTH
    # every request arrives within the 2 s the worker waits, so all of them share one batch
    config = ServeConfig(max_wait_ms=2000)
    with live_server(create_app(model, config)) as base:
        bodies = [[good], [bad], [good, good], [good, bad]]
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda c: httpx.post(f"{base}/v1/score", json={"conversations": c}, timeout=30), bodies))
    assert [a.status_code for a in answers] == [200, 422, 200, 422]
    assert answers[0].json()["scores"] == [lengths[0]]
    assert answers[2].json()["scores"] == [lengths[0], lengths[0]]
    assert answers[1].json()["detail"] == "input 0 could not be scored: The size of tensor a (41) must match the size of tensor b (30)"
    assert answers[3].json()["detail"] == "input 1 could not be scored: The size of tensor a (41) must match the size of tensor b (30)"
    # one merged batch of 6 failed, then each input alone (the last request stops at its bad input)
    assert model.calls == [6, 1, 1, 1, 1, 1, 1]


def test_an_unexpected_error_is_a_counted_and_logged_500(scorer, caplog):
    """500s were missing from /metrics and from the access log."""
    import logging

    class BrokenFormatter:  # fault injector: a bug while formatting a request
        tokenizer = scorer.formatter.tokenizer
        max_length = MAX_LENGTH

        def text(self, conversation, response):
            raise RuntimeError("a bug")

    class BrokenScorer:
        formatter = BrokenFormatter()
        token_budget = None

        def score_ids(self, sequences):
            return [0.0] * len(sequences)

    caplog.set_level(logging.INFO, logger="synpref.serve")
    with live_server(create_app(BrokenScorer())) as base:
        response = httpx.post(f"{base}/v1/score", json={"conversations": [chat("hi", "yo")]})
        metrics = httpx.get(f"{base}/metrics").text
    assert (response.status_code, response.json()) == (500, {"detail": "internal server error"})
    assert 'synpref_requests_total{path="/v1/score",status="500"} 1.0' in metrics
    lines = [r.getMessage() for r in caplog.records if r.name == "synpref.serve"]
    assert any(re.fullmatch(r"POST /v1/score 500 [\d.]+ ms", line) for line in lines)
    assert "unhandled error on POST /v1/score" in lines


def test_escape_bytes_of_a_path_are_escaped_in_the_log(url, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="synpref.serve")
    response = httpx.get(f"{url}/%1b[2J%1b[31mred%0aFAKE%20200%20line")
    assert response.status_code == 404

    def logged() -> bool:
        lines = [r.getMessage() for r in caplog.records if r.name == "synpref.serve"]
        return any(line.startswith("GET /\\x1b[2J\\x1b[31mred\\nFAKE 200 line 404 ") for line in lines)

    # The access line is written once the response is sent: on a busy machine, after the client has it.
    deadline = time.monotonic() + 5
    while not logged() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert logged(), [r.getMessage() for r in caplog.records if r.name == "synpref.serve"]
