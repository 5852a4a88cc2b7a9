from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from synpref.data.ingest import IngestOptions, ingest
from synpref.data.workspace import Workspace
from tests.conftest import record, write_jsonl

POOL = [
    record("What is 2+3?", "5", "6"),
    record("Name a prime number.", "7", "8"),
    record("Capital of France?", "Paris", "Lyon"),
    record("Spell 'cat' backwards.", "tac", "act"),
    record("What is 10/2?", "5", "3"),
    record("Is water wet?", "It is usually described as wet.", "No."),
]
GOLD = [
    record("What is 2+2?", "4", "22"),
    record("Name an even number.", "12", "9"),
]


@pytest.fixture
def pairs_workspace(tmp_path: Path) -> Workspace:
    """A workspace with 6 pool pairs and 2 gold pairs (chosen = human-preferred).

    No text is both a chosen and a rejected response, so a fake judge can tell them apart.
    """
    return make_pairs_workspace(tmp_path)


def make_pairs_workspace(directory: Path) -> Workspace:
    workspace = Workspace.init(directory / "ws", name="annotate-test")
    ingest(workspace, IngestOptions([str(write_jsonl(directory / "pool.jsonl", POOL))], workers=1))
    ingest(workspace, IngestOptions([str(write_jsonl(directory / "gold.jsonl", GOLD))], split="gold", workers=1))
    return workspace


def write_judges(path: Path, **job) -> Path:
    """A judges YAML file; `job` holds top-level keys, `judges` the list."""
    path.write_text(yaml.safe_dump(job))
    return path


def fault_injector_judge(url: str, **overrides) -> dict:
    """An openai-backend judge tuned for tests: short timeout, tiny backoff."""
    return {
        "name": "fake", "backend": "openai", "model": "fake-model", "base_url": url, "api_key_env": None,
        "concurrency": 1, "timeout": 0.5, "max_retries": 5, "backoff_base": 0.01, "backoff_max": 2.0,
        "price_input": 1e-6, "price_output": 2e-6, **overrides,
    }
