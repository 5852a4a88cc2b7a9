"""The serving path of issue 18: tokenization batched across requests, and HTTP worker processes
in front of one model owner (`--workers`), giving exactly what one process gave."""

from __future__ import annotations

import asyncio

import httpx
import pytest

pytest.importorskip("torch")

from synpref.data.models import Message  # noqa: E402
from synpref.serve.batcher import QueueFull, UnscorableInput  # noqa: E402
from synpref.serve.config import ServeConfig  # noqa: E402
from synpref.serve.encoding import encode_jobs  # noqa: E402
from synpref.serve.limits import InputTooLong, RequestEncoder  # noqa: E402
from tests.conftest import serve_process  # noqa: E402

MAX_LENGTH = 64


def chat(user: str, reply: str) -> list[Message]:
    return [Message(role="user", content=user), Message(role="assistant", content=reply)]


CONVERSATIONS = [chat(f"What is {a} + {a}?", f"It is {2 * a}." + " Indeed." * (a % 5)) for a in range(1, 25)]
LONG = chat("Tell me everything. " * 30, "Here it is. " * 30)  # over MAX_LENGTH tokens


@pytest.fixture(scope="module", params=["smollm2", "minilm-l6"])
def formatter(request, smollm2_dir):
    """A chat formatter (SmolLM2's template) and an encoder's text-pair formatter."""
    from synpref.rm.formatting import RewardFormatter
    from synpref.rm.models import load_reward_model

    return RewardFormatter(load_reward_model(str(smollm2_dir) if request.param == "smollm2" else "minilm-l6")[1], max_length=MAX_LENGTH)


def jobs(encoder: RequestEncoder, formatter) -> list:
    tokenizer = formatter.tokenizer
    queries = [formatter.joined_text(c[:-1], c[-1]) for c in CONVERSATIONS[:6]]
    padded = [(tokenizer.pad_token or "") + q + (tokenizer.pad_token or "") * 2 for q in queries[:2]]
    long_query = formatter.joined_text(LONG[:-1], LONG[-1])
    no_user = [Message(role="system", content="Be brief."), Message(role="assistant", content="Hi.")]
    return [
        encoder.conversations(CONVERSATIONS, truncate=False),
        encoder.conversations([*CONVERSATIONS[:3], LONG], truncate=True),
        encoder.conversations([CONVERSATIONS[0], LONG, no_user], truncate=False),  # the long one is reported
        encoder.conversations([CONVERSATIONS[0], no_user, LONG], truncate=False),  # the one without a user turn
        encoder.texts(queries + padded + [long_query], truncate=True, lengths=[]),
        encoder.texts(queries, truncate=False, limit=8),
        encoder.texts(queries, truncate=True, add_special_tokens=False),
        encoder.token_ids([[1, 2, 3], list(range(100))], truncate=True, limit=10),
        encoder.token_ids([[1, 2, 3], []], truncate=False),
    ]


def test_batched_tokenization_equals_one_text_at_a_time(formatter):
    encoder = RequestEncoder(formatter)
    batched = encode_jobs(formatter.tokenizer, jobs(encoder, formatter))
    alone = encode_jobs(formatter.tokenizer, jobs(encoder, formatter), batched=False)
    assert [r if isinstance(r, list) else repr(r) for r in batched] == [r if isinstance(r, list) else repr(r) for r in alone]
    # and both give the scorer's own ids
    assert batched[0] == [formatter.encode(c[:-1], c[-1]) for c in CONVERSATIONS]
    assert batched[1] == [formatter.encode(c[:-1], c[-1]) for c in [*CONVERSATIONS[:3], LONG]]
    assert isinstance(batched[2], InputTooLong) and str(batched[2]).startswith("a conversation has ")
    assert str(batched[3]) == "a conversation to score needs a user turn before the final assistant message"
    assert batched[4][:6] == batched[0][:6] and batched[4][6:8] == batched[0][:2]
    assert str(batched[5]).startswith("a query has ") and str(batched[5]).endswith("over the limit of 8")
    assert batched[7] == [[1, 2, 3], list(range(90, 100))]
    assert str(batched[8]).startswith("token ids must be non-empty")


def test_one_tokenizer_call_for_every_waiting_request(formatter):
    calls = []

    def counting(*args, **kwargs):
        calls.append(len(args[0]))
        return formatter.tokenizer(*args, **kwargs)

    encoder = RequestEncoder(formatter)
    encode_jobs(counting, [encoder.conversations([c], truncate=False) for c in CONVERSATIONS])
    assert calls == [len(CONVERSATIONS)]


def test_a_tokenizer_failure_fails_only_its_own_request(formatter):
    from synpref.serve.encoding import EncodeStage

    def fussy(texts, pairs=None, **options):
        if any("BOOM" in text for text in texts):
            raise RuntimeError("cannot tokenize this")
        return formatter.tokenizer(texts, pairs, **options)

    stage, encoder = EncodeStage(fussy), RequestEncoder(formatter)

    async def together():
        good = stage.encode(encoder.conversations(CONVERSATIONS[:2], truncate=False))
        bad = stage.encode(encoder.conversations([chat("BOOM", "Bang.")], truncate=False))
        return await asyncio.gather(good, bad, return_exceptions=True)

    good, bad = asyncio.run(together())
    stage.close()
    assert good == [formatter.encode(c[:-1], c[-1]) for c in CONVERSATIONS[:2]]
    assert isinstance(bad, RuntimeError) and str(bad) == "cannot tokenize this"


class FailsOn13:
    """A scorer whose model fails on any input holding token 13: reward = number of tokens."""

    formatter = None
    token_budget = 8

    def score_ids(self, encoded):
        if any(13 in ids for ids in encoded):
            raise RuntimeError("index out of range in self\nTraceback ...")
        return [float(len(ids)) for ids in encoded]


def test_the_model_owner_answers_as_the_local_batcher_does(tmp_path):
    """Over the Unix socket: scores, the one bad input failing alone, a full queue."""
    from synpref.serve.model import LocalModel, ModelOwner, RemoteModel

    async def scenario():
        local = LocalModel(FailsOn13(), ServeConfig(max_queue=5, max_wait_ms=50))
        owner = ModelOwner(local, request_timeout_s=10)
        await owner.start(str(tmp_path / "model.sock"))
        remote = RemoteModel(str(tmp_path / "model.sock"), None, 8)
        good = remote.score([[1, 2], [3, 4, 5]])
        bad = remote.score([[1], [2, 13, 2]])
        results = await asyncio.gather(good, bad, return_exceptions=True)
        with pytest.raises(QueueFull):
            await remote.score([[1]] * 6)
        for _ in range(100):  # the worker counts a batch done just after it hands out the scores
            status = await remote.status()
            if status["queue"] == 0:
                break
            await asyncio.sleep(0.02)
        metrics = await remote.metrics()
        remote.close()
        await owner.close()
        local.close()
        return results, status, metrics

    (good, bad), status, metrics = asyncio.run(scenario())
    assert good == [2.0, 3.0]
    assert isinstance(bad, UnscorableInput)
    assert str(bad) == "input 1 could not be scored: index out of range in self"
    assert status == {"queue": 0}
    assert "synpref_batch_sequences_count" in metrics


@pytest.fixture(scope="module")
def scorer(tiny_llama_dir):
    from synpref.rm.scorer import RewardScorer

    return RewardScorer.from_pretrained(str(tiny_llama_dir), max_length=MAX_LENGTH)


def test_workers_serve_what_one_process_serves(tiny_llama_dir, scorer, tmp_path, monkeypatch):
    """`--workers 2` and `--workers 0` over real sockets: the same scores as the scorer (1e-6),
    the same errors, keys checked, and the owner's batch metrics on /metrics."""
    body = {"conversations": [[m.model_dump() for m in c] for c in CONVERSATIONS]}
    expected = scorer.score(CONVERSATIONS)
    queries = [scorer.formatter.joined_text(c[:-1], c[-1]) for c in CONVERSATIONS[:4]]
    answers = {}
    monkeypatch.setenv("SYNPREF_API_KEYS", "k1")
    for workers in (2, 0):
        options = ["--model", str(tiny_llama_dir), "--max-length", str(MAX_LENGTH), "--workers", str(workers)]
        with serve_process(options, tmp_path / f"serve-{workers}.log") as url:
            headers = {"Authorization": "Bearer k1"}
            assert httpx.post(f"{url}/v1/score", json=body).status_code == 401
            scored = httpx.post(f"{url}/v1/score", json=body, headers=headers, timeout=60)
            assert scored.status_code == 200
            assert scored.json()["scores"] == pytest.approx(expected, abs=1e-6)
            long = {"conversations": [[m.model_dump() for m in LONG]]}
            refused = httpx.post(f"{url}/v1/score", json=long, headers=headers)
            assert refused.status_code == 422 and refused.json()["detail"].startswith("a conversation has ")
            reward = httpx.post(f"{url}/get_reward", json={"query": queries}, headers=headers).json()
            assert reward["rewards"] == pytest.approx(expected[:4], abs=1e-6)
            classified = httpx.post(f"{url}/v1/classify", json={"model": "x", "input": queries[:2]}, headers=headers).json()
            assert [d["probs"][0] for d in classified["data"]] == pytest.approx(expected[:2], abs=1e-6)
            health = httpx.get(f"{url}/health", headers=headers).json()
            assert (health["status"], health["queue"]) == ("ok", 0)
            metrics = httpx.get(f"{url}/metrics", headers=headers).text
            assert "synpref_batch_sequences_count" in metrics and 'synpref_requests_total{path="/v1/score",status="200"}' in metrics
            answers[workers] = scored.json()["scores"]
    assert answers[2] == pytest.approx(answers[0], abs=1e-6)
