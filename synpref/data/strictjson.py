"""JSON as Stage 0 accepts it: no key named twice in one object, no NaN or Infinity.

Python's and orjson's parsers silently keep the last of two equal keys, and Python's accepts
NaN and Infinity (not JSON at all). Either would store something other than what the file
says, so such a record is quarantined, naming the key. `loads` parses with hooks that mark
what they find; `first_problem` finds the first mark in a parsed record.
"""

from __future__ import annotations

import json
import re
from typing import Any


class RepeatedKeys(dict):
    """A JSON object that names `key` more than once (the dict keeps the last value)."""

    key: str


class NonFinite:
    """Where a NaN, Infinity or -Infinity stood in the text."""

    def __init__(self, name: str):
        self.name = name

    def __str__(self) -> str:
        return self.name


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) == len(pairs):
        return record
    seen: set[str] = set()
    marked = RepeatedKeys(record)
    marked.key = next(key for key, _ in pairs if key in seen or seen.add(key))
    return marked


def loads(text: str | bytes) -> Any:
    """Parse like `json.loads`, marking repeated keys and non-finite numbers; RecursionError
    for nesting deeper than Python's recursion limit (the caller says what that means)."""
    return json.loads(text, object_pairs_hook=_object, parse_constant=NonFinite)


def first_problem(value: Any, path: str = "") -> tuple[str, str] | None:
    """(field, reason) for the first repeated key or non-finite number in `value`, or None."""
    if isinstance(value, NonFinite):
        return path, f"not valid JSON: {value.name} is not a JSON number"
    if isinstance(value, RepeatedKeys):
        field = f"{path}.{value.key}" if path else value.key
        return field, f"the key {value.key!r} appears more than once in one object (a reader would keep only one value)"
    if isinstance(value, dict):
        children = ((f"{path}.{key}" if path else str(key), item) for key, item in value.items())
    elif isinstance(value, list):
        children = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    for child_path, item in children:
        found = first_problem(item, child_path)
        if found:
            return found
    return None


_KEY = re.compile(rb'"\s*:')


def may_repeat_keys(line: bytes, record: Any) -> bool:
    """False when `line` cannot hold a repeated key: it has no more `":` than `record` (as
    parsed) has keys. Every key in the text ends that way, so an equal count leaves no room
    for a lost key; a string containing `":` only sends the line to the slow exact check."""
    return len(_KEY.findall(line)) > _key_count(record)


def _key_count(value: Any) -> int:
    if isinstance(value, dict):
        return len(value) + sum(_key_count(item) for item in value.values())
    if isinstance(value, list):
        return sum(_key_count(item) for item in value)
    return 0
