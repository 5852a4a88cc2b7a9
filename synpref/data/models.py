"""The data contract: every format is converted to these models at the edge, once.

See DESIGN.md, "Data model". Nothing downstream of a reader slices strings or passes
foreign key names around; it works on `PreferencePair`, `Attributes` and `Judgment`.
"""

from __future__ import annotations

import hashlib
import unicodedata
from datetime import datetime, timezone
from enum import Enum
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "user", "assistant", "tool"]
SPLITS = ("pool", "gold", "silver", "discarded", "flipped")
Split = Literal["pool", "gold", "silver", "discarded", "flipped"]


# OpenAI content-part types that hold text (chat completions; the Responses API's two names).
TEXT_PART_TYPES = ("text", "input_text", "output_text")


class ContentPartError(ValueError):
    """A list of content parts that is not all text: `where` is the part ("[1]", "[0].text")."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}" if where else reason)
        self.where, self.reason = where, reason


def join_text_parts(parts: list) -> str:
    """OpenAI-style content parts, `[{"type": "text", "text": ...}, ...]`, as one text.

    Text parts are joined with a newline, as vLLM joins them when it renders a chat. A reward
    model here reads text only, so an image, audio or file part is refused rather than scored
    without it."""
    texts = []
    for index, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in TEXT_PART_TYPES:
            found = f"a part of type {kind!r}" if isinstance(kind, str) else f"a {type(part).__name__} without a type"
            raise ContentPartError(f"[{index}]", f"{found}: only text parts ({', '.join(TEXT_PART_TYPES)}) can be read")
        if not isinstance(part.get("text"), str):
            text = part.get("text")
            raise ContentPartError(f"[{index}].text", f"expected a string, got {'null' if text is None else type(text).__name__}")
        texts.append(part["text"])
    if not texts:
        raise ContentPartError("", "an empty list of content parts")
    return "\n".join(texts)


class Message(BaseModel):
    """A turn. `content` may arrive as OpenAI content parts (the clients' real payloads); it is
    held as their joined text, so a conversation reads the same whichever shape it came in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str

    @field_validator("content", mode="before")
    @classmethod
    def _joined_parts(cls, content: Any) -> Any:
        if not isinstance(content, list):
            return content
        try:
            return join_text_parts(content)
        except ContentPartError as error:  # pydantic names the field; the part follows it
            raise ValueError(f"content{error.where}: {error.reason}" if error.where else error.reason) from None


class Reference(BaseModel):
    """A pair's known right answer and the rule verifier that checks a response against it
    (a name in synpref.reward.verifiers: math, choice, exact, normalised, regex, json_schema).
    With one, a verifier can tell which response is right (synpref/annotate/verifier_judge.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    answer: str
    verifier: str = "math"


# How the store keeps a reference: under this key of the meta JSON column, which the workspace
# lifts back into `PreferencePair.reference` (synpref/data/workspace.py). Old shards lack it: None.
REFERENCE_META_KEY = "synpref.reference"


class PreferencePair(BaseModel):
    """One preference: a history ending with a user turn, and two candidate replies.

    `reference` is not part of the id: the same pair with and without a known answer is one pair."""

    model_config = ConfigDict(extra="forbid")

    id: str = ""  # filled with `pair_id(...)` when left empty
    conversation: list[Message]
    chosen: Message
    rejected: Message
    source: str
    meta: dict[str, Any] = Field(default_factory=dict)
    reference: Reference | None = None

    @model_validator(mode="after")
    def _fill_id(self) -> PreferencePair:
        expected = pair_id(self.conversation, self.chosen, self.rejected)
        if not self.id:
            self.id = expected
        elif self.id != expected:
            raise ValueError(
                f"id {self.id!r} is not the content hash of this pair ({expected!r}); "
                "leave id empty to have it computed"
            )
        return self

    def swapped(self) -> PreferencePair:
        """The same pair with chosen and rejected exchanged (a new pair, so a new id)."""
        return PreferencePair(conversation=self.conversation, chosen=self.rejected, rejected=self.chosen,
                              source=self.source, meta=self.meta, reference=self.reference)

    def stored_meta(self) -> dict[str, Any]:
        """`meta` as the store writes it: with the reference under `REFERENCE_META_KEY`."""
        if self.reference is None:
            return self.meta
        return {**self.meta, REFERENCE_META_KEY: self.reference.model_dump()}


class TaskCategory(str, Enum):
    """The fixed task-category vocabulary of `Attributes` (documented in the README)."""

    math = "math"
    code = "code"
    reasoning = "reasoning"
    factual_qa = "factual_qa"
    creative_writing = "creative_writing"
    advice = "advice"
    safety = "safety"
    roleplay = "roleplay"
    other = "other"


class Attributes(BaseModel):
    """The paper's 5-tuple, written by an LLM and editable by humans."""

    model_config = ConfigDict(extra="forbid")

    task_category: TaskCategory
    objectivity: Literal["objective", "subjective"]
    controversiality: Literal["low", "medium", "high"]
    desired_attributes: list[str]
    guideline: str


class Judgment(BaseModel):
    """One annotator's verdict on one pair. Judgments are appended, never overwritten."""

    model_config = ConfigDict(extra="forbid")

    pair_id: str
    annotator_kind: Literal["human", "llm", "rm", "verifier"]
    annotator: str
    verdict: Literal["chosen", "rejected", "tie", "unsure"]
    confidence: float | None = None
    rationale: str | None = None
    # Which response was shown first, e.g. ["rejected", "chosen"]: position bias is measurable.
    shown_order: list[Literal["chosen", "rejected"]] | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


@lru_cache(maxsize=16)  # Stage 0 asks again for the same responses right after hashing them
def normalize_text(text: str) -> str:
    """The text form that identity is decided on: NFC, whitespace runs collapsed, stripped."""
    if text.isascii():  # constant time in CPython; then NFC has nothing to do
        if "  " not in text and not any(c in text for c in _ASCII_SPACES) and text == text.strip():
            return text  # already normal: skip the split, the costliest step of Stage 0
    elif not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())


_ASCII_SPACES = "\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # what str.split() splits on, besides " "


def pair_id(conversation: list[Message], chosen: Message, rejected: Message) -> str:
    """Stable content hash of the normalized (conversation, chosen, rejected) triple.

    The same pair from two sources, or with different whitespace, gets the same id, so the
    id doubles as the global deduplication key. Raises UnicodeEncodeError on text holding
    unpaired surrogates (which no UTF-8 file can carry).
    """
    digest = hashlib.blake2b(digest_size=16)
    for section in (conversation, [chosen], [rejected]):
        for message in section:
            digest.update(message.role.encode())
            digest.update(b"\x1f")
            digest.update(normalize_text(message.content).encode("utf-8"))
            digest.update(b"\x1e")
        digest.update(b"\x1d")
    return digest.hexdigest()
