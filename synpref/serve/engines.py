"""Routes that speak the inference engines' protocols, so their clients work unchanged.

Followed from the engines' own code (vLLM `vllm/frontend/entrypoints/pooling/*/protocol.py`,
SGLang `http_server.py` and its OpenAI embedding serving, veRL
`verl/experimental/reward_loop/reward_loop.py`):

- POST /classify, /v1/classify in vLLM's shape: `{"model", "input": str | [str] | [ids] |
  [[ids]]}` or `{"model", "messages": [...]}` -> `{"id", "object": "list", "created", "model",
  "data": [{"index", "label", "probs": [score], "num_classes": 1}], "usage"}`. veRL's reward
  loop sends `"activation": false` (vLLM's older name of `use_activation`).
- POST /classify in SGLang's native shape: `{"model", "text": str | [str]}` ->
  `{"embedding": [score], "meta_info"}` for one text, a list of them for a list (the
  Skywork-Reward-V2 model card's client); `input_ids` instead of `text` sends token ids.
- POST /v1/embeddings (SGLang's OpenAI route, veRL's reward loop): `{"model", "input"}` ->
  `{"object": "list", "data": [{"object": "embedding", "index", "embedding": [score]}], "model",
  "usage"}`.
- POST /pooling (vLLM): the classify request -> `{"id", "object": "list", "created", "model",
  "data": [{"index", "object": "pooling", "data": [score]}], "usage"}`.
- GET /v1/models: the one model served.

Scores are raw rewards, as /v1/score gives them; `use_activation: true` asks for sigmoid(reward)
(the activation vLLM applies to a one-label classifier by default). The `model` field is echoed,
not checked: RLHF trainers send their model path, which need not match the served name. Text
inputs are tokenized as vLLM does (special tokens added unless `add_special_tokens: false`);
an input over the length limit is refused unless `truncate_prompt_tokens` is set (-1: the
model's limit), and a cut keeps the input's end, where a reward model reads its score.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import ConfigDict, Field, StrictInt

from synpref.data.models import Message
from synpref.serve.encoding import EncodeJob
from synpref.serve.limits import TextRequest

ENGINE_ROUTES = ("/classify", "/v1/classify", "/v1/embeddings", "/pooling", "/v1/models")
Score = Callable[[EncodeJob, list], Awaitable[list[float]]]  # (job, list to receive its token ids) -> scores


class EngineRequest(TextRequest):
    """The union of vLLM's classify/pooling request and SGLang's native one."""

    model_config = ConfigDict(extra="allow")  # engines' other options (priority, user, ...) are accepted
    model: str | None = None
    # Token ids are strict: lax mode read `true` as id 1, 1.0 as 1 and "7" as 7.
    input: str | list[str] | list[StrictInt] | list[list[StrictInt]] | None = None
    messages: list[Message] | None = Field(None, min_length=2, description="one conversation ending with the reply to score")
    text: str | list[str] | None = Field(None, description="SGLang's native field")
    input_ids: list[StrictInt] | list[list[StrictInt]] | None = Field(None, description="SGLang's native field for token ids")
    use_activation: bool | None = None
    activation: bool | None = None  # vLLM before 0.11.2; veRL still sends it
    truncate_prompt_tokens: StrictInt | None = Field(None, ge=-1)
    add_special_tokens: bool = True

    def items(self) -> list:
        """The inputs as a list: texts, id lists, or one conversation."""
        given = [f for f in ("input", "messages", "text", "input_ids") if getattr(self, f) is not None]
        if len(given) != 1:
            raise HTTPException(422, "send exactly one of input, messages (vLLM), text or input_ids (SGLang)")
        if self.messages is not None:
            return [self.messages]
        value = getattr(self, given[0])
        if isinstance(value, str) or (value and isinstance(value[0], int)):
            return [value]
        if not value:
            raise HTTPException(422, "no input to score")
        return value

    @property
    def activated(self) -> bool:
        return bool(self.use_activation if self.use_activation is not None else self.activation)


def add_engine_routes(app: FastAPI, score: Score, encoder, model_name: str) -> None:
    """Register the engine-compatible routes on `app`; `score` is the app's scoring path."""

    async def rewards(body: EngineRequest) -> tuple[list[float], int]:
        limit = None if body.truncate_prompt_tokens in (None, -1) else body.truncate_prompt_tokens
        if limit == 0:
            raise HTTPException(422, "truncate_prompt_tokens must be -1 or positive")
        items, truncate = body.items(), body.truncate_prompt_tokens is not None
        if isinstance(items[0], str):
            job = encoder.texts(items, truncate, limit, add_special_tokens=body.add_special_tokens)
        elif items[0] and isinstance(items[0][0], Message):
            job = encoder.conversations(items, truncate)
        else:
            job = encoder.token_ids(items, truncate, limit)
        sequences: list[list[int]] = []
        scores = await score(job, sequences)
        if body.activated:
            scores = [1 / (1 + math.exp(-s)) for s in scores]
        return scores, sum(len(ids) for ids in sequences)

    def usage(tokens: int) -> dict[str, int]:
        return {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}

    def envelope(prefix: str, body: EngineRequest, data: list, tokens: int) -> dict[str, Any]:
        return {
            "id": f"{prefix}-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
            "model": body.model or model_name, "data": data, "usage": usage(tokens),
        }  # fmt: skip

    async def vllm_classify(body: EngineRequest) -> dict[str, Any]:
        scores, tokens = await rewards(body)
        data = [{"index": i, "label": "LABEL_0", "probs": [s], "num_classes": 1} for i, s in enumerate(scores)]
        return envelope("classify", body, data, tokens)

    @app.post("/classify")
    async def classify(body: EngineRequest) -> Any:
        native = body.text if body.text is not None else body.input_ids
        if native is None:
            return await vllm_classify(body)
        scores, _ = await rewards(body)
        answers = [{"embedding": [s], "meta_info": {"id": uuid.uuid4().hex, "finish_reason": None}} for s in scores]
        one = isinstance(native, str) or (native and isinstance(native[0], int))
        return answers[0] if one else answers

    app.post("/v1/classify")(vllm_classify)

    @app.post("/v1/embeddings")
    async def embeddings(body: EngineRequest) -> dict[str, Any]:
        scores, tokens = await rewards(body)
        data = [{"object": "embedding", "index": i, "embedding": [s]} for i, s in enumerate(scores)]
        return {"object": "list", "data": data, "model": body.model or model_name, "usage": usage(tokens)}

    @app.post("/pooling")
    async def pooling(body: EngineRequest) -> dict[str, Any]:
        scores, tokens = await rewards(body)
        data = [{"index": i, "object": "pooling", "data": [s]} for i, s in enumerate(scores)]
        return envelope("pool", body, data, tokens)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": model_name, "object": "model", "created": int(time.time()), "owned_by": "synpref",
                "root": model_name, "parent": None, "max_model_len": encoder.limit}  # fmt: skip
        return {"object": "list", "data": [card]}
