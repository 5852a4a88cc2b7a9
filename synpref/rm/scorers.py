"""`load_scorer`: the one rule that turns a `--model` value into a scorer, for every command.

    http(s)://...                    `RemoteScorer`, a reward server (`synpref.rm.remote`)
    length-baseline, or a directory  `LengthScorer`, the "longer wins" baseline: no model at all,
      with baseline.json {"kind": "length"}
    a head-only model directory      `HeadScorer`, the head on cached backbone features
      (synpref_head.json, `synpref.rm.head`)
    anything else                    `RewardScorer.from_pretrained`: an embedded name, a Hub id or
                                     a path

Every scorer has `score(conversations) -> [reward]` (what `synpref.eval` needs) and
`score_pairs(pairs) -> (chosen rewards, rejected rewards)` (what curation needs), in input order.

Head-only models of both kinds go to `HeadScorer`. A decoder head-only directory is also a plain
sequence classifier (its `score` layer holds w, no bias), and `RewardScorer` loads it to the
same rewards up to float error; but Stage 2's cross-fitting folds save the head record alone,
with no weights to load, and the head record's inputs are cut at the length the head was fitted
on. An encoder head-only directory is a sentence-transformers model that `RewardScorer` refuses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synpref.data.models import Message, PreferencePair
from synpref.errors import SynprefError

LENGTH_BASELINE = "length-baseline"
BASELINE_FILE = "baseline.json"  # {"kind": "length"}: a baseline "model" directory
API_KEY_ENV = "SYNPREF_API_KEY"  # a reward server's key, read where none is passed


def load_scorer(
    model: str,
    *,
    feature_cache: Path | None = None,
    max_length: int | None = None,
    token_budget: int | None = None,
    dtype: Any = None,
    show_progress: bool = False,
    protocol: str = "synpref",
    tokenizer: str | None = None,
    api_key: str | None = None,
):
    """The scorer for `model` (see the module docstring for the rule).

    `feature_cache` is where a head-only model's features live (default: the global
    `cache_dir()/features`; curation passes its workspace's). `max_length`, `token_budget` and
    `dtype` tune a `RewardScorer` (None: its defaults); `protocol`, `tokenizer` and `api_key`
    (default: $SYNPREF_API_KEY) are for a server URL and refused with anything else.
    """
    if model.startswith(("http://", "https://")):
        from synpref.rm.remote import RemoteScorer

        return RemoteScorer(model, protocol, tokenizer=tokenizer, api_key=api_key or os.environ.get(API_KEY_ENV))
    if protocol != "synpref" or tokenizer is not None:
        raise SynprefError(f"a protocol and a tokenizer are for a reward server URL (http://host:port); {model!r} is not one")
    if is_length_baseline(model):
        return LengthScorer()
    from synpref.rm.models import cache_dir, head_kind

    if head_kind(model) is not None:
        from synpref.rm.head import HeadScorer

        return HeadScorer(model, feature_cache or cache_dir() / "features", show_progress=show_progress)
    from synpref.rm.scorer import RewardScorer

    # Only what was given: RewardScorer's own defaults stay in one place.
    given = {"max_length": max_length, "token_budget": token_budget, "dtype": dtype}
    return RewardScorer.from_pretrained(model, show_progress=show_progress, **{k: v for k, v in given.items() if v is not None})


def is_length_baseline(model: str) -> bool:
    """True for the name `length-baseline` and for a directory whose baseline.json says so."""
    if model == LENGTH_BASELINE:
        return True
    marker = Path(model) / BASELINE_FILE
    if not marker.is_file():
        return False
    kind = json.loads(marker.read_text()).get("kind")
    if kind != "length":
        raise SynprefError(f"{marker}: unknown baseline kind {kind!r}; the one baseline is {{\"kind\": \"length\"}}")
    return True


class LengthScorer:
    """The "longer wins" baseline: a response's reward is its length in characters.

    No model, no tokenizer: it measures the machinery around a scorer (a benchmark's, a curation
    run's) at no scoring cost, and is the bar a reward model must clear on sets where the
    longer answer is usually preferred.
    """

    def score(self, conversations: Sequence[Sequence[Message | dict]]) -> list[float]:
        return [float(len(_content(conversation[-1]))) for conversation in conversations]

    def score_pairs(self, pairs: Sequence[PreferencePair]) -> tuple[list[float], list[float]]:
        return [float(len(p.chosen.content)) for p in pairs], [float(len(p.rejected.content)) for p in pairs]


def _content(message: Message | dict) -> str:
    return message.content if isinstance(message, Message) else message["content"]
