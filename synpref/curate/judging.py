"""LLM judging of a chosen list of pairs through the annotation engine (`run_job`).

`run_job` selects pairs by split, so the pairs to judge are put in a small selection
workspace of their own: the gold pairs (the judges' examples) as `gold`, the targets as
`pool`. It shares the main workspace's LLM cache, so a rerun never pays twice, and its
annotation logs make a killed judging job resume where it stopped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from synpref.data.models import PreferencePair

CONFIG_FILE = "synpref.yaml"


def judge_pairs(workspace_root: Path, pairs: list[PreferencePair], gold: list[PreferencePair], job: dict[str, Any], directory: Path) -> dict[str, tuple[str, float]]:
    """{pair id: (verdict, agreement)} of the LLM judges for `pairs` (verdict chosen|rejected|unsure)."""
    from synpref.annotate.config import JobConfig
    from synpref.annotate.runner import run_job
    from synpref.annotate.store import judgments_log, latest

    if not pairs:
        return {}
    selection = _selection_workspace(Path(workspace_root), pairs, gold, directory)
    run_job(selection, "judge", JobConfig.model_validate(job), split="pool")
    wanted = {pair.id for pair in pairs}
    records = latest(judgments_log(selection.root).read(), "pair_id")
    return {r["pair_id"]: (r["verdict"], float(r["agreement"] or 0.0)) for r in records if r["pair_id"] in wanted}


def _selection_workspace(workspace_root: Path, pairs: list[PreferencePair], gold: list[PreferencePair], directory: Path):
    from synpref.data.ingest import IngestOptions, ingest
    from synpref.data.workspace import Workspace

    directory.mkdir(parents=True, exist_ok=True)
    # The main workspace's config, so its Stage 0 limits accept the pairs it already holds.
    shutil.copyfile(workspace_root / CONFIG_FILE, directory / CONFIG_FILE)
    selection = Workspace(directory)
    _link(workspace_root / "cache" / "llm", directory / "cache" / "llm")
    attributes = workspace_root / "annotate" / "attributes" / "samples.jsonl"
    if attributes.is_file() and not (directory / "annotate" / "attributes" / "samples.jsonl").is_file():
        (directory / "annotate" / "attributes").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(attributes, directory / "annotate" / "attributes" / "samples.jsonl")
    for split, items in (("gold", gold), ("pool", pairs)):
        if not items:
            continue  # e.g. no gold left for examples when all of it calibrates the judges
        path = directory / f"{split}.jsonl"
        if not path.is_file():
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(json.dumps(_record(p)) + "\n" for p in items))
            tmp.replace(path)
        ingest(selection, IngestOptions([str(path)], split=split, workers=1))  # resumes; repeats are duplicates
    return selection


def _record(pair: PreferencePair) -> dict[str, Any]:
    return {"conversation": [m.model_dump() for m in pair.conversation], "chosen": pair.chosen.model_dump(),
            "rejected": pair.rejected.model_dump(), "source": pair.source, "meta": pair.meta}


def _link(target: Path, link: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target.resolve(), target_is_directory=True)
