"""Rule-based verifiers: is a response's final answer the reference answer?

Each verifier is a small class in `VERIFIERS` (a duplicate name is an error) that returns a
`Verdict`: correct, incorrect or unparseable (no answer could be read from the response), with
a short reason. A reference a verifier cannot use (an invalid regex or JSON schema, a letter
that is not an option, one over `MAX_REFERENCE_CHARS`) raises `BadReference`: that is the
dataset's fault, not the policy's.

Responses are hostile: in RL the policy writes them and searches for whatever pays. So nothing
here executes a response, every check's cost is bounded by this module's own code, and nothing
is fetched:
- sizes are checked before any parsing (`_screen`): a response over `MAX_RESPONSE_CHARS` is
  unparseable, a math answer over `MAX_ANSWER_CHARS` too;
- every regex written here runs in time linear in its input (tests/reward/
  test_verifiers_hostile.py feeds them 100,000-character replies);
- math goes through a character whitelist before sympy parses it (unevaluated where there is
  a power); values are compared as floats of bounded precision, never expanded or simplified,
  and an expression with an exponent over `_MAX_EXPONENT` is not computed (so not credited,
  unless written exactly as the reference);
- JSON schemas resolve `$ref` only inside the label, never over the network or from files;
  documents and schemas nested deeper than `_MAX_DEPTH` are refused, NaN and Infinity are not
  JSON, and `uniqueItems` hashes instead of comparing every pair.
What stays the dataset's choice, regular expressions in regex labels and in JSON schemas'
`pattern`, can still take exponential time: verifiers run in worker processes with a wall-time
and memory limit (synpref/reward/sandbox.py), which is what stops those.

Extraction follows what veRL's math rewards (verl/utils/reward_score/math.py, gsm8k.py) and
users of those expect: the last `\\boxed{}`, else GSM8K's `#### answer`, else "the answer is
...", else the last number; `$`, `\\text{}` units, thousands separators, degrees, percent signs
and a trailing period are noise.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import re
import string
import unicodedata
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from typing import Any, ClassVar

from synpref.registry import Registry

MAX_RESPONSE_CHARS = 200_000  # ~50k tokens: longer than an honest reply, short enough to scan
MAX_REFERENCE_CHARS = 20_000  # a label, a JSON schema counted as its JSON text
MAX_ANSWER_CHARS = 1_000  # an extracted math answer; a real one is a few dozen characters


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
    """One kind of check; options come from the reward spec as keyword arguments.

    `verify` starts with `_screen`, so that no parsing ever sees an oversized input."""

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


def _screen(response: str, reference: Any) -> Verdict | None:
    """What every verifier checks before reading anything: sizes, then an empty response.

    The reference first, so that a bad label is reported whatever the response."""
    if _reference_chars(reference) > MAX_REFERENCE_CHARS:
        raise BadReference(f"reference over {MAX_REFERENCE_CHARS} characters")
    if len(response) > MAX_RESPONSE_CHARS:
        return Verdict(Outcome.UNPARSEABLE, f"response over {MAX_RESPONSE_CHARS} characters")
    return Verdict(Outcome.UNPARSEABLE, "empty response") if not response.strip() else None


def _reference_chars(reference: Any) -> int:
    if isinstance(reference, str):
        return len(reference)
    try:
        return len(json.dumps(reference, default=str))
    except (ValueError, RecursionError) as error:  # circular, too deep, or an int past 4300 digits
        raise BadReference(f"unusable reference: {str(error)[:80]}") from None


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
# Trailing unit words ("12 cm", "5 apples", "30 ft. in."), matched on the reversed text: the
# match is anchored, so it is tried once, and a word is a maximal run of letters, so it can end
# in one place only. (Forward, `(?:[A-Za-z]{2,}\.?\s*)+$` split a 40-letter word 2^38 ways and
# was tried after every digit.) One letter is a variable ("2x"); "pi" and "sqrt..." are no units.
_UNIT_WORDS_REVERSED = re.compile(r"(?:\s*\.?(?!ip(?![A-Za-z]))[A-Za-z]{2,}(?![A-Za-z])(?<!trqs))+\s*(?=[\d}.)])")
# Read by `Fraction`: an exponent of three digits at most, as 1e999999999 would take minutes.
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d{1,3}|(?: ?/ ?\d+))?|-?\.\d+|(-?)\\frac\{(\d+)\}\{(\d+)\}")
# After normalisation, what may reach sympy's parser (which evaluates Python): no quotes,
# underscores, brackets or commas, so no names beyond the ones allowed below can be formed.
_SAFE = re.compile(r"[0-9A-Za-z+\-*/^().\s]*")
_WORDS = {"sqrt", "pi"}
_MAX_EXPRESSION = 120  # characters, so at most ~120 nodes; answers are short
_MAX_EXPONENT = 64  # at every evaluation point, so no value outgrows a float of bounded size
_DIGITS = 30  # precision of the numeric comparison
# Free symbols are compared at three points: a fixed value per letter (so verdicts are
# deterministic), irregular and of both signs (so two different expressions agree at all three
# by chance with probability ~0, and sqrt(x^2) is not x).
_POINTS = [{c: rng.uniform(-2.0, 2.0) for c in string.ascii_letters} for rng in map(random.Random, range(3))]


class _TooLarge(Exception):
    """An expression whose value no bounded computation reaches (10^10^10, x^(10^10))."""


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
    if units := _UNIT_WORDS_REVERSED.match(s[::-1]):
        s = s[: len(s) - units.end()]
    s = re.sub(r"(?<=\d)\s+[A-Za-z]$", "", s)
    return " ".join(s.split()).rstrip(".").strip()


@functools.lru_cache(maxsize=4096)  # a reference is read once per group of replies to its prompt
def _to_sympy(text: str):
    """A sympy expression for a normalised answer, or None when it is not a simple one.

    Unevaluated where it has a power: `_value` decides whether it is small enough to compute."""
    if len(text) > MAX_ANSWER_CHARS:
        return None
    s = text
    for _ in range(3):  # nested fractions and roots, innermost first
        s = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", s)
        s = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", s)
    for latex, plain in (("\\cdot", "*"), ("\\times", "*"), ("\\pi", "pi"), ("×", "*"), ("÷", "/"), ("{", "("), ("}", ")")):
        s = s.replace(latex, plain)
    if not s.strip() or len(s) > _MAX_EXPRESSION or not _SAFE.fullmatch(s):
        return None
    words = set(re.findall(r"[A-Za-z]+", s))
    if any(len(w) > 1 and w not in _WORDS for w in words) or re.search(r"[A-Za-z)]\s*\.|\.\s*[A-Za-z(]", s):
        return None
    # 6.02e23 as a power of ten, whose size `_value` checks; then digits and letters apart, so
    # that Python's tokenizer reads no other exponent, hex or imaginary literal: 1e9999999999
    # would be a number of 10^10 digits. "2x" stays 2*x.
    s = re.sub(r"(?<=\d)[eE]([+-]?\d{1,3})(?![\d.])", r"*10^(\1)", s)
    return _parse(re.sub(r"(?<=\d)(?=[A-Za-z])|(?<=[A-Za-z])(?=\d)", " ", s), words)


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
    classes = {c.__name__: c for c in (sympy.Integer, sympy.Float, sympy.Rational, sympy.Symbol, sympy.Add, sympy.Mul, sympy.Pow)}
    transformations = (*standard_transformations, implicit_multiplication_application, convert_xor)
    # Unevaluated where there is a power: 9^64^64 stays a tree to look at, never a number to
    # compute. Without one, evaluating as it parses is safe (products of 120 characters of
    # digits) and a third faster.
    evaluate = not re.search(r"\^|\*\*|sqrt", expression)
    try:
        parsed = parse_expr(expression, local_dict=names, global_dict=classes, transformations=transformations, evaluate=evaluate)
    except Exception:  # sympy raises many kinds (SyntaxError, TypeError, TokenError) on bad input
        return None
    return parsed if isinstance(parsed, sympy.Expr) else None


def math_equal(answer: str, reference: str) -> bool:
    """Same value: equal strings after normalisation, else equal numbers (to a relative 1e-9) at
    every evaluation point. False for an answer too large to compare."""
    try:
        return _equal(answer, reference)
    except _TooLarge:
        return False


def _equal(answer: str, reference: str) -> bool:
    """`math_equal`, but an answer too large to compare raises _TooLarge."""
    if answer.replace(" ", "") == reference.replace(" ", ""):
        return True
    if (left_number := _plain_number(answer)) is not None and (right_number := _plain_number(reference)) is not None:
        return abs(left_number - right_number) <= Fraction(1, 10**9) * max(1, abs(right_number))
    if (left := _to_sympy(answer)) is None or (right := _to_sympy(reference)) is None:
        return False
    return left == right or _same_value(left, right)  # the same tree: 2x+1 and 1+2x, parsed


def _plain_number(text: str) -> Fraction | None:
    """Most answers are plain numbers: exact arithmetic, without sympy's parser (~10x slower)."""
    if len(text) > _MAX_EXPRESSION or not (match := _PLAIN_NUMBER.fullmatch(text)):
        return None
    sign, numerator, denominator = match.groups()
    try:
        if numerator is not None:  # \frac{3}{4}
            return Fraction(int(sign + numerator), int(denominator))
        return Fraction(text.replace(" ", ""))
    except ZeroDivisionError:
        return None


def _same_value(left, right) -> bool:
    """Equal values at every point; raises _TooLarge when the answer (`left`) cannot be computed.

    Not sympy.simplify, which expands (a+b+c+d+e+f+g+h)^64 into billions of terms where a value
    at a point costs a few multiplications; three irregular points tell expressions apart."""
    named = left.free_symbols or right.free_symbols
    try:
        for point in _POINTS if named else _POINTS[:1]:
            value = _value(left, point)
            try:
                expected = _value(right, point)
            except _TooLarge:  # the answer did not write it the same way, and nothing can tell
                return False
            if not abs(value - expected) <= 1e-9 * max(1, abs(expected)):  # nan too
                return False
        return True
    except (ValueError, ZeroDivisionError):  # 1/0, or a node that is no plain arithmetic
        return False


def _value(node, point: dict[str, float]):
    """`node` at `point`, in mpmath floats of _DIGITS digits: no exact power is ever computed.

    An exponent over _MAX_EXPONENT in size raises _TooLarge. Children are valued first, so an
    exponent is known to be small before any power uses it: every value is then a float whose
    binary exponent has a few hundred bits at most (9^64^64 would need 10^115 of them)."""
    mp = _mpmath()
    if node.is_Symbol:
        return mp.mpf(point[node.name])
    if node.is_Rational:
        return mp.mpf(node.p) / node.q
    if node.is_Float:
        return mp.mpf(node)
    if node.is_NumberSymbol and str(node) == "pi":
        return mp.pi
    values = [_value(arg, point) for arg in node.args]
    if node.is_Add:
        return mp.fsum(values)
    if node.is_Mul:
        return mp.fprod(values)
    if node.is_Pow:
        if not abs(values[1]) <= _MAX_EXPONENT:  # nan too
            raise _TooLarge
        return mp.power(*values)
    raise ValueError(f"not plain arithmetic: {node.func.__name__}")


@functools.cache
def _mpmath():
    """A context of its own, so that nobody else's `mpmath.mp.dps` changes our precision."""
    import mpmath

    context = mpmath.MPContext()
    context.dps = _DIGITS
    return context


@register
class MathVerifier(Verifier):
    """Final answer of a math problem: numbers, fractions, decimals and simple expressions."""

    name = "math"

    def verify(self, response: str, reference: Any) -> Verdict:
        if early := _screen(response, reference):
            return early
        references = [self._reference(r) for r in _references(reference)]
        extracted = extract_math_answer(response)
        if extracted is not None and len(extracted) > MAX_ANSWER_CHARS:
            return Verdict(Outcome.UNPARSEABLE, f"final answer over {MAX_ANSWER_CHARS} characters")
        answer = normalise_math(extracted) if extracted is not None else ""
        if not answer:
            return Verdict(Outcome.UNPARSEABLE, "no final answer (no \\boxed{}, no number)")
        try:
            if any(_equal(answer, r) for r in references):
                return Verdict(Outcome.CORRECT, f"{answer} equals the reference", answer)
        except _TooLarge:  # never credited: no bounded computation shows it equal
            return Verdict(Outcome.INCORRECT, "expression too large to compare", answer[:80])
        return Verdict(Outcome.INCORRECT, f"{answer[:60]} differs from {references[0][:60]}", answer)

    @staticmethod
    def _reference(reference: str) -> str:
        if len(reference) > MAX_ANSWER_CHARS:
            raise BadReference(f"math reference over {MAX_ANSWER_CHARS} characters")
        if not (normalised := normalise_math(reference)):
            raise BadReference(f"empty math reference {reference!r:.80}")
        return normalised


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
        options = f"[{letters}]"
        # No two whitespace runs meet (`is` or `option` stands between them), and `^` is followed
        # by spaces within its line only: each run of spaces is scanned once, not once per start.
        self.patterns = [
            re.compile(rf"(?i:answer|option|choice)\s*(?:(?i:is|:)\s*)?(?:(?i:option)\s*)?\(?({options})\)?(?![A-Za-z])"),
            re.compile(rf"\(({options})\)"),
            re.compile(rf"(?m)^[^\S\n]*({options})[).:](?:\s|$)"),
        ]
        self.alone = re.compile(rf"\s*\(?([{letters}])\)?[.:)]?\s*")

    def verify(self, response: str, reference: Any) -> Verdict:
        if early := _screen(response, reference):
            return early
        expected = {self._reference_letter(r) for r in _references(reference)}
        letter = self.extract(response)
        if letter is None:
            return Verdict(Outcome.UNPARSEABLE, f"no option letter ({self.letters}) found")
        if letter in expected:
            return Verdict(Outcome.CORRECT, f"chose {letter}", letter)
        return Verdict(Outcome.INCORRECT, f"chose {letter}, expected {'/'.join(sorted(expected))}", letter)

    def extract(self, response: str) -> str | None:
        boxed = last_boxed(response)
        if boxed is not None and (letter := self._alone(boxed)):
            return letter
        for pattern in self.patterns:
            found = pattern.findall(response)
            if found:
                return found[-1]
        return self._alone(response)

    def _alone(self, text: str) -> str | None:
        match = self.alone.fullmatch(text.replace("\\text", ""))
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
        if early := _screen(response, reference):
            return early
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
        if early := _screen(response, reference):
            return early
        answer = normalise_text(response)
        if not answer:
            return Verdict(Outcome.UNPARSEABLE, "nothing left after normalisation")
        if answer in {normalise_text(r) for r in _references(reference)}:
            return Verdict(Outcome.CORRECT, "normalised match", answer[:80])
        return Verdict(Outcome.INCORRECT, "no normalised match", answer[:80])


@register
class RegexVerifier(Verifier):
    """The reference is a regular expression the response must contain (or be, with `full`).

    Patterns come from the dataset and keep Python's semantics, backtracking included: one like
    `(a+)+$` can take exponential time, which the worker's time limit stops (sandbox.py)."""

    name = "regex"

    def __init__(self, full: bool = False, ignore_case: bool = False):
        self.full = full
        self.flags = re.IGNORECASE if ignore_case else 0

    def verify(self, response: str, reference: Any) -> Verdict:
        if early := _screen(response, reference):
            return early
        try:
            patterns = [re.compile(p, self.flags) for p in _references(reference)]
        except (re.error, OverflowError, RecursionError) as error:  # also a{9999999999}, ((((...
            raise BadReference(f"invalid regular expression {reference!r:.60}: {error}") from None
        text = response.strip()
        for pattern in patterns:
            match = pattern.fullmatch(text) if self.full else pattern.search(text)
            if match:
                return Verdict(Outcome.CORRECT, f"matches {pattern.pattern[:60]}", match.group(0)[:80])
        return Verdict(Outcome.INCORRECT, f"does not {'fully ' if self.full else ''}match {patterns[0].pattern[:60]}")


# ------------------------------------------------------------------------------------ JSON

_MAX_DEPTH = 64  # of a document or a schema; jsonschema recurses a few frames per level


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999 would pass any "maximum"
        raise ValueError(f"{text[:20]} is out of range")
    return value


def extract_json(response: str) -> Any:
    """The response as JSON, or the last ```json fenced block in it; raises ValueError.

    Strict JSON: no NaN or Infinity (Python's json reads them, and NaN passes every bound), no
    number past a float's range, no nesting deeper than _MAX_DEPTH."""
    fenced = re.findall(r"```(?:json)?[^\S\n]*\n(.*?)```", response, flags=re.DOTALL)
    try:
        document = json.loads(fenced[-1] if fenced else response.strip(), parse_constant=_not_json, parse_float=_finite)
        deep = _deeper_than(document, _MAX_DEPTH)
    except RecursionError:  # nested past the interpreter's limit
        deep = True
    if deep:
        raise ValueError(f"nested deeper than {_MAX_DEPTH} levels")
    return document


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON-like `value` nests more than `limit` levels; a loop, so depth cannot overflow it."""
    stack = [(value, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return False


def _hashable(value: Any) -> Any:
    """Equal exactly when jsonschema's `equal` says so: 1 == 1.0, True != 1, keys in any order."""
    if isinstance(value, dict):
        return ("object", frozenset((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("array", tuple(_hashable(v) for v in value))
    return ("bool" if isinstance(value, bool) else "scalar", value)


def _unique_items(validator, unique: bool, instance: Any, schema: dict):
    """jsonschema's `uniqueItems` compares every pair of unsortable items (40k objects: minutes)."""
    from jsonschema.exceptions import ValidationError

    if unique and validator.is_type(instance, "array"):
        first: dict[Any, int] = {}
        for index, item in enumerate(instance):
            if (seen := first.setdefault(_hashable(item), index)) != index:
                yield ValidationError(f"non-unique elements: items {seen} and {index} are equal")
                return


@functools.cache
def _hashing_unique_items(validator_class):
    from jsonschema.validators import extend

    return extend(validator_class, {"uniqueItems": _unique_items})


def _refuse_retrieval(uri: str):
    """`referencing` asks this for any URI the schema does not hold itself: fetch nothing."""
    raise BadReference(f"$ref to an outside URI is not allowed: {uri[:80]}")


@register
class JsonSchemaVerifier(Verifier):
    """The response is JSON valid against the reference JSON schema (an object or its text)."""

    name = "json_schema"

    def verify(self, response: str, reference: Any) -> Verdict:
        if early := _screen(response, reference):
            return early
        with _label_faults():
            validator = self._validator(reference)
        try:
            document = extract_json(response)
        except ValueError as error:
            return Verdict(Outcome.UNPARSEABLE, f"not JSON: {str(error)[:80]}")
        with _label_faults():  # references resolve lazily, as validation meets them
            error = min(validator.iter_errors(document), key=lambda e: list(e.path), default=None)
        if error is None:
            return Verdict(Outcome.CORRECT, "valid against the schema")
        return Verdict(Outcome.INCORRECT, f"{error.json_path}: {error.message[:100]}")

    @staticmethod
    def _validator(reference: Any):
        from jsonschema.validators import validator_for
        from referencing import Registry as Resources

        try:
            schema = json.loads(reference) if isinstance(reference, str) else reference
        except (ValueError, RecursionError):
            raise BadReference(f"the JSON schema is not JSON: {reference!r:.60}") from None
        if not isinstance(schema, dict | bool):
            raise BadReference(f"a JSON schema is an object, got {reference!r:.60}")
        if _deeper_than(schema, _MAX_DEPTH):
            raise BadReference(f"the JSON schema is nested deeper than {_MAX_DEPTH} levels")
        cls = _hashing_unique_items(validator_for(schema))
        cls.check_schema(schema)
        return cls(schema, registry=Resources(retrieve=_refuse_retrieval))


@contextlib.contextmanager
def _label_faults():
    """What jsonschema raises is the label's fault, as a BadReference: the document is plain JSON
    data, which a sound schema never fails on. jsonschema trusts a checked schema, but `$schema`
    and what a `$ref` reaches outside the keywords ({"x": 5, "$ref": "#/x"}) go unchecked."""
    from jsonschema.exceptions import SchemaError
    from referencing.exceptions import Unresolvable

    try:
        yield
    except (BadReference, MemoryError):  # MemoryError: the worker's memory limit (sandbox.py)
        raise
    except SchemaError as error:
        raise BadReference(f"invalid JSON schema: {error.message[:80]}") from None
    except Unresolvable as error:
        raise _cause(error) from None
    except RecursionError:  # document and schema are shallow: only a $ref cycle goes this deep
        raise BadReference("the JSON schema refers to itself without end ($ref cycle)") from None
    except Exception as error:
        raise BadReference(f"unusable JSON schema: {type(error).__name__}: {str(error)[:80]}") from None


def _cause(error: BaseException) -> BadReference:
    """Our own refusal when it is what made `error`, else a BadReference saying what did not resolve."""
    cause = error
    while (cause := cause.__cause__) is not None:
        if isinstance(cause, BadReference):
            return cause
    return BadReference(f"unresolvable $ref: {str(error)[:100]}")
