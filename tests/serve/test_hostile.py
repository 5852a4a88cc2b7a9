"""`synpref serve` as an attacker meets it (issue 13): a real process on a loopback socket, with
API keys, MiniLM (512 positions) behind it at the default --max-length of 4,096.

No request may take the server down, fail someone else's request, or get a 5xx.
"""

from __future__ import annotations

import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytest.importorskip("torch")

from synpref.data.models import Message  # noqa: E402
from synpref.serve.limits import UNAUTHORIZED  # noqa: E402
from tests.conftest import serve_process  # noqa: E402

KEY = "s3cret"
ACCENTED_KEY = "clé-ünïcode"  # a configured key may be non-ASCII; it is compared as UTF-8 bytes
AUTH = {"Authorization": f"Bearer {KEY}"}
READ_TIMEOUT_S = 1.0
MAX_BODY_BYTES = 100_000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, log file) of `synpref serve --model minilm-l6` in a process of its own."""
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    options = ["--model", "minilm-l6", "--api-key", KEY, "--api-key", ACCENTED_KEY, "--read-timeout-s", str(READ_TIMEOUT_S),
               "--max-body-bytes", str(MAX_BODY_BYTES), "--max-items", "8", "--max-wait-ms", "200"]  # fmt: skip
    with serve_process(options, log_path) as base:
        yield base, log_path


@pytest.fixture(scope="module")
def local_scorer():
    """The same model in this process: its head is seeded, so its scores equal the server's."""
    from synpref.rm.scorer import RewardScorer

    return RewardScorer.from_pretrained("minilm-l6", device="cpu")


def chat(user: str, reply: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]


GOOD = chat("What is 2 + 2?", "4.")
LONG = chat("Tell me a story.", "once upon a time " * 300)  # ~1,200 tokens, over MiniLM's 512


def post(base: str, path: str, body, headers=None, **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{base}{path}", content=content, headers={"content-type": "application/json", **(headers or AUTH)}, timeout=60, **kwargs)


def test_a_non_ascii_api_key_is_refused_not_a_crash(served):
    base, _ = served
    accented = post(base, "/v1/score", {"conversations": [GOOD]}, headers={"Authorization": f"Bearer {ACCENTED_KEY}x".encode()})
    assert (accented.status_code, accented.json()) == (401, {"detail": UNAUTHORIZED})
    latin1 = post(base, "/v1/score", {"conversations": [GOOD]}, headers={"Authorization": b"Bearer \xe9\xff"})
    assert latin1.status_code == 401
    right = post(base, "/v1/score", {"conversations": [GOOD]}, headers={"Authorization": f"Bearer {ACCENTED_KEY}".encode()})
    assert right.status_code == 200


def test_the_key_is_checked_before_the_body_is_read(served):
    base, _ = served
    response = post(base, "/v1/score", b'{"conversations": [[', headers={"Authorization": "Bearer nope"})
    assert (response.status_code, response.json()["detail"]) == (401, UNAUTHORIZED)


@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/metrics", "/redoc"])
def test_docs_and_metrics_need_the_key(served, path):
    base, _ = served
    assert httpx.get(f"{base}{path}").status_code == 401
    assert httpx.get(f"{base}{path}", headers=AUTH).status_code == 200


def test_health_answers_probes_and_reveals_nothing_without_a_key(served):
    base, _ = served
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    assert httpx.get(f"{base}/health", headers=AUTH).json() == {
        "status": "ok", "model": "minilm-l6", "queue": 0, "batch_tokens": {"gather": 16384, "forward": 1024},
    }  # fmt: skip


def test_long_inputs_batched_with_good_ones(served, local_scorer):
    """MiniLM crashed on inputs past its 512 positions and took every request batched with the
    long one down with it (500s), with truncate too. Now the limit is 512: a long input is
    refused alone unless truncation is asked for, and then it is scored."""
    base, _ = served
    bodies = [
        {"conversations": [GOOD]},
        {"conversations": [LONG]},
        {"conversations": [LONG], "truncate": True},
        {"conversations": [GOOD, LONG], "truncate": True},
        {"conversation": LONG[:1], "responses": ["short", LONG[1]["content"]], "truncate": True},
    ]
    paths = ["/v1/score"] * 4 + ["/v1/best-of-n"]
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        answers = list(pool.map(lambda job: post(base, *job), zip(paths, bodies)))
    assert [a.status_code for a in answers] == [200, 422, 200, 200, 200]
    tokens = len(local_scorer.formatter.tokenizer(*local_scorer.formatter.text([Message(**LONG[0])], Message(**LONG[1])))["input_ids"])
    assert answers[1].json()["detail"] == f"a conversation has {tokens:,} tokens, over the limit of 512 (send truncate: true to cut it)"
    good, long = local_scorer.score([[Message(**m) for m in c] for c in (GOOD, LONG)])
    assert answers[0].json()["scores"] == pytest.approx([good], abs=1e-4)
    assert answers[2].json()["scores"] == pytest.approx([long], abs=1e-4)
    assert answers[3].json()["scores"] == pytest.approx([good, long], abs=1e-4)
    assert answers[4].json()["scores"][1] == pytest.approx(long, abs=1e-4)


def _trickle(base: str, first: bytes, then: bytes, pause_s: float, give_up_s: float) -> tuple[bytes, float]:
    """Send `first`, then `then` a byte every `pause_s`; (what came back, seconds until closed).

    Reads before each write: a write after the server closed would reset the connection and
    lose its answer."""
    host, port = base.removeprefix("http://").split(":")
    start = time.monotonic()
    received = b""
    with socket.create_connection((host, int(port)), timeout=give_up_s) as sock:
        sock.sendall(first)
        sock.setblocking(False)
        for byte in then + b" " * int(give_up_s / pause_s):  # keep at it until dropped or give_up_s
            time.sleep(pause_s)
            try:
                chunk = sock.recv(4096)
            except BlockingIOError:
                chunk = None
            except ConnectionResetError:
                break
            if chunk == b"":
                break
            received += chunk or b""
            if time.monotonic() - start > give_up_s:
                break
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
    return received, time.monotonic() - start


def test_trickling_headers_are_dropped(served):
    """Connections sending their headers a byte at a time were held for as long as they kept at it."""
    base, _ = served
    headers = b"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() + b"\r\nX-Slow: " + b"a" * 200
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(lambda _: _trickle(base, b"P", headers[1:], 0.1, give_up_s=8), range(10)))
    for received, seconds in results:
        assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert READ_TIMEOUT_S <= seconds < READ_TIMEOUT_S + 1.5
    assert httpx.get(f"{base}/health").status_code == 200


def test_a_trickling_body_gets_408(served):
    base, _ = served
    body = json.dumps({"conversations": [GOOD]}).encode()
    head = (b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer "
            + KEY.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")  # fmt: skip
    received, seconds = _trickle(base, head, body, 0.2, give_up_s=8)
    assert received.startswith(b"HTTP/1.1 408 ") and b"\r\nconnection: close\r\n" in received
    assert received.endswith(b'\r\n\r\n{"detail": "request body not received within 1 s"}')
    assert seconds < READ_TIMEOUT_S + 1.5


def hostile_requests() -> list[tuple[str, str, dict, bytes | None, int]]:
    """(name, method + path, headers, body, expected status): 36 requests an attacker would try."""
    surrogate = b'{"conversations": [[{"role": "user", "content": "\\ud800"}, {"role": "assistant", "content": "x"}]]}'
    huge = json.dumps({"conversations": [chat("hi", "x" * MAX_BODY_BYTES)]}).encode()

    def body(value) -> bytes:
        return json.dumps(value).encode()

    return [
        ("no key", "POST /v1/score", {}, body({"conversations": [GOOD]}), 401),
        ("wrong key", "POST /v1/score", {"Authorization": "Bearer nope"}, body({"conversations": [GOOD]}), 401),
        ("basic auth", "POST /v1/score", {"Authorization": "Basic czNjcmV0"}, body({"conversations": [GOOD]}), 401),
        ("non-ASCII key", "POST /v1/score", {"Authorization": "Bearer é".encode()}, body({"conversations": [GOOD]}), 401),
        ("raw high bytes in key", "POST /v1/score", {"Authorization": b"Bearer \xff\xfe"}, body({"conversations": [GOOD]}), 401),
        ("key prefix", "POST /v1/score", {"Authorization": "Bearer s3cre"}, body({"conversations": [GOOD]}), 401),
        ("metrics without key", "GET /metrics", {}, None, 401),
        ("openapi without key", "GET /openapi.json", {}, None, 401),
        ("docs without key", "GET /docs", {}, None, 401),
        ("wrong key, bad body", "POST /v1/score", {"Authorization": "Bearer nope"}, b"{{{{", 401),
        ("lone surrogate", "POST /v1/score", AUTH, surrogate, 422),
        ("surrogate in best-of-n", "POST /v1/best-of-n", AUTH,
         b'{"conversation": [{"role": "user", "content": "hi"}], "responses": ["\\udfff"]}', 422),
        ("surrogate in get_reward", "POST /get_reward", AUTH, b'{"query": ["\\ud83d"]}', 422),
        ("malformed JSON", "POST /v1/score", AUTH, b'{"conversations": [', 400),
        ("not JSON at all", "POST /v1/score", AUTH, b"\x00\x01\x02", 400),
        ("huge body", "POST /v1/score", AUTH, huge, 413),
        ("too many items", "POST /v1/score", AUTH, body({"conversations": [GOOD] * 9}), 413),
        ("string for list", "POST /v1/score", AUTH, body({"conversations": "hello"}), 422),
        ("number for content", "POST /v1/score", AUTH, body({"conversations": [[{"role": "user", "content": 5}]]}), 422),
        ("null conversation", "POST /v1/score", AUTH, body({"conversations": [None]}), 422),
        ("unknown role", "POST /v1/score", AUTH, body({"conversations": [[{"role": "root", "content": "x"}]]}), 422),
        ("extra message field", "POST /v1/score", AUTH, body({"conversations": [[{"role": "user", "content": "x", "x": 1}]]}), 422),
        ("empty list", "POST /v1/score", AUTH, body({"conversations": []}), 422),
        ("no user turn", "POST /v1/score", AUTH,
         body({"conversations": [[{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]]}), 422),
        ("no user turn, compare", "POST /v1/compare", AUTH,
         body({"conversation": [{"role": "system", "content": "s"}], "responses": ["a", "b"]}), 422),
        ("ends with user", "POST /v1/score", AUTH, body({"conversations": [[{"role": "user", "content": "x"}]]}), 422),
        ("truncate not a bool", "POST /v1/score", AUTH, body({"conversations": [GOOD], "truncate": "maybe"}), 422),
        ("over-long input", "POST /v1/score", AUTH, body({"conversations": [LONG]}), 422),
        ("over-long query, cutting refused", "POST /get_reward", AUTH, body({"query": ["word " * 2000], "truncate": False}), 422),
        ("classify, no input", "POST /classify", AUTH, body({"model": "m"}), 422),
        ("surrogate in classify", "POST /classify", AUTH, b'{"text": ["\\ud83d"]}', 422),
        ("classify, ids outside the vocabulary", "POST /classify", AUTH, body({"input": [[1, 10**9]]}), 422),
        ("classify, over-long without truncate_prompt_tokens", "POST /classify", AUTH, body({"input": "word " * 2000}), 422),
        ("compare with one response", "POST /v1/compare", AUTH, body({"conversation": GOOD[:1], "responses": ["a"]}), 422),
        ("deep nesting", "POST /v1/score", AUTH, b'{"conversations": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
        ("escape bytes in path", "GET /%1b[31m%0d%0aFAKE", AUTH, None, 404),
        ("escape bytes, no key", "GET /%1b]0;pwned%07", {}, None, 401),
        ("wrong method", "GET /v1/score", AUTH, None, 405),
        ("path traversal", "GET /../../etc/passwd", AUTH, None, 404),
        ("long truncated input", "POST /v1/score", AUTH, body({"conversations": [LONG], "truncate": True}), 200),
    ]  # fmt: skip


def test_fuzz_no_5xx_no_traceback_and_healthy_after(served):
    base, log_path = served
    cases = hostile_requests()
    assert len(cases) >= 30

    def send(case):
        name, target, headers, content, _ = case
        method, path = target.split(" ", 1)
        headers = {"content-type": "application/json", **headers}
        return httpx.request(method, f"{base}{path}", content=content, headers=headers, timeout=60).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(send, cases))
    assert {name: status for (name, *_), status in zip(cases, statuses)} == {name: expected for name, *_, expected in cases}
    metrics = httpx.get(f"{base}/metrics", headers=AUTH).text
    assert not re.search(r'status="5\d\d"', metrics)
    assert httpx.get(f"{base}/health", headers=AUTH).json()["status"] == "ok"
    assert post(base, "/v1/score", {"conversations": [GOOD]}).status_code == 200
    log = log_path.read_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:3000]
    access_log = [line for line in log.splitlines() if " synpref.serve " in line]
    assert not [line for line in access_log if "\x1b" in line]  # transformers colours its own load report
    assert "GET /\\x1b[31m\\r\\nFAKE 404 " in log
    assert "GET /\\x1b]0;pwned\\x07 401 " in log
