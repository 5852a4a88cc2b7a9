"""`synpref serve` against three attacks of the second report, in a real process on a loopback
socket with MiniLM (512 positions), over both shapes of the server: HTTP worker + model owner
(the default) and everything in one process (`--workers 0`).

1. Head-of-line blocking: a /pooling request of 512 long inputs got its 504, but the model went
   on scoring it, so the tiny request after it got a 504 too, at its own deadline.
2. A body nested 900 deep was a 500 (RecursionError while checking its strings).
3. Token ids were read in pydantic's lax mode: `[true]` was token 1, `[1.0]` and `["7"]` too.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytest.importorskip("torch")

from tests.conftest import serve_process  # noqa: E402

REQUEST_TIMEOUT_S = 3.0
BIG = {"input": [[1000 + i % 50] * 510 for i in range(512)]}  # 512 inputs of 510 ids: a minute on CPU
TINY = {"input": [[1000, 1001, 1002]]}


@pytest.fixture(scope="module", params=[1, 0], ids=["model-owner", "one-process"])
def served(request, tmp_path_factory):
    """(base URL, log file) of `synpref serve --model minilm-l6`; a scoring call takes 2 long inputs."""
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    options = ["--model", "minilm-l6", "--workers", str(request.param), "--request-timeout-s", str(REQUEST_TIMEOUT_S),
               "--max-batch-tokens", "1024"]  # fmt: skip
    with serve_process(options, log_path) as base:
        assert post(base, "/pooling", TINY).status_code == 200  # the model is warm
        yield base, log_path


def post(base: str, path: str, body, timeout: float = 60) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{base}{path}", content=content, headers={"content-type": "application/json"}, timeout=timeout)


def counters(base: str) -> tuple[float, float]:
    """(sequences dropped, sequences scored) so far, from /metrics."""
    text = httpx.get(f"{base}/metrics").text
    dropped = re.search(r"^synpref_dropped_sequences_total (\S+)$", text, re.M)
    scored = re.search(r"^synpref_batch_sequences_sum (\S+)$", text, re.M)
    return float(dropped[1]), float(scored[1])


def queue(base: str) -> int:
    return httpx.get(f"{base}/health").json()["queue"]


def test_a_timed_out_request_is_dropped_and_the_next_one_is_answered(served):
    base, log_path = served
    dropped_before, scored_before = counters(base)
    start = time.monotonic()
    big = post(base, "/pooling", BIG)
    big_seconds = time.monotonic() - start
    start = time.monotonic()
    tiny = post(base, "/pooling", TINY)
    tiny_seconds = time.monotonic() - start

    assert (big.status_code, big.json()) == (504, {"detail": f"no result within {REQUEST_TIMEOUT_S:g} s"})
    assert REQUEST_TIMEOUT_S <= big_seconds < REQUEST_TIMEOUT_S + 1.0
    # Before: 504 at its own deadline, the big request's work still in the way.
    assert tiny.status_code == 200 and tiny_seconds < REQUEST_TIMEOUT_S
    dropped, scored = counters(base)
    assert queue(base) == 0
    # Every input of the big request was either scored before its deadline or dropped; most were dropped.
    assert (dropped - dropped_before) + (scored - scored_before) == len(BIG["input"]) + 1
    assert dropped - dropped_before > len(BIG["input"]) / 2
    assert f"dropped {dropped - dropped_before:.0f} of 512 sequences: their request timed out or its client left" in log_path.read_text()


def test_a_small_request_is_not_held_behind_a_big_one_in_progress(served):
    """Jobs that arrive while a big one is scored join its next scoring call."""
    base, _ = served
    with ThreadPoolExecutor(max_workers=1) as pool:
        big = pool.submit(post, base, "/pooling", BIG)
        time.sleep(0.5)  # the big request is being scored
        start = time.monotonic()
        tiny = post(base, "/pooling", TINY)
        tiny_seconds = time.monotonic() - start
        assert not big.done()  # answered while the big one still runs
        assert big.result().status_code == 504
    assert tiny.status_code == 200 and tiny_seconds < REQUEST_TIMEOUT_S - 1.0


def test_a_client_that_leaves_has_its_work_dropped_before_the_deadline(served):
    base, log_path = served
    dropped_before, _ = counters(base)
    with pytest.raises(httpx.ReadTimeout):
        post(base, "/pooling", BIG, timeout=0.5)
    left = time.monotonic()
    while queue(base):  # the deadline is 2.5 s away; the work goes before it
        assert time.monotonic() - left < REQUEST_TIMEOUT_S - 1.0, "the abandoned request was still being scored"
        time.sleep(0.05)
    assert counters(base)[0] > dropped_before
    assert "POST /pooling: the client left before its answer; request cancelled" in log_path.read_text()


def nested(depth: int, leaf: str = "") -> str:
    return "[" * depth + leaf + "]" * depth


TOO_DEEP = (422, {"detail": "body: nested deeper than 64 levels"})


@pytest.mark.parametrize(("path", "body", "expected"), [
    # The body object is level 1: 63 lists inside it are 64 levels, and go on to the field checks.
    ("/get_reward", '{"query": ' + nested(63) + "}", (422, {"detail": "query.0: Input should be a valid string"})),
    ("/get_reward", '{"query": ' + nested(64) + "}", TOO_DEEP),
    ("/get_reward", '{"query": ' + nested(900, '"x"') + "}", TOO_DEEP),
    ("/v1/score", '{"conversations": [[{"role": "user", "content": ' + nested(900) + "}]]}", TOO_DEEP),
    ("/pooling", '{"input": ' + nested(900, "1") + "}", TOO_DEEP),
    # Past the JSON parser's own stack: refused as a body it cannot read.
    ("/get_reward", '{"query": ' + nested(100_000) + "}", (400, {"detail": "There was an error parsing the body"})),
    ("/v1/score", '{"conversations": ' + nested(100_000, "{}") + "}", (400, {"detail": "There was an error parsing the body"})),
], ids=["64 levels", "65 levels", "900 deep", "900 deep content", "900 deep ids", "100,000 deep", "100,000 deep, dict inside"])  # fmt: skip
def test_deeply_nested_bodies_are_refused_without_a_traceback(served, path, body, expected):
    base, log_path = served
    response = post(base, path, body.encode())
    assert (response.status_code, response.json()) == expected
    assert "Traceback" not in log_path.read_text()


UNION = "input.str: Input should be a valid string; input.list[str].0: Input should be a valid string"


@pytest.mark.parametrize(("body", "detail"), [
    ({"input": [True]}, f"{UNION}; input.list[int].0: Input should be a valid integer; input.list[list[int]].0: Input should be a valid list"),
    ({"input": [1.0]}, f"{UNION}; input.list[int].0: Input should be a valid integer; input.list[list[int]].0: Input should be a valid list"),
    ({"input": [[True]]}, f"{UNION}; input.list[int].0: Input should be a valid integer; input.list[list[int]].0.0: Input should be a valid integer"),
    ({"input": [["1"]]}, f"{UNION}; input.list[int].0: Input should be a valid integer; input.list[list[int]].0.0: Input should be a valid integer"),
    ({"input_ids": ["1"]}, "input_ids.list[int].0: Input should be a valid integer; input_ids.list[list[int]].0: Input should be a valid list"),
    ({"input_ids": [False, True]}, "input_ids.list[int].0: Input should be a valid integer; input_ids.list[int].1: Input should be a valid integer; "
                                   "input_ids.list[list[int]].0: Input should be a valid list; input_ids.list[list[int]].1: Input should be a valid list"),
    ({"input": [1000], "truncate_prompt_tokens": True}, "truncate_prompt_tokens: Input should be a valid integer"),
], ids=["true", "1.0", "nested true", "digit string", "SGLang ids as strings", "SGLang booleans", "truncate true"])  # fmt: skip
def test_token_ids_must_be_integers(served, body, detail):
    base, _ = served
    response = post(base, "/pooling", body)
    assert (response.status_code, response.json()) == (422, {"detail": detail})


def test_integers_and_texts_of_digits_are_still_scored(served):
    base, _ = served
    ids = post(base, "/pooling", {"input": [1000, 1001]})
    text = post(base, "/pooling", {"input": ["1"]})  # a text: the characters "1"
    assert (ids.status_code, ids.json()["usage"]["prompt_tokens"]) == (200, 2)
    assert (text.status_code, text.json()["usage"]["prompt_tokens"]) == (200, 4)  # "1" and MiniLM's special tokens
