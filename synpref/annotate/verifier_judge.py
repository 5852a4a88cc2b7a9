"""Verifier judges: a pairwise verdict from a rule verifier, for pairs that carry a reference.

A pair with a `reference` (its known right answer and the verifier that checks it) needs no
model to be judged: each response goes through the verifier, and exactly one correct response
wins. Both correct, neither correct, an unusable reference (a math reference that is no
number, an invalid regex, one over the verifiers' size limit) or no reference at all give no
verdict (`unsure`), with the reason. In the curation loop a verifier judge is one more judge
(`backend: verifier` in the judges file): gated on gold like the LLM judges, cached, reported.

Verifiers run in `synpref.reward`'s worker processes (`VerifierPool`), never in this process:
a hostile reference or response costs at most `TIME_S` per item, then its worker is killed.
Verdicts are kept in the LLM request cache (keyed by verifier, reference and response), so a
rerun verifies nothing twice; a time-limit verdict is not kept (it depends on the load).
"""

from __future__ import annotations

import atexit
import json
import threading
from typing import NamedTuple

from synpref.annotate.backends import Backend, ChatRequest, Completion, register_backend
from synpref.annotate.cache import RequestCache
from synpref.data.models import PreferencePair
from synpref.errors import SynprefError

BACKEND = "verifier"
TIME_S = 1.0  # per verified response; a real check takes milliseconds
_TRANSIENT = ("time limit", "the verifier process died", "memory limit")  # not cached


class RuleVerdict(NamedTuple):
    verdict: str  # chosen | rejected | unsure
    reason: str


@register_backend(BACKEND)
class VerifierBackend(Backend):
    """Registered so a judges file naming `backend: verifier` validates everywhere; it answers
    from a pair's reference (`verify_pairs`), which a chat request does not carry."""

    async def complete(self, request: ChatRequest) -> Completion:
        raise SynprefError(f"judge {self.judge.name!r}: verifier judges decide pairs with a reference in "
                           "`synpref curate`; they answer no chat requests")


def is_verifier_judge(judge: dict) -> bool:
    return judge.get("backend") == BACKEND


_pool = None
_pool_lock = threading.Lock()


def _verifier_pool():
    """One pool per process, started on first use, stopped at exit: every verifier is a task."""
    global _pool
    with _pool_lock:
        if _pool is None:
            from synpref.reward.sandbox import VerifierPool
            from synpref.reward.spec import RewardSpec, VerifierLimits
            from synpref.reward.verifiers import VERIFIERS

            tasks = {name: {"verifier": name, "combine": "rule"} for name in VERIFIERS}
            spec = RewardSpec.model_validate({"default_task": "math", "tasks": tasks})
            _pool = VerifierPool(spec, VerifierLimits(time_s=TIME_S, workers=1))
            atexit.register(_pool.close)
        return _pool


def verify_pairs(pairs: list[PreferencePair], cache: RequestCache | None = None) -> dict[str, RuleVerdict]:
    """{pair id: RuleVerdict} for every pair (no reference: unsure, "no reference")."""
    from synpref.reward.verifiers import MAX_REFERENCE_CHARS, VERIFIERS

    results: dict[str, RuleVerdict] = {}
    items: list[tuple[str, str, str]] = []
    for pair in pairs:
        reference = pair.reference
        if reference is None:
            results[pair.id] = RuleVerdict("unsure", "no reference")
        elif reference.verifier not in VERIFIERS:
            results[pair.id] = RuleVerdict("unsure", f"unknown verifier {reference.verifier!r:.40}")
        elif len(reference.answer) > MAX_REFERENCE_CHARS:
            results[pair.id] = RuleVerdict("unsure", f"bad reference: over {MAX_REFERENCE_CHARS} characters")
        else:
            items += [(reference.verifier, pair.chosen.content, reference.answer),
                      (reference.verifier, pair.rejected.content, reference.answer)]
    outcomes = _verify(items, cache)
    position = 0
    for pair in pairs:
        if pair.id not in results:
            results[pair.id] = pair_verdict(outcomes[position], outcomes[position + 1])
            position += 2
    return results


def pair_verdict(chosen: tuple[str, str], rejected: tuple[str, str]) -> RuleVerdict:
    """From each response's (outcome, reason): exactly one correct wins, anything else is unsure."""
    for outcome, reason in (chosen, rejected):
        if outcome == "bad":
            return RuleVerdict("unsure", f"bad reference: {reason[:160]}")
    right = (chosen[0] == "correct", rejected[0] == "correct")
    detail = f"chosen: {chosen[0]} ({chosen[1][:80]}); rejected: {rejected[0]} ({rejected[1][:80]})"
    if right == (True, False):
        return RuleVerdict("chosen", detail)
    if right == (False, True):
        return RuleVerdict("rejected", detail)
    return RuleVerdict("unsure", ("both responses are correct; " if all(right) else "neither response is correct; ") + detail)


def _verify(items: list[tuple[str, str, str]], cache: RequestCache | None) -> list[tuple[str, str]]:
    """(outcome, reason) of each (verifier, response, reference); outcome "bad" for a bad reference."""
    from synpref.reward.verifiers import BadReference

    found: dict[int, tuple[str, str]] = {}
    requests = [_request(*item) for item in items]
    for index, request in enumerate(requests):
        hit = cache.get(request) if cache is not None else None
        if hit is not None:
            found[index] = tuple(json.loads(hit.text))
    missing = [i for i in range(len(items)) if i not in found]
    verdicts = _verifier_pool().verify([items[i] for i in missing]) if missing else []
    for index, verdict in zip(missing, verdicts):
        if isinstance(verdict, BadReference):
            found[index] = ("bad", str(verdict))
        else:
            found[index] = (verdict.outcome.value, verdict.reason)
        if cache is not None and not any(found[index][1].startswith(t) for t in _TRANSIENT):
            cache.put(requests[index], Completion(text=json.dumps(found[index])))
    return [found[i] for i in range(len(items))]


def _request(verifier: str, response: str, reference: str) -> ChatRequest:
    """The cache key of one check, in the shape of a chat request so the LLM cache keeps it."""
    messages = [{"role": "system", "content": reference}, {"role": "assistant", "content": response}]
    return ChatRequest(model=f"{BACKEND}/{verifier}", messages=messages, temperature=0.0, max_tokens=1, seed=0)
