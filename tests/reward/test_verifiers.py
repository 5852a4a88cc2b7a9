"""Verifiers: exact outcomes on hand-written cases, and a contract over every registered one."""

from __future__ import annotations

import pytest

from synpref.reward.verifiers import VERIFIERS, BadReference, Outcome, Verifier, get_verifier, register

C, I, U = Outcome.CORRECT, Outcome.INCORRECT, Outcome.UNPARSEABLE

MATH = [
    # equivalent fractions and decimals
    ("The answer is \\boxed{\\frac{1}{2}}", "0.5", C),
    ("So x = 3/4.", "0.75", C),
    ("\\boxed{\\dfrac{2}{4}}", "\\frac12", C),
    ("\\boxed{0.333}", "\\frac{1}{3}", I),
    ("\\boxed{0.5}", "1/2", C),
    # boxed and plain answers
    ("Work... \\boxed{3} then \\boxed{42}", "42", C),
    ("#### 42", "42", C),
    ("37 + 48 = 85", "85", C),
    ("37 + 48 = 86", "85", I),
    ("The final answer is -7.", "-7", C),
    # thousands separators, dollars, units, degrees, percent
    ("\\boxed{1,000}", "1000", C),
    ("It costs $1,234.50.", "1234.5", C),
    ("The length is 12 cm.", "12", C),
    ("\\boxed{12\\text{ cm}}", "12", C),
    ("I got 5 apples", "5", C),
    ("The angle is 90^\\circ.", "90", C),
    ("\\boxed{50\\%}", "50", C),
    ("\\boxed{1,000,000}", "1000000", C),
    # simple expressions through sympy
    ("\\boxed{2x+2}", "2(x+1)", C),
    ("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", C),
    ("\\boxed{x^2}", "x*x", C),
    ("\\boxed{2x+3}", "2(x+1)", I),
    # empty, garbage and hostile answers
    ("", "5", U),
    ("   ", "5", U),
    ("no idea", "5", U),
    ("\\boxed{}", "5", U),
    ("\\boxed{__import__('os').system('true')}", "1", I),
    ("\\boxed{9^9^9^9}", "1", I),
]

CHOICE = [
    ("(B)", "C", I),
    ("A good option here is (C).", "C", C),  # the article "A" is not read as a choice
    ("The answer is D", "D", C),
    ("A is wrong, so the answer: D", "D", C),
    ("I am not sure.", "C", U),
    ("\\boxed{C}", "(C)", C),
    ("B", "B.", C),
    ("B. Because it is larger.", "B", C),
    ("A cat sat on the mat.", "A", U),
    ("the answer is a bit unclear", "A", U),
]

STRINGS = [
    ("exact", {}, "Paris", "Paris", C),
    ("exact", {}, "  Paris\n", "Paris", C),
    ("exact", {}, "paris", "Paris", I),
    ("exact", {}, "Lyon", ["Paris", "Lyon"], C),
    ("normalised", {}, "The Eiffel Tower!", "eiffel tower", C),
    ("normalised", {}, "Eiffel  tower.", "the Eiffel Tower", C),
    ("normalised", {}, "Big Ben", "eiffel tower", I),
    ("normalised", {}, "?!", "eiffel tower", U),
    ("regex", {}, "Order #A-1234 shipped", r"#A-\d{4}", C),
    ("regex", {"full": True}, "Order #A-1234 shipped", r"#A-\d{4}", I),
    ("regex", {"full": True, "ignore_case": True}, "yes", r"YES|Y", C),
    ("regex", {}, "nothing", r"\d+", I),
]

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name"]}
JSON = [
    ('{"name": "Ada", "age": 36}', SCHEMA, C),
    ('Here you go:\n```json\n{"name": "Ada"}\n```', SCHEMA, C),
    ('{"age": 36}', SCHEMA, I),
    ('{"name": "Ada", "age": "old"}', SCHEMA, I),
    ("{'name': 'Ada'}", SCHEMA, U),
    ("sure!", '{"type": "array"}', U),
    ("[1, 2]", '{"type": "array", "items": {"type": "integer"}}', C),
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
    assert correct.outcome is C and 0 < len(correct.reason) <= 200
    for blank in ("", " \n\t "):
        assert verifier.verify(blank, reference).outcome is U
    for garbage in ("\x00\ufffd" * 50, "}{" * 1000, "\\boxed{" * 100, "x" * 100_000):
        verdict = verifier.verify(garbage, reference)
        assert verdict.outcome in (I, U) and 0 < len(verdict.reason) <= 200
    assert verifier.verify(response, reference) == correct  # deterministic
