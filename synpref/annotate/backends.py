"""Judge backends: how a chat request becomes a completion.

Backends are a registry (`BACKENDS`) of small classes; `register_backend` refuses a name
that is already taken. A backend only transports requests: retries of malformed answers,
caching and accounting live in the runner, so every backend gets them.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import os
import random
import time
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict

from synpref.annotate.config import JudgeConfig
from synpref.errors import SynprefError
from synpref.registry import Registry


class ChatRequest(BaseModel):
    """Everything that decides an answer; its hash is the cache key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    messages: list[dict[str, str]]
    temperature: float
    max_tokens: int
    seed: int
    response_format: Optional[dict[str, Any]] = None
    # Text the answer is forced to start with. Only the local backend can do this; it keeps
    # a small model on the answer format (e.g. '{"preferred": "Candidate ').
    prefill: Optional[str] = None
    stop: Optional[list[str]] = None  # generation ends once the answer ends with one of these

    def key(self) -> str:
        canonical = json.dumps(self.model_dump(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


class Completion(BaseModel):
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class RequestFailed(Exception):
    """The request could not be completed after all retries; nothing was paid for."""


BACKENDS: Registry[Backend] = Registry("judge backend")


def register_backend(name: str):
    """Class decorator adding a backend under `name`; a second backend with that name is an error."""

    def add(cls: type[Backend]) -> type[Backend]:
        BACKENDS.register(cls, name)
        cls.name = name
        return cls

    return add


def create_backend(judge: JudgeConfig, limits: dict | None = None) -> Backend:
    """A backend for `judge`; judges sharing `limits` share one concurrency limit per model."""
    if judge.backend not in BACKENDS:
        raise SynprefError(f"judge {judge.name!r}: unknown backend {judge.backend!r}; known: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[judge.backend](judge, {} if limits is None else limits)


class Backend:
    """Subclasses implement `complete`; `close` releases connections or models."""

    name = ""
    supports_prefill = False

    def __init__(self, judge: JudgeConfig, limits: dict):
        self.judge = judge
        self.limits = limits

    async def complete(self, request: ChatRequest) -> Completion:
        raise NotImplementedError

    async def close(self) -> None:
        pass


@register_backend("openai")
class OpenAIBackend(Backend):
    """Any OpenAI-compatible chat-completions server (OpenAI, vLLM, SGLang, ...).

    The SDK's own retries are off: ours add jitter, honour Retry-After with a cap, and retry
    broken bodies too.
    """

    def __init__(self, judge: JudgeConfig, limits: dict):
        super().__init__(judge, limits)
        from openai import AsyncOpenAI

        api_key = "EMPTY"  # local servers accept any key, but the SDK wants one
        if judge.api_key_env:
            api_key = os.environ.get(judge.api_key_env, "")
            if not api_key:
                raise SynprefError(f"judge {judge.name!r}: environment variable {judge.api_key_env} is not set")
        self.client = AsyncOpenAI(base_url=judge.base_url, api_key=api_key, timeout=judge.timeout, max_retries=0)
        # One limit per (server, model), shared by every judge config that points at it.
        limit_key = (str(self.client.base_url), judge.model)
        self.limit = limits.setdefault(limit_key, asyncio.Semaphore(judge.concurrency))

    async def complete(self, request: ChatRequest) -> Completion:
        for attempt in range(self.judge.max_retries + 1):
            async with self.limit:
                try:
                    return await self._send(request)
                except Exception as error:  # sorted into retryable or not by _retry_delay
                    delay = self._retry_delay(error, attempt)
                    if delay is None or attempt == self.judge.max_retries:
                        raise RequestFailed(f"{type(error).__name__}: {error}") from error
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _send(self, request: ChatRequest) -> Completion:
        arguments: dict[str, Any] = {
            "model": request.model,
            "messages": request.messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "seed": request.seed,
        }
        if request.response_format is not None:
            arguments["response_format"] = request.response_format
        if request.stop:
            arguments["stop"] = request.stop
        response = await self.client.chat.completions.create(**arguments)
        usage = response.usage
        return Completion(
            text=response.choices[0].message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    def _retry_delay(self, error: Exception, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None when retrying cannot help (e.g. 400, 401)."""
        import openai

        if isinstance(error, openai.APIStatusError):
            if error.status_code not in (408, 409, 429) and error.status_code < 500:
                return None
            server_says = retry_after_seconds(error.response.headers)
            if server_says is not None:
                return min(server_says, self.judge.backoff_max)
        elif not isinstance(error, (openai.APIConnectionError, openai.APIResponseValidationError, ValueError)):
            return None  # a bug or a cancelled task, not a flaky server
        return backoff_delay(attempt, self.judge.backoff_base, self.judge.backoff_max)

    async def close(self) -> None:
        await self.client.close()


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter, so that many clients do not retry in lockstep.

    https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/
    """
    return random.uniform(0, min(cap, base * 2**attempt))


def retry_after_seconds(headers: Any) -> float | None:
    """The wait a 429/503 asks for: `retry-after-ms`, or `Retry-After` in seconds or as a date."""
    if headers.get("retry-after-ms"):
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


@register_backend("local")
class LocalBackend(Backend):
    """Generation with transformers on this machine (default: the bundled SmolLM2-135M).

    One request at a time, in a worker thread, so the event loop keeps serving the others.
    """

    supports_prefill = True

    def __init__(self, judge: JudgeConfig, limits: dict):
        super().__init__(judge, limits)
        self.lock = asyncio.Lock()
        self.model: Any = None
        self.tokenizer: Any = None

    async def complete(self, request: ChatRequest) -> Completion:
        async with self.lock:
            if self.model is None:
                await asyncio.to_thread(self._load)
            return await asyncio.to_thread(self._generate, request)

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from synpref.rm.models import resolve_model_path

        path = resolve_model_path(self.judge.model)  # embedded names are converted once, cached
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=self.judge.dtype).eval()

    def _generate(self, request: ChatRequest) -> Completion:
        import torch

        prompt = self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        prompt += request.prefill or ""
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        prompt_length = inputs["input_ids"].shape[1]
        stops = request.stop or ["}"]  # answers are one JSON object: stop when it closes
        sampling = {"do_sample": False}
        if request.temperature > 0:
            torch.manual_seed(request.seed)
            sampling = {"do_sample": True, "temperature": request.temperature}

        def stop_when_seen(input_ids, scores, **kwargs):
            # Checked on the decoded tail; transformers' `stop_strings` re-indexes the whole
            # vocabulary on every call, which costs more than the generation itself here.
            text = self.tokenizer.decode(input_ids[0, prompt_length:], skip_special_tokens=True)
            return torch.tensor([any(stop in text for stop in stops)])

        with torch.no_grad():
            output = self.model.generate(
                **inputs,
                **sampling,
                max_new_tokens=request.max_tokens,
                stopping_criteria=[stop_when_seen],
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new_tokens = output[0, prompt_length:]
        text = cut_after_stop(self.tokenizer.decode(new_tokens, skip_special_tokens=True), stops)
        return Completion(
            text=(request.prefill or "") + text,
            prompt_tokens=int(prompt_length),
            completion_tokens=int(new_tokens.shape[0]),
        )


def cut_after_stop(text: str, stops: list[str]) -> str:
    """`text` up to the end of the first stop string (a token can run past it, e.g. '",')."""
    ends = [text.index(stop) + len(stop) for stop in stops if stop in text]
    return text[: min(ends)] if ends else text
