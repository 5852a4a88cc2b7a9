"""Verifiers against hostile replies and labels: exact verdicts, each within a time bound.

A reward server reads what an RL policy writes, and the policy searches for whatever pays. Each
case here once hung the verifier (regex backtracking, a power tower, a quadratic `uniqueItems`),
fetched a URL named in a label, paid a reply that was no answer (NaN), or raised a traceback."""

from __future__ import annotations

import json
import time

import pytest

from synpref.reward import verifiers
from synpref.reward.verifiers import (
    MAX_ANSWER_CHARS,
    MAX_REFERENCE_CHARS,
    MAX_RESPONSE_CHARS,
    VERIFIERS,
    BadReference,
    Outcome,
    Verdict,
    extract_json,
    extract_math_answer,
    get_verifier,
    last_boxed,
    normalise_math,
)
from tests.reward.conftest import Counting

RIGHT, WRONG, NONE = Outcome.CORRECT, Outcome.INCORRECT, Outcome.UNPARSEABLE
BOUND_S = 0.5  # per call; the linear code takes ~10 ms on 100k characters, the old one minutes
LONG = 100_000
NO_LETTER = "no option letter (ABCDE) found"
NO_MATH = "no final answer (no \\boxed{}, no number)"
NOT_JSON = "not JSON: Expecting value: line 1 column 1 (char 0)"
TOO_LARGE = "expression too large to compare"


@pytest.fixture(scope="module", autouse=True)
def warm():
    """Imports (sympy, mpmath, jsonschema) happen here, not inside a timed call."""
    get_verifier("math").verify("\\boxed{x^2}", "y")
    get_verifier("json_schema").verify("[]", {"uniqueItems": True})


def timed(function, *args, bound_s: float = BOUND_S):
    start = time.perf_counter()
    result = function(*args)
    elapsed = time.perf_counter() - start
    assert elapsed < bound_s, f"{elapsed:.2f} s"
    return result


def verdict(name: str, response: str, reference, bound_s: float = BOUND_S) -> Verdict:
    return timed(get_verifier(name).verify, response, reference, bound_s=bound_s)


def refusal(name: str, response: str, reference) -> str:
    """The BadReference message, which must come within the bound too."""
    start = time.perf_counter()
    with pytest.raises(BadReference) as refused:
        get_verifier(name).verify(response, reference)
    assert time.perf_counter() - start < BOUND_S
    return str(refused.value)


# ----------------------------------------------- 1, 2: every regex of the module is linear-time

UNIT_WORD = "Pneumonoultramicroscopicsilicovolcanoconiosis"  # 45 letters: 2^44 splits, forward


def test_a_long_unit_word_is_read_once():
    reply = f"The final answer is 42 {UNIT_WORD}!"
    assert verdict("math", reply, "42") == Verdict(WRONG, f"42 {UNIT_WORD}! differs from 42", f"42 {UNIT_WORD}!")
    assert verdict("math", reply.rstrip("!"), "42") == Verdict(RIGHT, "42 equals the reference", "42")


@pytest.mark.parametrize(
    "text, normalised",
    [("12 cm", "12"), ("30 dollars.", "30"), ("12 ft. in.", "12"), ("\\frac{1}{2} cup", "\\frac{1}{2}"),
     ("5 x", "5"), ("2x", "2x"), ("3 pi", "3 pi"), ("2 pi cm", "2 pi cm"), ("4 sqrt", "4 sqrt"), ("10 m/s", "10 m/s"),
     ("5" + " apples." * 12_500, "5"), ("5" + " apples." * 12_500 + "!", "5" + " apples." * 12_500 + "!")],
)  # fmt: skip
def test_unit_words_are_dropped_as_before(text, normalised):
    """Same results as the backtracking pattern on short answers; linear on 100k characters."""
    assert timed(normalise_math, text) == normalised


# (reply of ~100k characters, then (outcome, reason) from math against "1", choice against "B",
# json_schema against {"type": "object"}). The old patterns marked * took seconds to hours.
HOSTILE_TEXTS = [
    ("1a " * (LONG // 3), (RIGHT, "1 equals the reference"), (NONE, NO_LETTER), (NONE, "not JSON: Extra data: line 1 column 2 (char 1)")),
    (" " * LONG + "x", (NONE, NO_MATH), (NONE, NO_LETTER), (NONE, NOT_JSON)),
    ("\n" * LONG + "x", (NONE, NO_MATH), (NONE, NO_LETTER), (NONE, NOT_JSON)),  # * choice: (?m)^\s*
    ("```" * (LONG // 3), (NONE, NO_MATH), (NONE, NO_LETTER), (NONE, NOT_JSON)),
    ("```\n" + "\n" * LONG, (NONE, NO_MATH), (NONE, NO_LETTER), (NONE, NOT_JSON)),  # * json: ```\s*\n(.*?)```
    ("\\boxed{" * (LONG // 7), (NONE, NO_MATH), (NONE, NO_LETTER), (NONE, NOT_JSON)),
    ("\\frac{" * (LONG // 6), (NONE, NO_MATH), (NONE, NO_LETTER), (NONE, NOT_JSON)),
    ("#### " + "9" * LONG, (NONE, f"final answer over {MAX_ANSWER_CHARS} characters"), (NONE, NO_LETTER), (NONE, NOT_JSON)),
    ("####" + "\n" * LONG, (NONE, NO_MATH), (NONE, NO_LETTER), (NONE, NOT_JSON)),
    ("The answer is" + " " * LONG + "x", (WRONG, "x differs from 1"), (NONE, NO_LETTER), (NONE, NOT_JSON)),
    ("answer" + " " * LONG + "z", (NONE, NO_MATH), (NONE, NO_LETTER), (NONE, NOT_JSON)),  # * choice: \s*(is|:)?\s*
    ("answer is" + " " * LONG + "z", (NONE, NO_MATH), (NONE, NO_LETTER), (NONE, NOT_JSON)),
    ("1" + " " * LONG + "x", (RIGHT, "1 equals the reference"), (NONE, NO_LETTER), (NONE, "not JSON: Extra data: line 1 column 100002 (char 100001)")),
    ("(" * LONG, (NONE, NO_MATH), (NONE, NO_LETTER), (NONE, NOT_JSON)),
    ("Answer: " * (LONG // 8), (NONE, NO_MATH), (NONE, NO_LETTER), (NONE, NOT_JSON)),
    ("(B" * (LONG // 2), (NONE, NO_MATH), (NONE, NO_LETTER), (NONE, NOT_JSON)),
    ("[" * LONG, (NONE, NO_MATH), (NONE, NO_LETTER), (NONE, "not JSON: nested deeper than 64 levels")),
]  # fmt: skip


@pytest.mark.parametrize("text, math, choice, json_schema", HOSTILE_TEXTS, ids=range(len(HOSTILE_TEXTS)))
def test_long_hostile_replies_get_exact_verdicts_fast(text, math, choice, json_schema):
    for name, reference, expected in (("math", "1", math), ("choice", "B", choice), ("json_schema", {"type": "object"}, json_schema)):
        got = verdict(name, text, reference)
        assert (got.outcome, got.reason) == expected, name


def test_choice_answer_then_60k_spaces():
    assert verdict("choice", "answer" + " " * 60_000 + "z", "B") == Verdict(NONE, NO_LETTER)
    assert verdict("choice", "answer is" + " " * 60_000 + "option (B)", "B") == Verdict(RIGHT, "chose B", "B")


def test_the_public_helpers_are_linear():
    assert timed(last_boxed, "\\boxed{" * (LONG // 7)) is None
    assert timed(last_boxed, "\\boxed{" + "{" * LONG) is None
    assert timed(extract_math_answer, "1a " * (LONG // 3)) == "1"
    assert timed(normalise_math, " " * LONG) == ""
    with pytest.raises(ValueError, match="Expecting value"):
        timed(extract_json, "```json\n" * (LONG // 8))


# ------------------------------------------------------ 3: math the verifier will not compute

TOWERS = ["10^10^10", "9^64^64", "9^(64*64*64*64*64)", "2^2^2^2^2^2", "9^9^9^9", "2^(2^(99999x))", "2^{100}"]


@pytest.mark.parametrize("answer", TOWERS)
def test_a_power_over_64_is_not_computed_nor_credited(answer):
    assert verdict("math", f"\\boxed{{{answer}}}", "1") == Verdict(WRONG, TOO_LARGE, answer)


def test_a_tower_in_the_labels_variable():
    assert verdict("math", "\\boxed{x^(10^10)}", "x") == Verdict(WRONG, TOO_LARGE, "x^(10^10)")


def test_a_tower_in_the_label_is_compared_only_as_written():
    assert verdict("math", "\\boxed{5}", "10^10^10") == Verdict(WRONG, "5 differs from 10^10^10", "5")
    assert verdict("math", "\\boxed{10^{10^{10}}}", "10^{10^{10}}") == Verdict(RIGHT, "10^{10^{10}} equals the reference", "10^{10^{10}}")


def test_a_power_of_a_sum_is_valued_not_expanded():
    """sympy.simplify expanded (a+...+h)^64 (GBs); values at three points cost microseconds."""
    power = "(a+b+c+d+e+f+g+h)^64"
    assert verdict("math", f"\\boxed{{{power}}}", "1") == Verdict(WRONG, f"{power} differs from 1", power)
    assert verdict("math", f"\\boxed{{{power}-{power}+1}}", "1").outcome is RIGHT
    assert verdict("math", "\\boxed{(h+g+f+e+d+c+b+a)^64}", power).outcome is RIGHT


@pytest.mark.parametrize("answer", ["1e9999999999", "100000!", "(" * 5000 + "1" + ")" * 5000])
def test_literals_the_parser_would_compute_are_not_parsed(answer):
    """Python reads 1e9999999999 as a float literal of 10^10 digits; 100000! is not arithmetic."""
    assert verdict("math", f"\\boxed{{{answer}}}", "1").outcome in (WRONG, NONE)


def test_an_answer_over_the_limit_is_not_normalised():
    long_answer = "1" * (MAX_ANSWER_CHARS + 1)
    assert verdict("math", f"\\boxed{{{long_answer}}}", "1") == Verdict(NONE, f"final answer over {MAX_ANSWER_CHARS} characters")
    at_limit = "1" * MAX_ANSWER_CHARS
    assert verdict("math", f"\\boxed{{{at_limit}}}", at_limit) == Verdict(RIGHT, f"{at_limit} equals the reference", at_limit)


# ------------------------------------------------------------------ 4: $ref stays in the label


def test_a_ref_to_a_url_or_a_file_is_refused_and_fetches_nothing(ref_target):
    outside = "$ref to an outside URI is not allowed: "
    cases = [
        ('"x"', {"$ref": f"{ref_target}/schema.json"}, f"{ref_target}/schema.json"),
        ('{"a": 1}', {"properties": {"a": {"$ref": f"{ref_target}/a.json"}}}, f"{ref_target}/a.json"),
        ('"x"', {"$id": f"{ref_target}/root.json", "$ref": "other.json"}, f"{ref_target}/other.json"),
        ('"x"', {"$ref": "file:///etc/passwd"}, "file:///etc/passwd"),
        ('"x"', {"$id": "file:///etc/", "$ref": "passwd"}, "file:///etc/passwd"),
    ]
    for response, schema, uri in cases:
        assert refusal("json_schema", response, schema) == outside + uri
    assert Counting.hits == []


def test_refs_inside_the_label_resolve():
    tree = {"type": "object", "properties": {"a": {"$ref": "#"}}}
    assert verdict("json_schema", '{"a": {"a": {}}}', tree) == Verdict(RIGHT, "valid against the schema")
    assert verdict("json_schema", '{"a": {"a": 5}}', tree) == Verdict(WRONG, "$.a.a: 5 is not of type 'object'")
    defined = {"$defs": {"n": {"type": "integer"}}, "items": {"$ref": "#/$defs/n"}}
    assert verdict("json_schema", "[1, 2.5]", defined) == Verdict(WRONG, "$[1]: 2.5 is not of type 'integer'")


def test_unusable_refs_are_the_labels_fault():
    assert refusal("json_schema", '"x"', {"$ref": "#"}) == "the JSON schema refers to itself without end ($ref cycle)"
    assert refusal("json_schema", '"x"', {"$ref": "#/nothing/here"}) == (
        "unresolvable $ref: PointerToNowhere: '/nothing/here' does not exist within {'$ref': '#/nothing/here'}"
    )
    # jsonschema checks the keywords, not what a $ref reaches outside them; its message is its own
    assert refusal("json_schema", '"x"', {"x": 5, "$ref": "#/x"}).startswith("unusable JSON schema: TypeError")
    assert refusal("json_schema", '"x"', {"$schema": {}}).startswith("unusable JSON schema: TypeError")


def nested_schema(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


def test_depth_limits_of_schema_and_document():
    assert refusal("json_schema", '{"x": 1}', nested_schema(400)) == "the JSON schema is nested deeper than 64 levels"
    assert verdict("json_schema", "[" * 64 + "]" * 64, {"type": "array"}) == Verdict(RIGHT, "valid against the schema")
    for depth in (65, LONG // 2):
        assert verdict("json_schema", "[" * depth + "]" * depth, {"type": "array"}) == Verdict(NONE, "not JSON: nested deeper than 64 levels")


# ------------------------------------------------------------ 5: uniqueItems hashes, linearly


def test_unique_items_over_many_objects(monkeypatch):
    """jsonschema compares every pair of unsortable items: 1,000 objects took 0.8 s, 40,000 hours."""
    monkeypatch.setattr(verifiers, "MAX_RESPONSE_CHARS", 1_000_000)  # 40,000 objects are ~430k characters
    objects = [{"k": i} for i in range(40_000)]
    unique = {"uniqueItems": True}
    # ~0.1 s: reading 430k characters of JSON and hashing every object
    assert verdict("json_schema", json.dumps(objects), unique, bound_s=1.0) == Verdict(RIGHT, "valid against the schema")
    repeated = verdict("json_schema", json.dumps([*objects, {"k": 39_999}]), unique, bound_s=1.0)
    assert repeated == Verdict(WRONG, "$: non-unique elements: items 39999 and 40000 are equal")


@pytest.mark.parametrize(
    "document, outcome",
    [("[1, 1.0]", WRONG), ("[1, true]", RIGHT), ("[0, false]", RIGHT), ('[{"a": 1, "b": [2]}, {"b": [2.0], "a": 1}]', WRONG),
     ("[[1, 2], [2, 1]]", RIGHT), ('["1", 1]', RIGHT), ("[null, null]", WRONG), ("[{}, []]", RIGHT)],
)  # fmt: skip
def test_unique_items_keeps_jsonschemas_equality(document, outcome):
    """As jsonschema's `equal`: 1 == 1.0, true is not 1, key order does not count."""
    assert verdict("json_schema", document, {"uniqueItems": True}).outcome is outcome


# --------------------------------------------------------------- 6: NaN and Infinity are not JSON

IMPOSSIBLE = {"type": "number", "minimum": 1, "maximum": 0}


@pytest.mark.parametrize(
    "reply, reason",
    [("NaN", "NaN is not JSON"), ("Infinity", "Infinity is not JSON"), ("-Infinity", "-Infinity is not JSON"),
     ("1e999", "1e999 is out of range"), ('{"a": NaN}', "NaN is not JSON"), ("```json\nNaN\n```", "NaN is not JSON")],
)  # fmt: skip
def test_non_finite_numbers_are_unparseable(reply, reason):
    """NaN compares false with every bound, so it passed {"minimum": 1, "maximum": 0}."""
    assert verdict("json_schema", reply, IMPOSSIBLE) == Verdict(NONE, f"not JSON: {reason}")


def test_finite_numbers_are_still_checked():
    assert verdict("json_schema", "1e308", IMPOSSIBLE) == Verdict(WRONG, "$: 1e+308 is greater than the maximum of 0")


# --------------------------------------------------------------------- 7: sizes, before parsing


@pytest.mark.parametrize("name", sorted(VERIFIERS))
def test_every_verifier_checks_sizes_first(name):
    assert len("x" * (MAX_RESPONSE_CHARS + 1)) > MAX_RESPONSE_CHARS
    over = Verdict(NONE, f"response over {MAX_RESPONSE_CHARS} characters")
    assert verdict(name, "x" * (MAX_RESPONSE_CHARS + 1), "A") == over  # "A" is never parsed
    too_long = f"reference over {MAX_REFERENCE_CHARS} characters"
    assert refusal(name, "A", "A" * (MAX_REFERENCE_CHARS + 1)) == too_long
    assert refusal(name, "x" * (MAX_RESPONSE_CHARS + 1), ["A"] * MAX_REFERENCE_CHARS) == too_long  # the label first


def test_a_reply_at_the_limit_is_read():
    assert verdict("math", "7" * MAX_RESPONSE_CHARS, "7") == Verdict(NONE, f"final answer over {MAX_ANSWER_CHARS} characters")
    assert verdict("math", " " * (MAX_RESPONSE_CHARS - 2) + "#7", "7") == Verdict(RIGHT, "7 equals the reference", "7")


def test_a_schema_counts_as_its_json_text():
    schema = {"type": "string", "description": "x" * MAX_REFERENCE_CHARS}
    assert refusal("json_schema", '"x"', schema) == f"reference over {MAX_REFERENCE_CHARS} characters"


# ---------------------------------------------------------------- 8: hostile labels, no traceback


def test_hostile_references():
    assert verdict("math", "\\boxed{5}", "hello world") == Verdict(WRONG, "5 differs from hello world", "5")
    assert refusal("math", "\\boxed{5}", "5" * 1_000_000) == f"reference over {MAX_REFERENCE_CHARS} characters"
    assert refusal("math", "\\boxed{5}", "1" * (MAX_ANSWER_CHARS + 1)) == f"math reference over {MAX_ANSWER_CHARS} characters"
    assert refusal("regex", "x", "a{9999999999}") == "invalid regular expression 'a{9999999999}': the repetition number is too large"
    assert refusal("regex", "x", "(" * 5000 + ")" * 5000).startswith("invalid regular expression '(((")
    circular: list = []
    circular.append(circular)
    assert refusal("exact", "x", circular) == "unusable reference: Circular reference detected"
