"""The reward server: `create_app(scorer)` builds a FastAPI app around one `RewardScorer`.

Routes (versioned, pydantic schemas): POST /v1/score, /v1/compare, /v1/best-of-n, OpenRLHF's
POST /get_reward, the inference engines' routes (`synpref.serve.engines`: vLLM's and SGLang's
/classify, /v1/classify, /v1/embeddings, /pooling, GET /v1/models), GET /health and GET /metrics
(Prometheus). The inputs of all waiting requests are tokenized together in one batched call
on a tokenizer thread (`synpref.serve.encoding`), checked against the limits, then merged into
batches by `MicroBatcher`, in this process or in the model owner behind HTTP worker processes
(`synpref.serve.model`).
Logs carry endpoint, status, counts and latency, never payloads.

With API keys set, every path but /health needs one (the docs and metrics too), checked before
the body is read; /health then answers only "ok" to a caller without a key, for liveness probes.
Clients in `keyless_clients` need no key: RLHF trainers send no Authorization header.

With a reward spec (`synpref.reward`), /get_reward's `labels` and /v1/score's `reference` go to
rule-based verifiers and the answer is the spec's combination; without one nothing changes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from synpref.data.models import Message
from synpref.reward.combine import Components, HybridReward, numeric_logs
from synpref.reward.queries import ReplyReader
from synpref.reward.spec import RewardSpec
from synpref.reward.verifiers import BadReference
from synpref.serve.batcher import QueueFull, UnscorableInput
from synpref.serve.config import ServeConfig
from synpref.serve.encoding import EncodeJob, EncodeStage
from synpref.serve.engines import ENGINE_ROUTES, add_engine_routes
from synpref.serve.limits import (
    BodyLimits,
    CancelOnDisconnect,
    RequestEncoder,
    RequireKey,
    TextRequest,
    key_accepted,
    printable,
    send_json,
)

log = logging.getLogger("synpref.serve")
ROUTES = ("/v1/score", "/v1/compare", "/v1/best-of-n", "/get_reward", *ENGINE_ROUTES, "/health", "/metrics")


class ScoreRequest(TextRequest):
    conversations: list[list[Message]] = Field(min_length=1, description="each ends with the assistant reply to score")
    truncate: bool = Field(False, description="cut over-long inputs (keeping their end) instead of refusing them")
    reference: list[Any] | None = Field(
        None, description="one reference answer (or label object) per conversation, for a server with a reward spec; ignored without one",
    )  # fmt: skip


class ScoreResponse(BaseModel):
    scores: list[float]  # the reward model's, always
    # With a reward spec and `reference`: the combined rewards, their components and verifier reasons.
    rewards: list[float] | None = None
    components: dict[str, list[float]] | None = None
    reasons: list[str | None] | None = None


class CandidatesRequest(TextRequest):
    conversation: list[Message] = Field(min_length=1, description="the history, ending with a user turn")
    responses: list[str] = Field(min_length=1, description="candidate assistant replies")
    truncate: bool = False


class CompareResponse(BaseModel):
    scores: list[float]
    probabilities: list[float]  # Bradley-Terry/Plackett-Luce chance that each response is the best
    preferences: list[list[float]]  # preferences[i][j] = P(response i preferred to j) = sigmoid(r_i - r_j)


class BestOfNResponse(BaseModel):
    scores: list[float]
    ranking: list[int]  # response indices, best first
    best: int
    best_response: str


class RewardRequest(TextRequest):
    """OpenRLHF's remote reward protocol, as its current client sends it (openrlhf/utils/agent.py:
    `{"query", "prompts", "labels"}`, one list entry per sample)."""

    model_config = ConfigDict(extra="allow")
    query: list[str] = Field(min_length=1, description="full texts: prompt and response, chat template applied")
    prompts: list[str | None] | None = Field(None, description="the prompts alone; not needed to score")
    labels: list[Any] | None = Field(None, description="reference answers for the reward spec's verifiers; unused without a spec")
    truncate: bool = Field(True, description="cut over-long queries keeping their end (as OpenRLHF's serve_rm does); false: refuse them")


class RewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float]  # OpenRLHF reads `scores` first (for filtering and logging), then `rewards`
    # Logged by OpenRLHF per sample, so numbers only: 1.0 where a query was cut, its tokens before cutting.
    extra_logs: dict[str, list[float]]


def create_app(scorer, config: ServeConfig | None = None, model_name: str = "reward-model", reward_spec: RewardSpec | None = None) -> FastAPI:
    """`scorer`: a `RewardScorer` (scored in this process) or a `synpref.serve.model.RemoteModel`
    (a model owner's); `reward_spec`: a `synpref.reward.spec.RewardSpec` to combine the RM with verifiers."""
    from synpref.serve.model import LocalModel, RemoteModel

    config = config or ServeConfig()
    hybrid = HybridReward(reward_spec) if reward_spec is not None else None
    reader = ReplyReader(scorer.formatter) if hybrid is not None else None
    metrics = _Metrics()
    model = scorer if isinstance(scorer, RemoteModel) else LocalModel(scorer, config)
    encoder = RequestEncoder(scorer.formatter)
    stage = EncodeStage(encoder.tokenizer)

    app = FastAPI(title="synpref reward server", version="1")
    # Outermost last: the access log sees every answer, the key is checked before the body is read.
    app.add_middleware(CancelOnDisconnect)
    app.add_middleware(BodyLimits, max_bytes=config.max_body_bytes, timeout_s=config.read_timeout_s)
    app.add_middleware(RequireKey, keys=config.api_keys, keyless_clients=config.keyless_clients)
    app.add_middleware(AccessLog, metrics=metrics)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.router.add_event_handler("shutdown", model.close)
    app.router.add_event_handler("shutdown", stage.close)
    if hybrid is not None:
        app.router.add_event_handler("startup", hybrid.pool.start)
        app.router.add_event_handler("shutdown", hybrid.close)
    keys = [k.encode() for k in config.api_keys]

    async def rewards(job: EncodeJob, sequences_out: list | None = None) -> list[float]:
        """Scores of a request's inputs; `sequences_out` receives their token ids."""
        if len(job.items) > config.max_items:
            raise HTTPException(413, f"{len(job.items)} items in one request; the limit is {config.max_items}")
        try:
            sequences = await stage.encode(job)
        except ValueError as error:  # InputTooLong included
            raise HTTPException(422, str(error)) from None
        if sequences_out is not None:
            sequences_out.extend(sequences)
        try:
            return await asyncio.wait_for(model.score(sequences), config.request_timeout_s)
        except UnscorableInput as error:
            raise HTTPException(422, str(error)) from None
        except QueueFull:
            raise HTTPException(503, "server busy: the scoring queue is full", headers={"Retry-After": "1"}) from None
        except asyncio.TimeoutError:
            raise HTTPException(504, f"no result within {config.request_timeout_s:g} s") from None

    @app.post("/v1/score", response_model=ScoreResponse, response_model_exclude_none=True)
    async def score(body: ScoreRequest) -> ScoreResponse:
        scores = await rewards(encoder.conversations(body.conversations, body.truncate))
        if hybrid is None or body.reference is None:
            return ScoreResponse(scores=scores)
        replies = [conversation[-1].content for conversation in body.conversations]
        parts = await _components(hybrid, scores, replies, body.reference, config.request_timeout_s)
        reasons = [c.verdict.reason if c.verdict else None for c in parts]
        return ScoreResponse(scores=scores, rewards=[c.combined for c in parts], components=numeric_logs(parts), reasons=reasons)

    def candidates(body: CandidatesRequest) -> list[list[Message]]:
        return [[*body.conversation, Message(role="assistant", content=r)] for r in body.responses]

    @app.post("/v1/compare", response_model=CompareResponse)
    async def compare(body: CandidatesRequest) -> CompareResponse:
        if len(body.responses) < 2:
            raise HTTPException(422, "compare needs at least two responses")
        scores = await rewards(encoder.conversations(candidates(body), body.truncate))
        return CompareResponse(scores=scores, probabilities=_softmax(scores), preferences=_pairwise(scores))

    @app.post("/v1/best-of-n", response_model=BestOfNResponse)
    async def best_of_n(body: CandidatesRequest) -> BestOfNResponse:
        scores = await rewards(encoder.conversations(candidates(body), body.truncate))
        ranking = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        return BestOfNResponse(scores=scores, ranking=ranking, best=ranking[0], best_response=body.responses[ranking[0]])

    @app.post("/get_reward", response_model=RewardResponse)
    async def get_reward(body: RewardRequest) -> RewardResponse:
        lengths: list[int] = []
        scores = await rewards(encoder.texts(body.query, body.truncate, lengths=lengths))
        truncated = [float(n > encoder.limit) for n in lengths]
        extra = {"truncated": truncated, "query_tokens": [float(n) for n in lengths]}
        if hybrid is None:
            return RewardResponse(rewards=scores, scores=scores, extra_logs=extra)
        prompts = body.prompts or [None] * len(body.query)
        if len(prompts) != len(body.query):
            raise HTTPException(422, f"{len(prompts)} prompts for {len(body.query)} queries")
        replies = [reader.reply(query, prompt) for query, prompt in zip(body.query, prompts)]
        parts = await _components(hybrid, scores, replies, body.labels, config.request_timeout_s)
        combined = [c.combined for c in parts]
        return RewardResponse(rewards=combined, scores=combined, extra_logs={**extra, **numeric_logs(parts)})

    add_engine_routes(app, rewards, encoder, model_name)

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        if keys and not key_accepted(request.scope["headers"], keys):
            return {"status": "ok"}  # a liveness probe needs no more, and has no key
        return {
            "status": "ok", "model": model_name, "queue": (await model.status())["queue"],
            "batch_tokens": {"gather": config.max_batch_tokens, "forward": getattr(scorer, "token_budget", None)},
        }  # fmt: skip

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render() + await model.metrics(), media_type="text/plain; version=0.0.4")

    return app


async def _components(hybrid: HybridReward, scores: list[float], replies: list[str], labels: list | None,
                      timeout_s: float) -> list[Components]:  # fmt: skip
    """Verifier verdicts and combined rewards from the verifier processes (`synpref.reward.sandbox`:
    each item under a time limit), awaited in a thread; past `timeout_s`, or when the request is
    cancelled, the verification is dropped and its worker killed."""
    from synpref.reward.sandbox import Cancelled

    labels = labels if labels is not None else [None] * len(scores)
    if len(labels) != len(scores):
        raise HTTPException(422, f"{len(labels)} labels for {len(scores)} items")
    cancel = threading.Event()
    try:
        return await run_in_threadpool(hybrid.many, scores, replies, labels, time.monotonic() + timeout_s, cancel)
    except BadReference as error:
        raise HTTPException(422, str(error)) from None
    except Cancelled:
        raise HTTPException(504, f"verification not done within {timeout_s:g} s") from None
    finally:
        cancel.set()  # a no-op when done; when this coroutine is cancelled, it stops the worker


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """400 for a body that is not JSON at all, 422 with the failing fields otherwise."""
    problems = error.errors()
    if any(p.get("type") == "json_invalid" for p in problems):
        return JSONResponse({"detail": "malformed JSON body"}, status_code=400)
    fields = "; ".join(f"{'.'.join(str(part) for part in p['loc'][1:]) or 'body'}: {p['msg']}" for p in problems)
    return JSONResponse({"detail": fields}, status_code=422)


def _softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    return [w / sum(weights) for w in weights]


def _pairwise(scores: list[float]) -> list[list[float]]:
    return [[1 / (1 + math.exp(b - a)) for b in scores] for a in scores]


class AccessLog:
    """ASGI middleware, outermost: one log line and one metrics count per answer, 500s included.

    An error no handler caught is logged with its traceback and answered with a plain 500 here,
    so it is counted like any other answer."""

    def __init__(self, app, metrics: _Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = None

        async def recording_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], printable(scope["path"]))
            if status is None:
                await send_json(recording_send, 500, "internal server error")
            status = 500
        if status is None:  # the client left before any answer
            return
        elapsed = time.perf_counter() - start
        path = scope["path"] if scope["path"] in ROUTES else "other"  # bounded label values
        self.metrics.observe_request(path, status, elapsed)
        log.info("%s %s %d %.1f ms", scope["method"], printable(scope["path"]), status, 1000 * elapsed)


class _Metrics:
    """Request metrics in a registry of the app's own, so several apps can live in one process
    (the batch metrics live beside the batcher, `synpref.serve.model.LocalModel`)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("synpref_requests", "HTTP requests", ["path", "status"], registry=self.registry)
        self.latency = Histogram("synpref_request_seconds", "request latency", ["path"], registry=self.registry)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        self.requests.labels(path, str(status)).inc()
        self.latency.labels(path).observe(seconds)

    def render(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()
