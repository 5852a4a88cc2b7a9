"""Rule-based verifiers: is a response's final answer the reference answer?

Each verifier is a small class in `VERIFIERS` (a duplicate name is an error) that returns a
`Verdict`: correct, incorrect or unparseable (no answer could be read from the response), with
a short reason. A reference a verifier cannot use (an invalid regex or JSON schema, a letter
that is not an option) raises `BadReference`: that is the dataset's fault, not the policy's.
Nothing here executes the response: math goes through a character whitelist before sympy
parses it.

Extraction follows what veRL's math rewards (verl/utils/reward_score/math.py, gsm8k.py) and
users of those expect: the last `\\boxed{}`, else GSM8K's `#### answer`, else "the answer is
...", else the last number; `$`, `\\text{}` units, thousands separators, degrees, percent signs
and a trailing period are noise.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from synpref.registry import Registry


class Outcome(str, Enum):
    CORRECT = "correct"
    INCORRECT = "incorrect"
    UNPARSEABLE = "unparseable"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str
    answer: str | None = None  # what was read from the response, when anything was


class BadReference(ValueError):
    """The reference answer (a label) is unusable by this verifier."""


class Verifier:
    """One kind of check; options come from the reward spec as keyword arguments."""

    name: ClassVar[str]

    def verify(self, response: str, reference: Any) -> Verdict:
        raise NotImplementedError


VERIFIERS: Registry[Verifier] = Registry("verifier")
register = VERIFIERS.register


def get_verifier(name: str, options: dict[str, Any] | None = None) -> Verifier:
    if name not in VERIFIERS:
        raise ValueError(f"unknown verifier {name!r}; known: {', '.join(sorted(VERIFIERS))}")
    try:
        return VERIFIERS[name](**(options or {}))
    except TypeError as error:  # an unknown or missing option
        raise ValueError(f"verifier {name!r}: {error}") from None


def _blank(response: str) -> Verdict | None:
    return Verdict(Outcome.UNPARSEABLE, "empty response") if not response.strip() else None


def _references(reference: Any) -> list[str]:
    """A reference string, or a list of acceptable ones."""
    items = reference if isinstance(reference, list) else [reference]
    if not items or not all(isinstance(r, str | int | float) and not isinstance(r, bool) for r in items):
        raise BadReference(f"expected a string or a list of strings, got {reference!r:.80}")
    return [str(r) for r in items]


# ---------------------------------------------------------------------------------------- math

_NUMBER = re.compile(
    r"\\frac\{[^{}]*\}\{[^{}]*\}"  # LaTeX fraction
    r"|-?\d{1,3}(?:,\d{3})+(?:\.\d+)?"  # thousands separators
    r"|-?\d+(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?"  # integer, decimal, a/b
    r"|-?\.\d+"
)
# After normalisation, what may reach sympy's parser (which evaluates Python): no quotes,
# underscores, brackets or commas, so no names beyond the ones allowed below can be formed.
_SAFE = re.compile(r"[0-9A-Za-z+\-*/^().\s]*")
_WORDS = {"sqrt", "pi"}
_MAX_EXPRESSION = 120  # characters; answers are short, and sympy's time grows with length
_MAX_EXPONENT = 64  # 9^9^9 would hang the server


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox), braces balanced; None when there is none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start:].split("box", 1)[1].removeprefix("ed")
    if not rest.startswith("{"):  # "\boxed 5": up to the next space or dollar sign
        return rest.strip().split("$")[0].split()[0] if rest.strip() else None
    depth = 0
    for index, char in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return rest[1:index]
    return None  # unbalanced: the reply was cut off inside the box


def extract_math_answer(response: str) -> str | None:
    boxed = last_boxed(response)
    if boxed is not None:
        return boxed
    gsm8k = re.findall(r"####\s*(.+)", response)
    if gsm8k:
        return gsm8k[-1]
    stated = re.findall(r"(?:final answer|the answer)\s*(?:is|:)\s*([^\n]+)", response, flags=re.IGNORECASE)
    if stated:
        return stated[-1]
    numbers = _NUMBER.findall(response)
    return numbers[-1] if numbers else None


def normalise_math(text: str) -> str:
    """Strip what does not change the value: dollars, \\text{} units, separators, degrees, %."""
    s = text.strip().replace("\\$", "").replace("$", "")
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r" \1 ", s)
    for noise in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\%", "%", "°"):
        s = s.replace(noise, "")
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s).replace("\\ ", " ")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)  # \frac12, as veRL's _fix_fracs reads it
    s = re.sub(r"(\d),(?=\d{3}\b)", r"\1", s)
    s = re.sub(r"^[A-Za-z]\s*=\s*", "", s.strip())  # "x = 5"
    # Trailing unit words ("12 cm", "5 apples", "30 dollars"); one letter is a variable ("2x").
    s = re.sub(r"(?<=[\d}.)])\s*(?:(?!pi\b|sqrt)[A-Za-z]{2,}\.?\s*)+$", "", s)
    s = re.sub(r"(?<=\d)\s+[A-Za-z]$", "", s)
    return " ".join(s.split()).rstrip(".").strip()


def _to_sympy(text: str):
    """A sympy expression for a normalised answer, or None when it is not a simple one."""
    s = text
    for _ in range(3):  # nested fractions, innermost first
        s = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", s)
    s = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", s)
    for latex, plain in (("\\cdot", "*"), ("\\times", "*"), ("\\pi", "pi"), ("×", "*"), ("÷", "/"), ("{", "("), ("}", ")")):
        s = s.replace(latex, plain)
    if not s.strip() or len(s) > _MAX_EXPRESSION or not _SAFE.fullmatch(s):
        return None
    words = set(re.findall(r"[A-Za-z]+", s))
    if any(len(w) > 1 and w not in _WORDS for w in words) or re.search(r"[A-Za-z)]\s*\.|\.\s*[A-Za-z(]", s):
        return None
    if not _small_powers(s):
        return None
    return _parse(s, words)


def _small_powers(expression: str) -> bool:
    exponents = re.findall(r"(?:\^|\*\*)\s*\(?\s*(-?[\d.]+|[A-Za-z])", expression)
    if len(re.findall(r"\^|\*\*", expression)) != len(exponents) or len(exponents) > 2:
        return False
    return all(not e[-1].isdigit() or abs(float(e)) <= _MAX_EXPONENT for e in exponents)


def _parse(expression: str, words: set[str]):
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    # Every single letter is a plain symbol: sympy would read E, I, N, O, Q and S as its own.
    names = {w: sympy.Symbol(w) for w in words if len(w) == 1}
    names.update(sqrt=sympy.sqrt, pi=sympy.pi)
    transformations = (*standard_transformations, implicit_multiplication_application, convert_xor)
    try:
        return parse_expr(expression, local_dict=names, global_dict={"Integer": sympy.Integer, "Float": sympy.Float,
                          "Rational": sympy.Rational, "Symbol": sympy.Symbol}, transformations=transformations)  # fmt: skip
    except Exception:  # sympy raises many kinds (SyntaxError, TypeError, TokenError) on bad input
        return None


def math_equal(answer: str, reference: str) -> bool:
    """Same value: equal strings after normalisation, else sympy (numbers to a relative 1e-9)."""
    if answer.replace(" ", "") == reference.replace(" ", ""):
        return True
    left, right = _to_sympy(answer), _to_sympy(reference)
    if left is None or right is None:
        return False
    try:
        if left.free_symbols or right.free_symbols:
            import sympy

            return sympy.simplify(left - right) == 0
        return abs(complex((left - right).evalf())) <= 1e-9 * max(1.0, abs(complex(right.evalf())))
    except Exception:  # sympy objects that do not subtract or evaluate (e.g. a relation)
        return False


@register
class MathVerifier(Verifier):
    """Final answer of a math problem: numbers, fractions, decimals and simple expressions."""

    name = "math"

    def verify(self, response: str, reference: Any) -> Verdict:
        if blank := _blank(response):
            return blank
        references = [normalise_math(r) for r in _references(reference)]
        if not all(references):
            raise BadReference(f"empty math reference {reference!r:.80}")
        extracted = extract_math_answer(response)
        answer = normalise_math(extracted) if extracted is not None else ""
        if not answer:
            return Verdict(Outcome.UNPARSEABLE, "no final answer (no \\boxed{}, no number)")
        if any(math_equal(answer, r) for r in references):
            return Verdict(Outcome.CORRECT, f"{answer} equals the reference", answer)
        return Verdict(Outcome.INCORRECT, f"{answer[:60]} differs from {references[0][:60]}", answer)


# ------------------------------------------------------------------------------ multiple choice


@register
class ChoiceVerifier(Verifier):
    """A multiple-choice letter: "(B)", "Answer: B", "\\boxed{B}", or a reply that is just "B".

    A bare capital in prose is not read as a choice ("A good option..." is an article)."""

    name = "choice"

    def __init__(self, letters: str = "ABCDE"):
        if not letters or not letters.isalpha() or not letters.isupper():
            raise ValueError(f"letters must be capital letters, got {letters!r}")
        self.letters = letters

    def verify(self, response: str, reference: Any) -> Verdict:
        if blank := _blank(response):
            return blank
        expected = {self._reference_letter(r) for r in _references(reference)}
        letter = self.extract(response)
        if letter is None:
            return Verdict(Outcome.UNPARSEABLE, f"no option letter ({self.letters}) found")
        if letter in expected:
            return Verdict(Outcome.CORRECT, f"chose {letter}", letter)
        return Verdict(Outcome.INCORRECT, f"chose {letter}, expected {'/'.join(sorted(expected))}", letter)

    def extract(self, response: str) -> str | None:
        options = f"[{self.letters}]"
        boxed = last_boxed(response)
        if boxed is not None and (letter := self._alone(boxed)):
            return letter
        patterns = (
            rf"(?i:answer|option|choice)\s*(?i:is|:)?\s*(?i:option\s*)?\(?({options})\)?(?![A-Za-z])",
            rf"\(({options})\)",
            rf"(?m)^\s*({options})[).:](?:\s|$)",
        )
        for pattern in patterns:
            found = re.findall(pattern, response)
            if found:
                return found[-1]
        return self._alone(response)

    def _alone(self, text: str) -> str | None:
        match = re.fullmatch(rf"\s*\(?([{self.letters}])\)?[.:)]?\s*", text.replace("\\text", ""))
        return match.group(1) if match else None

    def _reference_letter(self, reference: str) -> str:
        letter = self._alone(reference.upper())
        if letter is None:
            raise BadReference(f"reference {reference!r:.40} is not one of the letters {self.letters}")
        return letter


# ------------------------------------------------------------------------------- string matches


@register
class ExactVerifier(Verifier):
    """The response, stripped of surrounding whitespace, equals a reference exactly."""

    name = "exact"

    def verify(self, response: str, reference: Any) -> Verdict:
        if blank := _blank(response):
            return blank
        answer = response.strip()
        if answer in [r.strip() for r in _references(reference)]:
            return Verdict(Outcome.CORRECT, "exact match", answer[:80])
        return Verdict(Outcome.INCORRECT, "no exact match", answer[:80])


def normalise_text(text: str) -> str:
    """SQuAD's answer normalisation: NFKC, lowercase, no punctuation or articles, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if c in string.punctuation else c for c in text)
    return " ".join(w for w in text.split() if w not in {"a", "an", "the"})


@register
class NormalisedVerifier(Verifier):
    """The response equals a reference after `normalise_text` (case, punctuation, articles)."""

    name = "normalised"

    def verify(self, response: str, reference: Any) -> Verdict:
        answer = normalise_text(response)
        if not answer:
            return Verdict(Outcome.UNPARSEABLE, "nothing left after normalisation")
        if answer in {normalise_text(r) for r in _references(reference)}:
            return Verdict(Outcome.CORRECT, "normalised match", answer[:80])
        return Verdict(Outcome.INCORRECT, "no normalised match", answer[:80])


@register
class RegexVerifier(Verifier):
    """The reference is a regular expression the response must contain (or be, with `full`).

    Patterns come from the dataset, which is trusted: Python's `re` has no time limit."""

    name = "regex"

    def __init__(self, full: bool = False, ignore_case: bool = False):
        self.full = full
        self.flags = re.IGNORECASE if ignore_case else 0

    def verify(self, response: str, reference: Any) -> Verdict:
        if blank := _blank(response):
            return blank
        try:
            patterns = [re.compile(p, self.flags) for p in _references(reference)]
        except re.error as error:
            raise BadReference(f"invalid regular expression {reference!r:.60}: {error}") from None
        text = response.strip()
        for pattern in patterns:
            match = pattern.fullmatch(text) if self.full else pattern.search(text)
            if match:
                return Verdict(Outcome.CORRECT, f"matches {pattern.pattern[:60]}", match.group(0)[:80])
        return Verdict(Outcome.INCORRECT, f"does not {'fully ' if self.full else ''}match {patterns[0].pattern[:60]}")


# ------------------------------------------------------------------------------------ JSON


def extract_json(response: str) -> Any:
    """The response as JSON, or the last ```json fenced block in it; raises ValueError."""
    fenced = re.findall(r"```(?:json)?\s*\n(.*?)```", response, flags=re.DOTALL)
    return json.loads(fenced[-1] if fenced else response.strip())


@register
class JsonSchemaVerifier(Verifier):
    """The response is JSON valid against the reference JSON schema (an object or its text)."""

    name = "json_schema"

    def verify(self, response: str, reference: Any) -> Verdict:
        from jsonschema.validators import validator_for

        if blank := _blank(response):
            return blank
        validator = self._validator(reference, validator_for)
        try:
            document = extract_json(response)
        except ValueError as error:
            return Verdict(Outcome.UNPARSEABLE, f"not JSON: {str(error)[:80]}")
        error = next(iter(sorted(validator.iter_errors(document), key=lambda e: list(e.path))), None)
        if error is None:
            return Verdict(Outcome.CORRECT, "valid against the schema")
        return Verdict(Outcome.INCORRECT, f"{error.json_path}: {error.message[:100]}")

    @staticmethod
    def _validator(reference: Any, validator_for):
        from jsonschema.exceptions import SchemaError

        try:
            schema = json.loads(reference) if isinstance(reference, str) else reference
        except ValueError:
            raise BadReference(f"the JSON schema is not JSON: {reference!r:.60}") from None
        if not isinstance(schema, dict | bool):
            raise BadReference(f"a JSON schema is an object, got {reference!r:.60}")
        cls = validator_for(schema)
        try:
            cls.check_schema(schema)
        except SchemaError as error:
            raise BadReference(f"invalid JSON schema: {error.message[:80]}") from None
        return cls(schema)
