"""Stage 2 over every pool pair: the best RM's own training pairs are scored out of fold."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from synpref.curate.config import CurateConfig
from synpref.curate.stage1 import run_stage1
from synpref.curate.stage2 import fold_of, run_stage2
from synpref.curate.training import load_scorer
from synpref.errors import SynprefError
from synpref.retrieval.adaptive import preference_probability
from tests.curate.conftest import make_workspace

# Of the 12 flipped labels the best RM trained on them all catches none; out of fold, 8.
CAUGHT_IN_SAMPLE, CAUGHT_OUT_OF_FOLD = 0, 8


def _config(cross_fit: int) -> CurateConfig:
    return CurateConfig.model_validate({
        "rm": {"model": "minilm-l6", "head_only": True, "max_length": 64},
        "stage1": {"iterations": 1, "seed_size": 40},  # the best RM trains on every pool pair
        "stage2": {"rule": "gold_and_best", "flip": "reversed_passes", "scope": "all", "cross_fit": cross_fit},
    })


def _decide(workspace, config, log=lambda _: None) -> list[dict]:
    run_stage1(workspace, config, log=log)
    run_stage2(workspace, config, log=log)
    return pq.read_table(workspace.root / "runs" / "stage2" / "decisions.parquet").to_pylist()


def test_folds_are_fixed_by_the_pair_id():
    assert [fold_of(i, 5) for i in ("a", "b", "c", "d")] == [fold_of(i, 5) for i in ("a", "b", "c", "d")]
    assert sorted({fold_of(str(i), 4) for i in range(100)}) == [0, 1, 2, 3]
    with pytest.raises(SynprefError, match="1 fold leaves nothing to train on"):
        from synpref.curate.config import load_curate_config

        load_curate_config(".", overrides=["stage2.cross_fit=1"])


def test_a_memorised_noisy_label_no_longer_vouches_for_itself(tmp_path):
    workspace = make_workspace(tmp_path)
    flipped = {p.id for _, p in workspace.iter_pairs("pool") if p.meta.get("flipped")}
    in_sample = _decide(make_workspace(tmp_path / "in-sample"), _config(0))
    messages: list[str] = []
    rows = _decide(workspace, _config(4), log=messages.append)

    assert [r["best_p_out_of_fold"] for r in rows] == [True] * 40
    assert not any(r["best_p_out_of_fold"] for r in in_sample)
    assert "stage2: cross-fitting the best RM's 40 training pairs in 4 folds" in messages
    # Each pair's p is the one of the fold model that never saw it.
    first = rows[0]
    fold = workspace.root / "runs" / "stage2" / "cross-fit" / f"fold-{fold_of(first['id'], 4)}" / "model"
    pair = next(p for _, p in workspace.iter_pairs("pool") if p.id == first["id"])
    chosen, rejected = load_scorer(str(fold), _config(4), workspace.root).score_pairs([pair])
    assert first["best_p"] == pytest.approx(preference_probability(chosen[0], rejected[0]), abs=1e-9)

    def caught(decisions):
        return sum(r["action"] == "flip" and r["id"] in flipped for r in decisions)

    assert len(flipped) == 12
    assert (caught(in_sample), caught(rows)) == (CAUGHT_IN_SAMPLE, CAUGHT_OUT_OF_FOLD)

    # A rerun trains nothing and decides the same.
    again: list[str] = []
    assert _decide(workspace, _config(4), log=again.append) == rows
    assert not [m for m in again if "cross-fitting" in m]
