"""Resume after SIGKILL: a run killed between checkpoints resumes to the weights of a straight run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from synpref.rm.trainer import train

from .conftest import arithmetic_records, write_records
from .test_rm_train import load_weights, max_difference, tiny_config

KILLED_TRAIN = textwrap.dedent('''
    """Train with checkpoints every 3 steps; SIGKILL this process right after step 4."""
    import json, os, signal, sys
    from synpref.rm import trainer
    from synpref.rm.config import TrainConfig

    original = trainer._Run.after_step
    def after_step(self, state, total_steps):
        original(self, state, total_steps)
        if state.step == 4:
            os.kill(os.getpid(), signal.SIGKILL)
    trainer._Run.after_step = after_step
    trainer.train(TrainConfig(**json.loads(sys.argv[1])))
''')


def test_a_run_killed_between_checkpoints_resumes_exactly(tmp_path, tiny_llama_with_dropout_dir):
    data = write_records(tmp_path / "train.jsonl", arithmetic_records(40, seed=11))
    options = dict(max_steps=6, save_every=3, token_cache=str(tmp_path / "cache"))
    straight = tmp_path / "straight"
    train(tiny_config(tiny_llama_with_dropout_dir, data, straight, **options))
    killed = tmp_path / "killed"
    script = tmp_path / "killed_train.py"
    script.write_text(KILLED_TRAIN)
    config = tiny_config(tiny_llama_with_dropout_dir, data, killed, **options).to_dict()
    result = subprocess.run([sys.executable, str(script), json.dumps(config)], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == -9, result.stderr[-3000:]
    assert [p.name for p in (killed / "checkpoints").iterdir()] == ["step-00000003"]
    logged = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]  # step 4 was logged, then lost with the process
    summary = train(tiny_config(tiny_llama_with_dropout_dir, data, killed, resume=True, **options))
    assert summary["steps"] == 6
    assert max_difference(load_weights(straight), load_weights(killed)) <= 1e-6
    logged = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5, 6]
    assert len(list((tmp_path / "cache").glob("pairs-*.arrow"))) == 1  # all three runs read one cache
