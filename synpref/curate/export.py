"""Export the curated set, the flipped set and their union, with provenance.

    curated   gold pairs (human-verified), Stage 1 silver (oriented by the LLM verdict) and
              the Stage 2 pairs kept in their original orientation
    flipped   Stage 2 pairs recycled with chosen and rejected swapped (a new pair id)
    union     both

Every row carries `origin` (which step put it there) and `reason` (the Stage 2 rule's
words, or the judges' verdict) as columns, and the same under meta["curation"] along with
the RMs' p and the original pair id, so a trainer can filter and a person can audit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synpref.data.models import PreferencePair
from synpref.errors import SynprefError

SETS = ("curated", "flipped", "union")
SUFFIX = {"trl": ".trl.jsonl", "jsonl": ".jsonl", "parquet": ".parquet", "hf-dataset": "-dataset"}


def curated_rows(workspace) -> list[tuple[str, PreferencePair, dict[str, Any]]]:
    """(set name, oriented pair, provenance) for every pair the curation run produced."""
    import pyarrow.parquet as pq

    from synpref.curate.stage1 import last_state

    decisions_file = workspace.decisions_file
    if not decisions_file.is_file():
        raise SynprefError("curate export: no Stage 2 decisions; run `synpref curate stage2` first")
    decisions = {row["id"]: row for row in pq.read_table(decisions_file).to_pylist()}
    state = {row["id"]: row for row in last_state(workspace)["rows"]}
    rows = []
    for split, pair in workspace.iter_pairs():
        if split == "gold":
            rows.append(("curated", pair, {"origin": "gold", "reason": "human-verified"}))
        elif pair.id in decisions:  # Stage 2 decided it (with scope all, Stage 1's pairs too): its word is last
            if decisions[pair.id]["action"] == "discard":
                continue
            decision = decisions[pair.id]
            provenance = {"origin": f"stage2 {decision['action']}", "reason": decision["reason"], "original_id": pair.id,
                          "best_p": decision["best_p"], "gold_p": decision["gold_p"], "llm_verdict": decision["llm_verdict"]}
            flipped = decision["action"] == "flip"
            rows.append(("flipped" if flipped else "curated", pair.swapped() if flipped else pair, provenance))
        elif pair.id in state and state[pair.id]["verdict"] in ("chosen", "rejected", "seed"):
            entry = state[pair.id]
            oriented = pair.swapped() if entry["flipped"] else pair
            rows.append(("curated", oriented, {"origin": f"stage1 {entry['origin']}", "reason": f"verdict {entry['verdict']}", "original_id": pair.id}))
    return rows


def export_curated(workspace, fmt: str, output_dir: Path) -> dict[str, tuple[Path, int]]:
    """Write the three sets in `fmt` (trl | jsonl | parquet | hf-dataset); returns {set: (path, rows)}."""
    import pyarrow as pa

    from synpref.data.export import FORMATS, _to_trl, _write_dataset, _write_jsonl, _write_parquet
    from synpref.data.stage0 import pairs_to_batch

    if fmt not in FORMATS:
        raise SynprefError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = curated_rows(workspace)
    written = {}
    for name in SETS:
        chosen = [(s, p, prov) for s, p, prov in rows if name == "union" or s == name]
        batch = pairs_to_batch([p for _, p, _ in chosen], [s for s, _, _ in chosen],
                               [json.dumps({**p.meta, "curation": prov}) for _, p, prov in chosen])
        if fmt in ("trl", "hf-dataset"):
            batch = _to_trl(batch)
        batch = batch.append_column("origin", pa.array([prov["origin"] for _, _, prov in chosen], pa.string()))
        batch = batch.append_column("reason", pa.array([prov["reason"] for _, _, prov in chosen], pa.string()))
        path = output_dir / f"{name}{SUFFIX[fmt]}"
        if fmt == "hf-dataset":
            count = _write_dataset([batch], path) if chosen else 0
        elif fmt == "parquet":
            count = _write_parquet([batch], path)
        else:
            count = _write_jsonl([batch], path)
        written[name] = (path, count)
    return written
