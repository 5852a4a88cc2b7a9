"""Request limits: API keys (401), body size (413) and time (408), nesting depth and valid text
(422), input length in tokens (422, unless truncation is asked for). The ASGI middlewares here
run before the framework reads a byte of the body, so a client without a key or over a limit
costs the server nothing; a client that leaves has its request cancelled (`CancelOnDisconnect`)."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel, model_validator
from pydantic_core import PydanticCustomError

from synpref.data.models import Message
from synpref.serve.encoding import EncodeJob

log = logging.getLogger("synpref.serve")

# Real bodies nest 4 levels (body, conversations, conversation, message); labels for a reward
# spec may add a few. 900 levels overflowed Python's stack in the walk below (a 500).
MAX_DEPTH = 64


class TextRequest(BaseModel):
    """A request body nested at most `MAX_DEPTH` levels, whose strings are valid Unicode
    (checked before any field, so pydantic never walks a deeper body)."""

    @model_validator(mode="before")
    @classmethod
    def _shallow_valid_unicode(cls, data: Any) -> Any:
        for value, depth in _walk(data):
            if isinstance(value, (dict, list)) and depth >= MAX_DEPTH:  # the body itself is level 1
                raise PydanticCustomError("too_deep", "nested deeper than {limit} levels", {"limit": MAX_DEPTH})
            # JSON can escape a lone surrogate ("\ud800"): valid JSON, but not text. No tokenizer
            # encodes it and no response echoing it can be written, so it is refused here.
            if isinstance(value, str) and not _encodable(value):
                raise ValueError("text must be valid Unicode (a lone surrogate such as \\ud800 is not)")
        return data


def _walk(value: Any) -> Iterator[tuple[Any, int]]:
    """Every value in `value`, dict keys included, with the number of lists and dicts around it
    (`value` itself: 0). An explicit stack, not recursion: the depth is the client's to choose."""
    stack = [(value, 0)]
    while stack:
        value, depth = stack.pop()
        yield value, depth
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class InputTooLong(ValueError):
    pass


class RequestEncoder:
    """Token ids for requests, formatted exactly as `RewardScorer` formats them.

    Each method builds an `EncodeJob` (`synpref.serve.encoding`) for one request's items: the
    texts to tokenize, then the checks on the ids. Over-long inputs are refused with their length;
    with `truncate` they are cut the way the formatter cuts them (`synpref.rm.formatting`).
    """

    def __init__(self, formatter):
        self.formatter = formatter
        self.tokenizer = formatter.tokenizer
        self.limit = formatter.max_length

    def conversations(self, items: Sequence[Sequence[Message]], truncate: bool) -> EncodeJob:
        def prepare(messages: Sequence[Message]) -> tuple[str, str | None, bool]:
            if len(messages) < 2 or messages[-1].role != "assistant":
                raise ValueError("a conversation to score needs a history and a final assistant message")
            if not any(m.role == "user" for m in messages[:-1]):
                # a reward model is trained on replies to users; a reply to nothing has no meaning
                raise ValueError("a conversation to score needs a user turn before the final assistant message")
            return (*self.formatter.text(messages[:-1], messages[-1]), True)

        def finish(messages: Sequence[Message], ids: list[int]) -> list[int]:
            if len(ids) <= self.limit:
                return ids
            if not truncate:
                raise InputTooLong(f"a conversation has {len(ids):,} tokens, over the limit of {self.limit:,} (send truncate: true to cut it)")
            return self.formatter.encode(messages[:-1], messages[-1])

        return EncodeJob(items, prepare, finish)

    def texts(
        self, items: Sequence[str], truncate: bool, limit: int | None = None, add_special_tokens: bool = True, lengths: list[int] | None = None
    ) -> EncodeJob:
        """Queries already in the chat format (OpenRLHF sends prompt + response as one text; an
        encoder's prompt and response are joined by its SEP token, see `synpref.rm.formatting`).
        `lengths` gets each query's length in tokens before cutting."""
        limit = min(limit or self.limit, self.limit)
        tokenizer = self.tokenizer

        def prepare(text: str) -> tuple[str, str | None, bool]:
            text, text_pair = self.formatter.split_text(_strip_token(text, tokenizer.pad_token))
            return text, text_pair, add_special_tokens if text_pair is None else True

        def finish(text: str, full: list[int]) -> list[int]:
            text, text_pair = self.formatter.split_text(_strip_token(text, tokenizer.pad_token))
            if text_pair is not None:
                ids = full
                if len(full) > limit:
                    ids = tokenizer(text, text_pair, truncation="longest_first", max_length=limit)["input_ids"]
            else:
                bos = tokenizer.bos_token
                if bos and text.startswith(bos) and len(full) > 1 and full[0] == full[1] == tokenizer.bos_token_id:
                    full = full[1:]  # the policy's decoded text carries a BOS the tokenizer adds again
                ids = full[-limit:]
            if len(ids) < len(full) and not truncate:
                raise InputTooLong(f"a query has {len(full):,} tokens, over the limit of {len(ids):,}")
            if lengths is not None:
                lengths.append(len(full))
            return ids

        return EncodeJob(items, prepare, finish)

    def token_ids(self, items: Sequence[Sequence[int]], truncate: bool, limit: int | None = None) -> EncodeJob:
        """Ids sent as such (vLLM accepts token ids as input); the end is kept when cut."""
        vocabulary = len(self.tokenizer)
        limit = min(limit or self.limit, self.limit)

        def finish(ids: Sequence[int], _: None) -> list[int]:
            if not ids or any(not 0 <= i < vocabulary for i in ids):
                raise ValueError(f"token ids must be non-empty and within the vocabulary (0 to {vocabulary - 1})")
            if len(ids) > limit and not truncate:
                raise InputTooLong(f"an input has {len(ids):,} tokens, over the limit of {limit:,}")
            return list(ids[-limit:])

        return EncodeJob(items, lambda ids: None, finish)


def _strip_token(text: str, token: str | None) -> str:
    """Remove padding a trainer left around a decoded sequence."""
    if not token:
        return text
    while text.startswith(token):
        text = text[len(token) :]
    while text.endswith(token):
        text = text[: -len(token)]
    return text


def key_accepted(headers: Sequence[tuple[bytes, bytes]], keys: Sequence[bytes]) -> bool:
    """Whether the raw ASGI `headers` carry "Authorization: Bearer <one of keys>".

    Compared as bytes: a header may hold any byte, and `hmac.compare_digest` refuses str with
    non-ASCII characters (that was a 500)."""
    value = next((v for name, v in headers if name == b"authorization"), b"")
    scheme, _, key = value.partition(b" ")
    return scheme.lower() == b"bearer" and any(hmac.compare_digest(key, k) for k in keys)


# What a client without a key needs to know: trainers log the body of a refused request.
UNAUTHORIZED = (
    "missing or wrong API key: send the header 'Authorization: Bearer <key>'; clients that cannot send "
    "one (OpenRLHF, veRL) are let in by address when the server runs with --keyless-client NETWORK "
    "(e.g. --keyless-client 10.0.0.0/8)"
)


def auth_summary(keys: Sequence[str], keyless_clients: Sequence[str], open_paths: tuple[str, ...] = ("/health",)) -> str:
    """One line for the startup log: which routes need a key, and who is let in without one."""
    if not keys:
        return "no API keys: every route is open to any client that can reach this address"
    keyless = ", ".join(keyless_clients) if keyless_clients else "none (add --keyless-client NETWORK for OpenRLHF or veRL)"
    return (f"API keys required (Authorization: Bearer) on every route but {', '.join(open_paths)}; "
            f"keyless clients: {keyless}")  # fmt: skip


class RequireKey:
    """ASGI middleware: 401 on every path but `open_paths` unless the request carries a key or
    comes from an address in `keyless_clients` (networks such as "10.0.0.0/8").

    Checked before anything reads the body, and on /docs, /openapi.json and /metrics too. The
    allow-list exists because RLHF trainers (OpenRLHF, veRL) send no Authorization header."""

    def __init__(self, app, keys: Sequence[str], open_paths: tuple[str, ...] = ("/health",), keyless_clients: Sequence[str] = ()):
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.open_paths = open_paths
        self.keyless = [ipaddress.ip_network(n, strict=False) for n in keyless_clients]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.keys or scope["path"] in self.open_paths or key_accepted(scope["headers"], self.keys):
            return await self.app(scope, receive, send)
        if self._keyless(scope.get("client")):
            return await self.app(scope, receive, send)
        await send_json(send, 401, UNAUTHORIZED, [(b"www-authenticate", b"Bearer")])


    def _keyless(self, client) -> bool:
        if not self.keyless or not client:
            return False
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:  # a Unix socket or a test client names no IP address
            return False
        return any(address in network for network in self.keyless)


class CancelOnDisconnect:
    """ASGI middleware: a request whose client leaves before its answer is cancelled, so the
    scores it waits for are dropped (`synpref.serve.batcher`), not computed for nobody.

    uvicorn does not cancel a handler when its client leaves: it only answers `receive()` with
    "http.disconnect", which nothing calls once the body is read. So once the app has read the
    whole body, a watcher waits on `receive()` here."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        import anyio

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body_read, answered = anyio.Event(), False

        async def watched_receive():
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read.set()
            return message

        async def watched_send(message):
            nonlocal answered
            answered = answered or (message["type"] == "http.response.body" and not message.get("more_body", False))
            await send(message)

        async with anyio.create_task_group() as group:

            async def watch() -> None:
                await body_read.wait()
                while (await receive())["type"] != "http.disconnect":
                    pass
                if not answered:  # uvicorn also says "disconnect" once the answer is sent
                    log.info("%s %s: the client left before its answer; request cancelled", scope["method"], printable(scope["path"]))
                    group.cancel_scope.cancel()

            group.start_soon(watch)
            await self.app(scope, watched_receive, watched_send)
            group.cancel_scope.cancel()  # the watcher's job is over


class BodyLimits:
    """ASGI middleware: a body over `max_bytes` gets 413, whether or not it declares its length;
    a body not complete within `timeout_s` gets 408, so a client trickling it holds nothing long."""

    def __init__(self, app, max_bytes: int, timeout_s: float):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send)
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        received, refused, complete = 0, False, False

        async def limited_receive():
            # Answer 413 or 408 ourselves, then tell the app the client left: the framework
            # would turn an exception here into a generic 400.
            nonlocal received, refused, complete
            if complete or refused:
                return await receive()  # the body is read; only a disconnect can come now
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except asyncio.TimeoutError:
                refused = True
                await send_json(send, 408, f"request body not received within {self.timeout_s:g} s", _CLOSE)
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    refused = True
                    await self._too_large(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _too_large(self, send) -> None:
        await send_json(send, 413, f"request body over the limit of {self.max_bytes:,} bytes", _CLOSE)


# The rest of a refused body is never read, so the connection cannot carry another request.
_CLOSE = ((b"connection", b"close"),)


async def send_json(send, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """A complete `{"detail": ...}` response, sent from ASGI middleware."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def printable(text: str, limit: int = 200) -> str:
    """`text` safe to write to a log line: control characters and non-ASCII escaped (a path can
    carry terminal escape sequences or a fake newline), and cut to `limit` characters."""
    escaped = text.encode("unicode_escape").decode("ascii")
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."
