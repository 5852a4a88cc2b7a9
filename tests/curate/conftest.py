"""Fixtures for the curation tests: a tiny objective workspace, a trained tiny RM, an oracle judge.

Sizes are tens of pairs and a few optimizer steps of MiniLM, so the whole folder stays well
under the CI budget; nothing is written outside tmp_path.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from synpref.curate.known_answers import flip_labels, objective_records
from synpref.data.ingest import IngestOptions, ingest
from synpref.data.workspace import Workspace
from tests.conftest import write_jsonl

POOL_PAIRS, GOLD_PAIRS = 40, 12
# Tiny RM training for tests: a few MiniLM steps over short inputs.
TEST_RM = {"model": "minilm-l6", "max_length": 64, "batch_size": 4, "learning_rate": 5e-5, "max_steps": 6, "log_every": 100}


def make_workspace(root: Path) -> Workspace:
    """Gold: 12 clean pairs. Pool: 40 pairs, 30% flipped (meta["flipped"] says which)."""
    workspace = Workspace.init(root / "ws", name="curate-test")
    gold = objective_records(GOLD_PAIRS, seed=1, offset=10_000)
    pool = flip_labels(objective_records(POOL_PAIRS, seed=2), 0.3, seed=3)
    ingest(workspace, IngestOptions([str(write_jsonl(root / "gold.jsonl", gold))], split="gold", workers=1))
    ingest(workspace, IngestOptions([str(write_jsonl(root / "pool.jsonl", pool))], split="pool", workers=1))
    return workspace


@pytest.fixture
def objective_workspace(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


@pytest.fixture(scope="session")
def reward_models(tmp_path_factory) -> tuple[str, str]:
    """(best RM, gold RM): MiniLM with two differently seeded score heads, saved so every
    process (a killed CLI run, Ray actors) loads exactly the same weights. Untrained: their
    p sit near 0.5 on both sides, which exercises every branch of the rule."""
    from synpref.rm.models import load_reward_model

    paths = []
    for seed in (1, 2):
        directory = tmp_path_factory.mktemp(f"minilm-head-{seed}")
        model, tokenizer = load_reward_model("minilm-l6", seed=seed)
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        paths.append(str(directory))
    return paths[0], paths[1]


def oracle_answer(body: dict) -> str:
    """A judge that knows the right answer of the objective tasks (for the target pair only)."""
    prompt = body["messages"][-1]["content"]
    target = prompt.split("## Pair to judge", 1)[1]
    first = target.split("### Candidate 1", 1)[1].split("### Candidate 2", 1)[0].strip()
    return json.dumps({"preferred": "Candidate 1" if is_right(first) else "Candidate 2", "reason": "checked"})


def is_right(answer: str) -> bool:
    match = re.fullmatch(r"(\d+) \+ (\d+) = (\d+)", answer)
    if match:
        a, b, total = map(int, match.groups())
        return a + b == total
    return len(answer.split()) == 3  # the word, three times


def oracle_judges(url: str) -> dict:
    return {"judges": [{"name": "oracle", "backend": "openai", "model": "oracle", "base_url": url, "api_key_env": None,
                        "concurrency": 2, "timeout": 5.0, "max_retries": 2, "backoff_base": 0.01}],
            "examples": 2}
