"""Ray shard jobs ask for the GPUs their model needs and load it once per actor.

The local runtime declares one logical GPU (`num_gpus=1`): Ray schedules and accounts for it
without any GPU hardware, so what an actor was given can be read inside the task.
"""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from synpref.curate.executors import run_shards, shard_gpus

SHARDS = 4


@dataclass
class RecordingJob:
    """Writes, per shard, the resources Ray assigned and which model instance ran it."""

    constructions: str  # folder: one file per model construction
    device: str = "cpu"
    gpus: float | None = None
    name: str = "record"
    _state: dict = field(default_factory=dict, repr=False)

    def __call__(self, source: Path, target: Path) -> None:
        import ray

        if "model" not in self._state:  # the expensive load, on first use
            self._state["model"] = uuid.uuid4().hex
            (Path(self.constructions) / self._state["model"]).touch()
        resources = ray.get_runtime_context().get_assigned_resources()
        target.write_text(json.dumps({"model": self._state["model"], "resources": resources}))


@pytest.fixture(scope="module")
def ray_with_one_gpu():
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    # The job class lives in this test module, which Ray's workers cannot import by name.
    cloudpickle.register_pickle_by_value(sys.modules[RecordingJob.__module__])
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def shard_inputs(directory: Path) -> list[Path]:
    directory.mkdir()
    inputs = [directory / f"shard-{i:05d}.parquet" for i in range(SHARDS)]
    for path in inputs:
        path.write_text("")
    return inputs


def test_gpus_follow_the_jobs_device_unless_set():
    assert shard_gpus(RecordingJob("x")) == 0.0
    assert shard_gpus(RecordingJob("x", device="cuda")) == 1.0
    assert shard_gpus(RecordingJob("x", device="cuda:1", gpus=0.5)) == 0.5
    assert shard_gpus(lambda source, target: None) == 0.0  # a plain function: CPU


@pytest.mark.parametrize(("job_gpus", "expected"), [(0.5, {"CPU": 1.0, "GPU": 0.5}), (None, {"CPU": 1.0})])
def test_an_actor_gets_the_gpu_fraction_its_job_asks_for_and_loads_once(ray_with_one_gpu, tmp_path, job_gpus, expected):
    constructions = tmp_path / "constructions"
    constructions.mkdir()
    job = RecordingJob(str(constructions), device="cuda" if job_gpus else "cpu", gpus=job_gpus)
    assert run_shards(job, shard_inputs(tmp_path / "in"), tmp_path / "out", executor="ray", workers=1) == SHARDS
    outputs = [json.loads(path.read_text()) for path in sorted((tmp_path / "out").iterdir())]
    assert len(outputs) == SHARDS
    assert all(output["resources"] == expected for output in outputs)
    # One actor ran all four shards with one model: constructed once, not once per shard.
    assert len(list(constructions.iterdir())) == 1
    assert {output["model"] for output in outputs} == {path.name for path in constructions.iterdir()}


def test_two_half_gpu_actors_share_the_one_gpu(ray_with_one_gpu, tmp_path):
    constructions = tmp_path / "constructions"
    constructions.mkdir()
    job = RecordingJob(str(constructions), device="cuda")
    assert run_shards(job, shard_inputs(tmp_path / "in"), tmp_path / "out", executor="ray", workers=2, gpus_per_shard=0.5) == SHARDS
    outputs = [json.loads(path.read_text()) for path in sorted((tmp_path / "out").iterdir())]
    assert all(output["resources"] == {"CPU": 1.0, "GPU": 0.5} for output in outputs)
    models = {output["model"] for output in outputs}
    # At most one model per actor, however the four shards were spread over the two actors.
    assert models == {path.name for path in constructions.iterdir()} and 1 <= len(models) <= 2
