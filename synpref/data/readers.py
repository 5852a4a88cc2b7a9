"""Input formats: one small reader class per format, in a registry.

A reader turns one raw record (a dict, as parsed from JSONL, JSON, CSV, Parquet or a
Hugging Face dataset) into a `PreferencePair`, or raises `RecordError` naming the field.
Keys a format does not use are kept in `meta` under their own name, so nothing is lost.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from synpref.data.models import (
    REFERENCE_META_KEY,
    ContentPartError,
    Message,
    PreferencePair,
    Reference,
    join_text_parts,
    pair_id,
)
from synpref.data.sources import Unreadable
from synpref.errors import RecordError, SynprefError
from synpref.registry import Registry

# Common keys every reader understands besides its own: our own export columns.
PROVENANCE_KEYS = ("id", "source", "meta", "split")
# Columns that hold a pair's known right answer, as data sets name them (`--map reference=COLUMN`
# names any other); GSM8K's `answer` ("...reasoning #### 42") counts when it has the "####".
REFERENCE_KEYS = ("reference", "ground_truth", "gold_answer")

_ROLE_ALIASES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
}


READERS: Registry[Reader] = Registry("reader")
register = READERS.register


def get_reader(name: str) -> Reader:
    try:
        return READERS[name]()
    except KeyError:
        raise SynprefError(
            f"unknown format {name!r}; known formats: {', '.join(sorted(READERS))}"
        ) from None


class Reader:
    """Base class: `matches` recognises the format, `to_pair` converts one record."""

    name: ClassVar[str]
    description: ClassVar[str]
    # Keys this format consumes; the rest of a record goes to meta.
    keys: ClassVar[tuple[str, ...]]
    # Keys a format carries that only repeat what the pair already holds.
    redundant_keys: ClassVar[tuple[str, ...]] = ()

    def matches(self, record: dict[str, Any]) -> bool:
        raise NotImplementedError

    def parts(self, record: dict[str, Any]) -> tuple[list[Message], Message, Message]:
        """(conversation, chosen, rejected) of one record."""
        raise NotImplementedError

    def to_pair(self, record: dict[str, Any], default_source: str) -> PreferencePair:
        if isinstance(record, Unreadable):  # a line too long to read, a repeated key, NaN
            raise record.error()
        conversation, chosen, rejected = self.parts(record)
        source = record.get("source", default_source)
        if not isinstance(source, str) or not source:
            raise RecordError("source", f"expected a non-empty string, got {_kind(source)}")
        meta = _meta(record.get("meta"))
        reference_key, reference = _reference(record, meta)
        consumed = self.keys + self.redundant_keys + PROVENANCE_KEYS + (reference_key,)
        for key, value in record.items():
            if key not in consumed:
                meta[key if key not in meta else f"input.{key}"] = value
        if reference is not None:
            meta[REFERENCE_META_KEY] = reference.model_dump()  # how Stage 0 stores it (see models.py)
        record_id = record.get("id")
        computed = pair_id(conversation, chosen, rejected)
        if record_id is not None and record_id != computed:
            meta.setdefault("source_id", record_id)
        return PreferencePair.model_construct(
            id=computed,
            conversation=conversation,
            chosen=chosen,
            rejected=rejected,
            source=source,
            meta=meta,
            reference=reference,
        )


@register
class SynprefReader(Reader):
    name = "synpref"
    description = "conversation: [messages], chosen/rejected: one message each (our JSONL schema)"
    keys = ("conversation", "chosen", "rejected")

    def matches(self, record):
        return "conversation" in record and isinstance(record.get("chosen"), dict)

    def parts(self, record):
        return (
            _messages(_require(record, "conversation"), "conversation"),
            _message(_require(record, "chosen"), "chosen"),
            _message(_require(record, "rejected"), "rejected"),
        )


@register
class TrlReader(Reader):
    name = "trl"
    description = "TRL conversational: chosen/rejected message lists, optional prompt list"
    keys = ("prompt", "chosen", "rejected")

    def matches(self, record):
        return isinstance(record.get("chosen"), list) and (
            "prompt" not in record or isinstance(record["prompt"], list)
        )

    def parts(self, record):
        chosen = _messages(_require(record, "chosen"), "chosen")
        rejected = _messages(_require(record, "rejected"), "rejected")
        if "prompt" not in record:  # implicit prompt: the shared prefix of both lists
            return _split_transcripts(chosen, rejected)
        conversation = _messages(record["prompt"], "prompt")
        return conversation, _single(chosen, "chosen"), _single(rejected, "rejected")


@register
class PromptStringsReader(Reader):
    name = "prompt-strings"
    description = "prompt/chosen/rejected plain strings (RewardBench style)"
    keys = ("prompt", "chosen", "rejected")

    def matches(self, record):
        return all(isinstance(record.get(key), str) for key in self.keys)

    def parts(self, record):
        return (
            [Message(role="user", content=_string(record, "prompt"))],
            Message(role="assistant", content=_string(record, "chosen")),
            Message(role="assistant", content=_string(record, "rejected")),
        )


@register
class AnthropicHHReader(Reader):
    name = "hh"
    description = 'Anthropic HH transcripts: chosen/rejected "\\n\\nHuman: ... \\n\\nAssistant: ..."'
    keys = ("chosen", "rejected")

    def matches(self, record):
        chosen = record.get("chosen")
        return (
            isinstance(chosen, str)
            and isinstance(record.get("rejected"), str)
            and chosen.lstrip().startswith("Human:")
        )

    def parts(self, record):
        chosen = _transcript(_string(record, "chosen"), "chosen")
        rejected = _transcript(_string(record, "rejected"), "rejected")
        return _split_transcripts(chosen, rejected)


@register
class UltraFeedbackReader(Reader):
    name = "ultrafeedback"
    description = "UltraFeedback-binarized: prompt string, chosen/rejected full message lists"
    keys = ("prompt", "chosen", "rejected")
    redundant_keys = ("messages",)  # a copy of `chosen`

    def matches(self, record):
        return isinstance(record.get("prompt"), str) and isinstance(record.get("chosen"), list)

    def parts(self, record):
        history, chosen, rejected = _split_transcripts(
            _messages(_require(record, "chosen"), "chosen"),
            _messages(_require(record, "rejected"), "rejected"),
        )
        if history and history[0].content.strip() != _string(record, "prompt").strip():
            raise RecordError("prompt", "differs from the first message of chosen")
        return history, chosen, rejected


@register
class ShareGPTReader(Reader):
    name = "sharegpt"
    description = "ShareGPT: conversations [{from, value}], chosen/rejected {from, value}"
    keys = ("conversations", "chosen", "rejected")

    def matches(self, record):
        return isinstance(record.get("conversations"), list) and "chosen" in record

    def parts(self, record):
        return (
            _messages(_require(record, "conversations"), "conversations"),
            _message(_require(record, "chosen"), "chosen"),
            _message(_require(record, "rejected"), "rejected"),
        )


def detect_format(records: list[dict[str, Any]], where: str) -> str:
    """The one format that recognises the most sampled records; an error when it is not unique."""
    if not records:
        raise SynprefError(
            f"{where}: no readable record to tell the format from (empty, or nothing parses as a record); "
            f"pass --format ({', '.join(sorted(READERS))}) to read it anyway, bad records quarantined"
        )
    votes = {name: sum(cls().matches(r) for r in records) for name, cls in READERS.items()}
    best = max(votes.values(), default=0)
    if best == 0:
        keys = sorted({key for record in records for key in record})
        raise SynprefError(
            f"{where}: no known format matches records with keys {keys}; "
            f"pass --format ({', '.join(sorted(READERS))}) and --map FIELD=COLUMN"
        )
    winners = sorted(name for name, count in votes.items() if count == best)
    if len(winners) > 1:
        raise SynprefError(
            f"{where}: ambiguous format, records match {' and '.join(winners)}; "
            "pass --format to choose"
        )
    return winners[0]


# --- helpers -------------------------------------------------------------------------


_NUMBER = re.compile(r"-?[\d,]*\.?\d+(?:\s*/\s*\d+)?")


def _reference(record: dict[str, Any], meta: dict[str, Any]) -> tuple[str, Reference | None]:
    """(the key it came from, the reference) of a record; ("", None) when it has none."""
    for key in REFERENCE_KEYS:
        if record.get(key) is not None:
            return key, _reference_value(record[key], key)
    answer = record.get("answer")
    if isinstance(answer, str) and "####" in answer:  # GSM8K: the final answer follows "####"
        final = answer.rsplit("####", 1)[1].strip().replace(",", "")
        if final:
            return "answer", Reference(answer=final, verifier="math")
    stored = meta.pop(REFERENCE_META_KEY, None)  # our own export, read back
    return "", None if stored is None else _reference_value(stored, f"meta.{REFERENCE_META_KEY}")


def _reference_value(value: Any, field: str) -> Reference:
    """A plain answer (a number: the math verifier; text: normalised match) or
    {"answer": ..., "verifier": ...} (also `reference`/`ground_truth` and `task` as veRL names them)."""
    value = _decoded(value, field) if isinstance(value, str) and value.lstrip()[:1] == "{" else value
    if isinstance(value, dict):
        answer = next((value[k] for k in ("answer", "reference", "ground_truth") if value.get(k) is not None), None)
        verifier = value.get("verifier", value.get("task"))
        if verifier is not None and not isinstance(verifier, str):
            raise RecordError(f"{field}.verifier", f"expected a string, got {_kind(verifier)}")
        if answer is None:
            raise RecordError(field, "an object without an answer (expected answer, reference or ground_truth)")
        plain = _reference_value(answer, f"{field}.answer")
        return Reference(answer=plain.answer, verifier=verifier or plain.verifier)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RecordError(field, f"expected an answer (text or a number) or an object, got {_kind(value)}")
    text = str(value)
    return Reference(answer=text, verifier="math" if _NUMBER.fullmatch(text.strip()) else "normalised")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _require(record: dict[str, Any], key: str) -> Any:
    if key not in record or record[key] is None:
        present = ", ".join(sorted(k for k in record if record[k] is not None)) or "nothing"
        raise RecordError(key, f"missing (the record has: {present}; use --map {key}=COLUMN)")
    return record[key]


def _string(record: dict[str, Any], key: str) -> str:
    value = _require(record, key)
    if not isinstance(value, str):
        raise RecordError(key, f"expected a string, got {_kind(value)}")
    return value


def _decoded(value: Any, field: str) -> Any:
    """CSV cells hold JSON text for list and object fields; decode it."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise RecordError(field, f"holds text that is not valid JSON ({error.msg})") from None
    return value


def _message(value: Any, field: str) -> Message:
    value = _decoded(value, field)
    if not isinstance(value, dict):
        raise RecordError(field, f"expected a message object, got {_kind(value)}")
    role = value.get("role", value.get("from"))
    content = value.get("content", value.get("value"))
    if not isinstance(role, str):
        raise RecordError(f"{field}.role", f"expected a string, got {_kind(role)}")
    if role.lower() not in _ROLE_ALIASES:
        raise RecordError(f"{field}.role", f"unknown role {role!r}")
    if isinstance(content, list):
        content = _text_parts(content, f"{field}.content")
    if not isinstance(content, str):
        raise RecordError(f"{field}.content", f"expected a string, got {_kind(content)}")
    return Message(role=_ROLE_ALIASES[role.lower()], content=content)


def _text_parts(parts: list, field: str) -> str:
    """Content parts as one text (`join_text_parts`); a non-text part is this record's error."""
    try:
        return join_text_parts(parts)
    except ContentPartError as error:
        raise RecordError(f"{field}{error.where}", error.reason) from None


def _messages(value: Any, field: str) -> list[Message]:
    value = _decoded(value, field)
    if isinstance(value, str):  # a bare prompt string is one user turn
        return [Message(role="user", content=value)]
    if not isinstance(value, list):
        raise RecordError(field, f"expected a list of messages, got {_kind(value)}")
    return [_message(item, f"{field}[{index}]") for index, item in enumerate(value)]


def _split_transcripts(chosen: list[Message], rejected: list[Message]) -> tuple[list[Message], Message, Message]:
    """(history, chosen reply, rejected reply) of two full transcripts: the history is their
    shared prefix, and each must continue with exactly one reply."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    return chosen[:shared], _single(chosen[shared:], "chosen"), _single(rejected[shared:], "rejected")


def _single(messages: list[Message], field: str) -> Message:
    if len(messages) != 1:
        raise RecordError(field, f"expected one reply after the history, got {len(messages)}")
    return messages[0]


def _meta(value: Any) -> dict[str, Any]:
    value = _decoded(value, "meta")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError("meta", f"expected an object, got {_kind(value)}")
    return dict(value)


def _transcript(text: str, field: str) -> list[Message]:
    """Split an HH transcript into messages on its "Human:" / "Assistant:" markers."""
    messages: list[Message] = []
    rest = "\n\n" + text.lstrip()
    markers = {"\n\nHuman:": "user", "\n\nAssistant:": "assistant"}
    while rest:
        starts = {m: rest.find(m) for m in markers if rest.find(m) >= 0}
        if not starts or min(starts.values()) != 0:
            raise RecordError(field, "transcript text outside a Human:/Assistant: turn")
        marker = min(starts, key=starts.get)
        body = rest[len(marker) :]
        ends = [body.find(m) for m in markers if body.find(m) >= 0]
        end = min(ends) if ends else len(body)
        messages.append(Message(role=markers[marker], content=body[:end].strip()))
        rest = body[end:]
    if messages[-1].role != "assistant":
        raise RecordError(field, "transcript does not end with an Assistant: turn")
    return messages
