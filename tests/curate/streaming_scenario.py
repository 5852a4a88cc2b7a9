"""One curation run on a 2,000-pair workspace, reduced to a digest of everything it decided.

The digest pins the outputs of the in-memory curation code (commit 559b330) so that the
streaming refactor of synpref/curate/ can be checked against them: same Stage 1 labels, same
Stage 2 decisions, same exported rows, same ablation figures. Every step runs through the CLI
in a subprocess (`python_env` picks which synpref it imports); nothing here reads synpref's
internals, only the files the steps leave behind.

    python tests/curate/streaming_scenario.py OUT.json   # run it and write the digest

Workspace: 150 gold pairs and 1,850 pool pairs from `known_answers` (30% of the pool flipped),
40% of the pool with a reference (half as `reference`, half as a plain `ground_truth`), so the
verifier judge decides part of what Stage 1 retrieves and Stage 2 sends to judges.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

GOLD_PAIRS, POOL_PAIRS = 150, 1_850  # 2,000 pairs in all
FLIP_RATE = 0.3
DIGITS = 9  # floats are stored rounded to this many decimals
# and compared within this much: the same run gives probabilities that differ by ~2e-6 between
# two CPUs (their float kernels), and nothing it decides depends on digits that fine.
FLOAT_TOLERANCE = 1e-4
EXPORTS = "exports"  # WORKSPACE/exports: the one folder a run may write JSONL into
CONFIG = {
    "embedder": "minilm-l6",
    # The in-memory code stored float32 vectors; float16 (the default now) may swap neighbours
    # whose scores tie to within its rounding, which is storage, not streaming. The digest was
    # made before the option existed: drop this line when regenerating it with 559b330.
    "embedding_dtype": "float32",
    "judges": {"judges": [{"name": "verifier", "backend": "verifier", "model": "rules", "api_key_env": None}]},
    # l2 fixed: the grid (and the gold RM's cross-validation over it) would fit ~10x more heads.
    "rm": {"model": "minilm-l6", "head_only": True, "max_length": 64, "l2": 0.1},
    "stage1": {"iterations": 2, "seed_size": 200},
    # scope all: Stage 2 decides Stage 1's pairs too, through the (default, 5-fold) cross-fitting.
    "stage2": {"rule": "gold_and_either", "flip": "reversed_passes", "scope": "all"},
}


def run_scenario(root: Path, python_env: dict | None = None) -> dict[str, Any]:
    """Build the workspace under `root`, run the curation CLI on it, return the digest.

    `python_env` is the subprocesses' environment (default: this one); its PYTHONPATH decides
    which synpref the steps run. The digest's `written_files` lists, workspace-relative, every
    JSONL file and every `synpref.yaml` the run left under the workspace.
    """
    root = Path(root)
    workspace = root / "ws"
    env = {**(os.environ if python_env is None else python_env), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

    def synpref(*args: str) -> None:
        # cwd `root`, not a checkout: `-m` puts the cwd first on sys.path, and PYTHONPATH must decide
        _run([sys.executable, "-m", "synpref", *args], env, cwd=root)

    gold_file, pool_file = _write_inputs(root / "inputs")
    synpref("init", str(workspace), "--name", "streaming-equality")
    synpref("ingest", str(gold_file), "-w", str(workspace), "--split", "gold", "--workers", "1")
    synpref("ingest", str(pool_file), "-w", str(workspace), "--split", "pool", "--workers", "1")
    (workspace / "curate.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    # The curation steps in one process, one command after another (as a shell would run them,
    # without paying the imports five times).
    steps = [["curate", "stage1", "-w", str(workspace)], ["curate", "stage2", "-w", str(workspace)]]
    steps += [["curate", "export", "-w", str(workspace), "--format", fmt, "--output", str(workspace / EXPORTS)] for fmt in ("parquet", "trl")]
    steps += [["curate", "ablation", "-w", str(workspace), "--folds", "3"]]
    _run([sys.executable, "-c", STEPS, json.dumps(steps)], env, cwd=root)
    return {
        "stage1": _stage1(workspace / "runs" / "stage1"),
        "stage2": _stage2(workspace / "runs" / "stage2" / "decisions.parquet"),
        "exports": _exports(workspace / EXPORTS),
        "ablation": _ablation(workspace / "runs" / "ablation" / "results.json"),
        "written_files": written_files(workspace),
    }


def _write_inputs(directory: Path) -> tuple[Path, Path]:
    """Generated gold and pool JSONL files, outside the workspace."""
    from synpref.curate.known_answers import flip_labels, objective_records

    directory.mkdir(parents=True, exist_ok=True)
    gold = objective_records(GOLD_PAIRS, seed=1, offset=10_000)
    pool = [_reference_share(index, record) for index, record in
            enumerate(flip_labels(objective_records(POOL_PAIRS, seed=2), FLIP_RATE, seed=3))]
    paths = directory / "gold.jsonl", directory / "pool.jsonl"
    for path, records in zip(paths, (gold, pool)):
        path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return paths


def _reference_share(index: int, record: dict) -> dict:
    """40% of the pool keeps its reference (as `reference`, or as a plain `ground_truth`
    answer); the rest has none. The source says which, so the ablation reports both."""
    record = {**record}
    reference = record.pop("reference")
    if index % 5 == 0:
        return {**record, "reference": reference, "source": "objective-reference"}
    if index % 5 == 1:
        return {**record, "ground_truth": reference["answer"], "source": "objective-reference"}
    return {**record, "source": "objective-no-reference"}


STEPS = """
import json, sys
from synpref.cli import app
for args in json.loads(sys.argv[1]):
    try:
        app(args)
    except SystemExit as done:
        if done.code:
            raise SystemExit(f"{' '.join(args)} exited {done.code}")
"""


def _run(command: list[str], env: dict, cwd: Path) -> None:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def _stage1(directory: Path) -> list[dict[str, Any]]:
    iterations = sorted(directory.glob("iter-*"), key=lambda p: int(p.name.split("-")[1]))
    return [{"iteration": path.name,
             "state": _columns(path / "state.parquet", ["id", "verdict", "flipped", "origin"]),
             "judgments": _columns(path / "judgments.parquet", ["id", "verdict", "decided_by"])}
            for path in iterations]


def _stage2(path: Path) -> list[dict[str, Any]]:
    return _columns(path, ["id", "action", "reason", "annotated", "llm_verdict", "decided_by", "best_p", "gold_p"])


def _columns(path: Path, names: list[str]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return canonical(pq.read_table(path, columns=names).to_pylist())


def _exports(directory: Path) -> dict[str, dict[str, Any]]:
    """Per export file: its row count and the sha256 of its rows' JSON (floats left out), in file order."""
    import pyarrow.parquet as pq

    found = {}
    for path in sorted(directory.glob("*.parquet")):
        columns = ["id", "conversation", "chosen", "rejected", "origin", "reason", "meta"]
        rows = [{**row, "meta": json.loads(row["meta"]).get("curation")} for row in pq.read_table(path, columns=columns).to_pylist()]
        found[path.name] = _hashed(rows)
    for path in sorted(directory.glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        found[path.name] = _hashed([{**row, "meta": json.loads(row["meta"])} if isinstance(row.get("meta"), str) else row for row in rows])
    return found


def _hashed(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Row count and sha256 of the rows with every float left out (null): the floats of an
    export are Stage 2's probabilities, compared within a tolerance in `stage2`, and a hash
    cannot tolerate the last digits that differ between CPUs' float kernels."""
    text = json.dumps(without_floats(rows), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {"rows": len(rows), "sha256": hashlib.sha256(text.encode()).hexdigest()}


def without_floats(value: Any) -> Any:
    if isinstance(value, float):
        return None
    if isinstance(value, dict):
        return {key: without_floats(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [without_floats(item) for item in value]
    return value


def _ablation(path: Path) -> dict[str, Any]:
    results = json.loads(path.read_text())
    return canonical({
        "heldout_pairs": results["heldout_pairs"],
        "accuracy": results["accuracy"],
        "differences": results["differences"],
        "sizes_per_fold": [fold["sizes"] for fold in results["folds"]],
        "per_source": results["per_source"],
    })


def canonical(value: Any) -> Any:
    """`value` with every float rounded to DIGITS decimals (JSON-able as it was)."""
    if isinstance(value, float):
        return round(value, DIGITS)
    if isinstance(value, dict):
        return {key: canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(item) for item in value]
    return value


def written_files(workspace: Path) -> list[str]:
    """Workspace-relative paths of every *.jsonl / *.jsonl.gz and every synpref.yaml under it
    (symlinked folders, e.g. an ablation fold's view of the shared cache, are not followed)."""
    found = []
    for directory, _, files in os.walk(workspace):
        for name in files:
            if name.endswith((".jsonl", ".jsonl.gz")) or name == "synpref.yaml":
                found.append((Path(directory) / name).relative_to(workspace).as_posix())
    return sorted(found)


def dump_digest(digest: dict[str, Any]) -> str:
    """The digest as JSON with one row per line: small diffs when a decision changes."""
    def nested(value: Any) -> bool:
        return isinstance(value, dict) and any(isinstance(item, dict | list) for item in value.values())

    def block(value: Any, indent: str) -> str:
        inner = indent + "  "
        if isinstance(value, list) and any(isinstance(item, dict) for item in value):
            return "[\n" + ",\n".join(inner + block(item, inner) for item in value) + "\n" + indent + "]"
        if nested(value):
            items = (f"{inner}{json.dumps(key)}: {block(item, inner)}" for key, item in value.items())
            return "{\n" + ",\n".join(items) + "\n" + indent + "}"
        return json.dumps(value, sort_keys=True)

    return block(digest, "") + "\n"


if __name__ == "__main__":
    import tempfile
    import time

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="streaming-scenario-") as tmp:
        digest = run_scenario(Path(tmp))
    print(f"scenario: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    Path(sys.argv[1]).write_text(dump_digest(digest))
