"""The streaming curation code decides exactly what the in-memory code decided, and streams.

`streaming_scenario.run_scenario` runs Stage 1, Stage 2, both exports and the ablation on a
2,000-pair workspace through the CLI; data/streaming_expected.json is its digest from the
in-memory code (commit 559b330). Probabilities are compared within FLOAT_TOLERANCE (CPUs'
float kernels differ in the sixth digit), everything decided exactly; the export hashes leave
floats out (those of 559b330 were recomputed so, with its code, when the rule changed). Regenerate it only when a change of results is intended:

    python tests/curate/streaming_scenario.py tests/curate/data/streaming_expected.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.curate.streaming_scenario import EXPORTS, FLOAT_TOLERANCE, run_scenario

EXPECTED = Path(__file__).parent / "data" / "streaming_expected.json"
SHOWN = 10  # differences listed on failure


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> dict[str, Any]:
    """One run for both tests: it takes minutes."""
    return run_scenario(tmp_path_factory.mktemp("streaming-scenario"))


def test_outputs_equal_the_in_memory_code(scenario):
    digest = {key: value for key, value in scenario.items() if key != "written_files"}
    expected = json.loads(EXPECTED.read_text())
    found = differences(expected, digest)
    assert not found, f"{len(found)}+ differences from {EXPECTED.name} (expected -> got):\n" + "\n".join(found[:SHOWN])


def test_a_run_writes_no_jsonl_outside_exports_and_no_workspace_under_runs(scenario):
    jsonl = [path for path in scenario["written_files"] if not path.endswith("synpref.yaml") and not path.startswith(f"{EXPORTS}/")]
    workspaces = [path for path in scenario["written_files"] if path.endswith("synpref.yaml") and path.startswith("runs/")]
    assert (jsonl, workspaces) == ([], []), f"JSONL outside {EXPORTS}/: {jsonl}\nworkspaces under runs/: {workspaces}"


def differences(expected: Any, got: Any, where: str = "") -> list[str]:
    """'path: expected -> got' for each place the two differ, in order (at most SHOWN of them)."""
    if isinstance(expected, dict) and isinstance(got, dict):
        found = [f"{where}.{key}: missing -> {_short(got[key])}" for key in got if key not in expected]
        found += [f"{where}.{key}: {_short(expected[key])} -> missing" for key in expected if key not in got]
        for key in [key for key in expected if key in got]:
            found += differences(expected[key], got[key], f"{where}.{key}")
            if len(found) >= SHOWN:
                break
        return found
    if isinstance(expected, list) and isinstance(got, list):
        found = [f"{where}: {len(expected)} items -> {len(got)} items"] if len(expected) != len(got) else []
        for index, (left, right) in enumerate(zip(expected, got)):
            label = f"{index} id={left['id']}" if isinstance(left, dict) and "id" in left else index
            found += differences(left, right, f"{where}[{label}]")
            if len(found) >= SHOWN:
                break
        return found
    if isinstance(expected, float) and isinstance(got, float) and abs(expected - got) <= FLOAT_TOLERANCE:
        return []
    return [] if expected == got else [f"{where}: {_short(expected)} -> {_short(got)}"]


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 200 else text[:200] + "..."
