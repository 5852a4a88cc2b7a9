"""`train --resume` logs each step once in metrics.jsonl (and in TensorBoard).

The interrupted run logged the steps after its last checkpoint; the resumed run logs them
again, and used to append them after the first copies.
"""

from __future__ import annotations

import json

from synpref.rm.trainer import forget_metrics_after, train

from .conftest import arithmetic_records, write_records
from .test_rm_train import tiny_config

EVERY_STEP = [(1, "train"), (2, "train"), (2, "gold"), (3, "train"), (4, "train"), (4, "gold"),
              (5, "train"), (6, "train"), (6, "gold")]


def logged(output) -> list[tuple[int, str]]:
    return [(line["step"], line["kind"]) for line in map(json.loads, (output / "metrics.jsonl").read_text().splitlines())]


def tensorboard_steps(output) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(output / "tensorboard"))
    events.Reload()
    return [event.step for event in events.Scalars("train/loss")]


def test_a_resumed_run_logs_each_step_once(tmp_path, tiny_llama_dir):
    data = write_records(tmp_path / "train.jsonl", arithmetic_records(40, seed=1))
    gold = write_records(tmp_path / "gold.jsonl", arithmetic_records(60, seed=2)[40:])
    output = tmp_path / "run"
    config = dict(max_steps=6, save_every=3, eval_every=2, gold=str(gold), tensorboard=True)
    train(tiny_config(tiny_llama_dir, data, output, **config))
    assert logged(output) == EVERY_STEP
    # Interrupted while writing step 7's line (of a longer run): the line is cut short.
    with open(output / "metrics.jsonl", "a") as file:
        file.write('{"step": 7, "kind": "tra')

    train(tiny_config(tiny_llama_dir, data, output, resume=True, **config))  # from step 3
    assert logged(output) == EVERY_STEP
    assert tensorboard_steps(output) == [1, 2, 3, 4, 5, 6]


def test_forget_metrics_after_keeps_the_steps_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "kind": "train"}\n{"step": 2, "kind": "gold"}\n{"step": 3, "kind": "train"}\n{"st')
    forget_metrics_after(path, 2)
    assert path.read_text() == '{"step": 1, "kind": "train"}\n{"step": 2, "kind": "gold"}\n'
    forget_metrics_after(tmp_path / "absent.jsonl", 2)  # a run that never logged: nothing to do
    assert not (tmp_path / "absent.jsonl").exists()
