"""Verifiers: exact outcomes on hand-written cases, and a contract over every registered one."""

from __future__ import annotations

import pytest

from synpref.reward.verifiers import (
    VERIFIERS,
    BadReference,
    Outcome,
    Verifier,
    get_verifier,
    register,
)

RIGHT, WRONG, NONE = Outcome.CORRECT, Outcome.INCORRECT, Outcome.UNPARSEABLE

MATH = [
    # equivalent fractions and decimals
    ("The answer is \\boxed{\\frac{1}{2}}", "0.5", RIGHT),
    ("So x = 3/4.", "0.75", RIGHT),
    ("\\boxed{\\dfrac{2}{4}}", "\\frac12", RIGHT),
    ("\\boxed{0.333}", "\\frac{1}{3}", WRONG),
    ("\\boxed{0.5}", "1/2", RIGHT),
    # boxed and plain answers
    ("Work... \\boxed{3} then \\boxed{42}", "42", RIGHT),
    ("#### 42", "42", RIGHT),
    ("37 + 48 = 85", "85", RIGHT),
    ("37 + 48 = 86", "85", WRONG),
    ("The final answer is -7.", "-7", RIGHT),
    # thousands separators, dollars, units, degrees, percent
    ("\\boxed{1,000}", "1000", RIGHT),
    ("It costs $1,234.50.", "1234.5", RIGHT),
    ("The length is 12 cm.", "12", RIGHT),
    ("\\boxed{12\\text{ cm}}", "12", RIGHT),
    ("I got 5 apples", "5", RIGHT),
    ("The angle is 90^\\circ.", "90", RIGHT),
    ("\\boxed{50\\%}", "50", RIGHT),
    ("\\boxed{1,000,000}", "1000000", RIGHT),
    # simple expressions through sympy
    ("\\boxed{2x+2}", "2(x+1)", RIGHT),
    ("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", RIGHT),
    ("\\boxed{x^2}", "x*x", RIGHT),
    ("\\boxed{2x+3}", "2(x+1)", WRONG),
    ("\\boxed{2x+1}", "1+2x", RIGHT),
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", RIGHT),
    ("\\boxed{sqrt(2)/2}", "1/sqrt(2)", RIGHT),
    ("\\boxed{x^2}", "x**2", RIGHT),
    ("\\boxed{x^2}", "x^3", WRONG),
    ("\\boxed{2^{n+1}}", "2 \\cdot 2^n", RIGHT),
    ("\\boxed{\\sqrt{x^2}}", "x", WRONG),  # not for negative x
    ("\\boxed{\\frac{\\pi}{2}}", "0.5\\pi", RIGHT),
    ("\\boxed{2^{10}}", "1024", RIGHT),
    ("\\boxed{0.3333333333}", "\\frac{1}{3}", RIGHT),  # within a relative 1e-9
    ("\\boxed{6.02e23}", "6.02 \\times 10^{23}", RIGHT),
    ("\\boxed{03}", "3", RIGHT),
    # empty, garbage and hostile answers
    ("", "5", NONE),
    ("   ", "5", NONE),
    ("no idea", "5", NONE),
    ("\\boxed{}", "5", NONE),
    ("\\boxed{__import__('os').system('true')}", "1", WRONG),
    ("\\boxed{9^9^9^9}", "1", WRONG),
]

CHOICE = [
    ("(B)", "C", WRONG),
    ("A good option here is (C).", "C", RIGHT),  # the article "A" is not read as a choice
    ("The answer is D", "D", RIGHT),
    ("A is wrong, so the answer: D", "D", RIGHT),
    ("I am not sure.", "C", NONE),
    ("\\boxed{C}", "(C)", RIGHT),
    ("B", "B.", RIGHT),
    ("B. Because it is larger.", "B", RIGHT),
    ("A cat sat on the mat.", "A", NONE),
    ("the answer is a bit unclear", "A", NONE),
]

STRINGS = [
    ("exact", {}, "Paris", "Paris", RIGHT),
    ("exact", {}, "  Paris\n", "Paris", RIGHT),
    ("exact", {}, "paris", "Paris", WRONG),
    ("exact", {}, "Lyon", ["Paris", "Lyon"], RIGHT),
    ("normalised", {}, "The Eiffel Tower!", "eiffel tower", RIGHT),
    ("normalised", {}, "Eiffel  tower.", "the Eiffel Tower", RIGHT),
    ("normalised", {}, "Big Ben", "eiffel tower", WRONG),
    ("normalised", {}, "?!", "eiffel tower", NONE),
    ("regex", {}, "Order #A-1234 shipped", r"#A-\d{4}", RIGHT),
    ("regex", {"full": True}, "Order #A-1234 shipped", r"#A-\d{4}", WRONG),
    ("regex", {"full": True, "ignore_case": True}, "yes", r"YES|Y", RIGHT),
    ("regex", {}, "nothing", r"\d+", WRONG),
]

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name"]}
JSON = [
    ('{"name": "Ada", "age": 36}', SCHEMA, RIGHT),
    ('Here you go:\n```json\n{"name": "Ada"}\n```', SCHEMA, RIGHT),
    ('{"age": 36}', SCHEMA, WRONG),
    ('{"name": "Ada", "age": "old"}', SCHEMA, WRONG),
    ("{'name': 'Ada'}", SCHEMA, NONE),
    ("sure!", '{"type": "array"}', NONE),
    ("[1, 2]", '{"type": "array", "items": {"type": "integer"}}', RIGHT),
]


@pytest.mark.parametrize("response, reference, outcome", MATH)
def test_math(response, reference, outcome):
    assert get_verifier("math").verify(response, reference).outcome is outcome


@pytest.mark.parametrize("response, reference, outcome", CHOICE)
def test_choice(response, reference, outcome):
    assert get_verifier("choice").verify(response, reference).outcome is outcome


@pytest.mark.parametrize("name, options, response, reference, outcome", STRINGS)
def test_string_matches(name, options, response, reference, outcome):
    assert get_verifier(name, options).verify(response, reference).outcome is outcome


@pytest.mark.parametrize("response, schema, outcome", JSON)
def test_json_schema(response, schema, outcome):
    assert get_verifier("json_schema").verify(response, schema).outcome is outcome


def test_verdicts_carry_the_answer_read_and_a_reason():
    verdict = get_verifier("math").verify("so the total is $1,234.50.", "1234.5")
    assert (verdict.answer, verdict.reason) == ("1234.50", "1234.50 equals the reference")
    wrong = get_verifier("choice", {"letters": "ABCD"}).verify("Answer: B", "D")
    assert (wrong.answer, wrong.reason) == ("B", "chose B, expected D")
    invalid = get_verifier("json_schema").verify('{"age": 36}', SCHEMA)
    assert invalid.reason == "$: 'name' is a required property"


@pytest.mark.parametrize(
    "name, reference",
    [("regex", "(unclosed"), ("json_schema", {"type": "no-such-type"}), ("json_schema", "not json"),
     ("choice", "Z"), ("math", ""), ("exact", {"a": 1})],
)  # fmt: skip
def test_unusable_references_are_the_datasets_fault(name, reference):
    with pytest.raises(BadReference):
        get_verifier(name).verify("something", reference)


def test_registry_rejects_duplicates_and_unknown_names_and_options():
    class Another(Verifier):
        name = "math"

    with pytest.raises(ValueError, match="already registered"):
        register(Another)
    with pytest.raises(ValueError, match="unknown verifier 'maths'"):
        get_verifier("maths")
    with pytest.raises(ValueError, match="verifier 'choice'"):
        get_verifier("choice", {"letter": "AB"})


# One correct (response, reference) per verifier: a newly registered verifier fails here until it has one.
CONTRACT = {
    "math": ("\\boxed{4}", "4"),
    "choice": ("(A)", "A"),
    "exact": ("yes", "yes"),
    "normalised": ("Yes.", "yes"),
    "regex": ("id 42", r"\d+"),
    "json_schema": ("{}", {"type": "object"}),
}


def test_every_registered_verifier_has_a_contract_case():
    assert set(CONTRACT) == set(VERIFIERS)


@pytest.mark.parametrize("name", sorted(VERIFIERS))
def test_contract(name):
    verifier = get_verifier(name)
    response, reference = CONTRACT[name]
    correct = verifier.verify(response, reference)
    assert correct.outcome is RIGHT and 0 < len(correct.reason) <= 200
    for blank in ("", " \n\t "):
        assert verifier.verify(blank, reference).outcome is NONE
    for garbage in ("\x00\ufffd" * 50, "}{" * 1000, "\\boxed{" * 100, "x" * 100_000):
        verdict = verifier.verify(garbage, reference)
        assert verdict.outcome in (WRONG, NONE) and 0 < len(verdict.reason) <= 200
    assert verifier.verify(response, reference) == correct  # deterministic
