"""Issue 28, acceptance 3: OpenAI content parts on every route that takes a conversation (vLLM
accepts them there), and a 401 that tells a keyless trainer what to do; the startup line says
which routes need a key and which clients are keyless."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("torch")

from synpref.serve.app import create_app  # noqa: E402
from synpref.serve.config import ServeConfig  # noqa: E402
from synpref.serve.limits import UNAUTHORIZED, auth_summary  # noqa: E402
from tests.conftest import live_server, serve_process  # noqa: E402

USER, REPLY, OTHER = "What is 2 + 2?\nAnswer briefly.", "It is 4.", "Five."


def parts(text: str) -> list[dict]:
    """`text` as two content parts, of the chat-completions and Responses API types."""
    first, second = text.split("\n", 1) if "\n" in text else (text, None)
    return [{"type": "text", "text": first}] + ([{"type": "input_text", "text": second}] if second else [])


@pytest.fixture(scope="module")
def url(tiny_llama_dir):
    from synpref.rm.scorer import RewardScorer

    scorer = RewardScorer.from_pretrained(str(tiny_llama_dir), max_length=64)
    with live_server(create_app(scorer, ServeConfig(), model_name="tiny")) as base:
        yield base


def routes(content) -> list[tuple[str, dict, str]]:
    """(path, body, where the score is) of every conversation route, the user turn as `content`."""
    conversation = [{"role": "user", "content": content}, {"role": "assistant", "content": REPLY}]
    candidates = {"conversation": conversation[:1], "responses": [REPLY, OTHER]}
    return [
        ("/v1/score", {"conversations": [conversation]}, "scores"),
        ("/v1/compare", candidates, "scores"),
        ("/v1/best-of-n", candidates, "scores"),
        ("/classify", {"messages": conversation}, "data"),
        ("/v1/classify", {"messages": conversation}, "data"),
        ("/pooling", {"messages": conversation}, "data"),
        ("/v1/embeddings", {"messages": conversation}, "data"),
    ]


def first_score(body: dict, where: str) -> float:
    if where == "scores":
        return body["scores"][0]
    row = body["data"][0]
    return (row.get("probs") or row.get("data") or row.get("embedding"))[0]


def test_content_parts_score_as_their_joined_text_on_every_route(url):
    for (path, plain, where), (_, with_parts, _) in zip(routes(USER), routes(parts(USER))):
        expected = httpx.post(f"{url}{path}", json=plain)
        answer = httpx.post(f"{url}{path}", json=with_parts)
        assert (expected.status_code, answer.status_code) == (200, 200), (path, answer.text)
        assert first_score(answer.json(), where) == first_score(expected.json(), where), path


def test_a_part_that_is_not_text_is_a_422_naming_the_field(url):
    image = [{"type": "text", "text": "What is in it?"}, {"type": "image_url", "image_url": {"url": "data:,"}}]
    expected = {
        "/v1/score": "conversations.0.0.content",
        "/v1/compare": "conversation.0.content", "/v1/best-of-n": "conversation.0.content",
        "/classify": "messages.0.content", "/v1/classify": "messages.0.content", "/pooling": "messages.0.content",
        "/v1/embeddings": "messages.0.content",
    }  # fmt: skip
    reason = "Value error, content[1]: a part of type 'image_url': only text parts (text, input_text, output_text) can be read"
    for path, body, _ in routes(image):
        answer = httpx.post(f"{url}{path}", json=body)
        assert (answer.status_code, answer.json()["detail"]) == (422, f"{expected[path]}: {reason}"), path


def test_a_401_names_the_header_and_the_keyless_option(tiny_llama_dir):
    from synpref.rm.scorer import RewardScorer

    scorer = RewardScorer.from_pretrained(str(tiny_llama_dir), max_length=64)
    with live_server(create_app(scorer, ServeConfig(api_keys=["k"]))) as base:
        answer = httpx.post(f"{base}/get_reward", json={"query": ["hi"]})  # as OpenRLHF sends it: no header
    assert (answer.status_code, answer.headers["www-authenticate"], answer.json()["detail"]) == (401, "Bearer", UNAUTHORIZED)
    assert "Authorization: Bearer <key>" in UNAUTHORIZED and "--keyless-client" in UNAUTHORIZED


def test_the_startup_line_says_who_needs_a_key(tmp_path):
    assert auth_summary([], []) == "no API keys: every route is open to any client that can reach this address"
    log = tmp_path / "serve.log"
    options = ["--model", "minilm-l6", "--api-key", "k", "--keyless-client", "127.0.0.0/8", "--workers", "0"]
    with serve_process(options, log):
        pass
    assert ("API keys required (Authorization: Bearer) on every route but /health; keyless clients: 127.0.0.0/8"
            in log.read_text().splitlines())  # fmt: skip
