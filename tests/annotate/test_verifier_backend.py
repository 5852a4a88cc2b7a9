"""`synpref annotate` with a verifier judge in its judges file: the backend is known wherever jobs
run, and it says where verifier judges work instead of answering a chat request."""

from __future__ import annotations

import asyncio

import pytest

from synpref.annotate.backends import BACKENDS, ChatRequest, create_backend
from synpref.annotate.config import JudgeConfig
from synpref.errors import SynprefError


def test_a_verifier_judge_is_a_known_backend_that_answers_no_chat_request():
    import synpref.annotate.runner  # noqa: F401 (what `synpref annotate` imports)

    assert "verifier" in BACKENDS
    backend = create_backend(JudgeConfig(name="rules", backend="verifier", model="rules"))
    request = ChatRequest(model="rules", messages=[{"role": "user", "content": "?"}], temperature=0.0, max_tokens=8, seed=0)
    with pytest.raises(SynprefError, match="^judge 'rules': verifier judges decide pairs with a reference in `synpref curate`"):
        asyncio.run(backend.complete(request))
