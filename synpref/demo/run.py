"""`synpref demo`: the whole loop on embedded defaults, resumable step by step.

    data -> ingest -> attributes -> stage1 -> stage2 -> ablation -> train -> evaluate -> report

The loop's reward models are head-only (frozen backbone features, a Bradley-Terry head fitted
in seconds, so the ablation can train one per condition): SmolLM2-135M's last-token state on
the generated tasks, all-MiniLM-L6-v2 on a real pool (`Budget.loop_model`). Two judges are
measured on gold first (synpref/curate/gating.py): the local SmolLM2, which being at chance
gets no say, and a verifier judge, which decides the pairs that carry a reference answer
(the generated objective ones). Stage 1 sends a few pairs no judge decided per iteration to
the annotation app's queue, where simulated annotators label them (synpref/demo/humans.py).

Each finished step is recorded in WORKSPACE/runs/demo/steps.json with what it produced; a
rerun (after Ctrl-C, say) skips finished steps, and the steps that do long work (ingest,
annotation, curation, training) resume inside themselves too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from synpref.demo.data import DemoSizes, write_demo_data
from synpref.errors import SynprefError
from synpref.options import cli

STEPS = ("data", "ingest", "attributes", "stage1", "stage2", "ablation", "train", "evaluate", "report")


class DemoOptions(BaseModel):
    """The options of `synpref demo` (the CLI is built from these fields)."""

    model_config = ConfigDict(extra="forbid")

    workspace: Path = Field(Path("demo-workspace"), description="workspace directory (created if missing)",
                            json_schema_extra=cli(flags=["--workspace", "-w"]))  # fmt: skip
    tiny: bool = Field(False, description="a minute-scale run with tiny data and models (CI's end-to-end test)")
    pool: Optional[Path] = Field(None, description="real pool (any ingest format) instead of the generated one")
    gold: Optional[Path] = Field(None, description="real human-labelled gold set (shared-data JSONL schema)")
    bench_dir: Optional[Path] = Field(None, description="DIR/<benchmark>/ files to evaluate the final model on")
    seed: int = Field(0, description="seed of the generated data (which pairs, which labels flipped)")


@dataclass
class Budget:
    """How much work each step does: the full demo fits in ~15 minutes on 2 cores."""

    attributes: int  # pairs the local LLM writes attributes for
    seed_size: int  # pool pairs taken as the seed's silver
    max_retrieved: int  # Stage 1 judging budget per iteration
    human_budget: int  # Stage 1 pairs per iteration sent to the (simulated) annotators
    max_judged: int  # Stage 2 judging budget
    stage2_limit: int | None  # pool pairs Stage 2 looks at
    calibration_pairs: int  # gold pairs each LLM judge labels to earn its weight
    final_model: str
    final_steps: int
    # The backbone of every reward model in the loop (head-only). On the generated tasks SmolLM2's
    # last-token state tells a right sum from a wrong one and MiniLM's mean pooling does not
    # (seed 0: MiniLM recycled 139 pairs at precision 0.86, SmolLM2 129 at 0.98); a real pool
    # keeps MiniLM, whose features cost a tenth as much at 256 tokens.
    loop_model: str = "smollm2-135m"

    @classmethod
    def for_options(cls, options: DemoOptions) -> Budget:
        # SmolLM2 writes attribute JSON slowly and rarely validly: a few pairs show the step.
        if options.tiny:
            return cls(attributes=1, seed_size=40, max_retrieved=6, human_budget=2, max_judged=6, stage2_limit=None,
                       calibration_pairs=6, final_model="minilm-l6", final_steps=4, loop_model="minilm-l6")
        limit = 2000 if options.pool else None  # a real pool is subsampled to fit the time budget
        # Two thirds of the pool seed the best RM (Stage 1 retrieves from the rest): with the
        # judge gated out, the seed is all the best RM learns from, and 200 pairs left it at
        # 0.755 held-out against 0.835 for 400-600 (noisy) pairs.
        return cls(attributes=3, seed_size=400, max_retrieved=50, human_budget=4, max_judged=120, stage2_limit=limit,
                   calibration_pairs=20, final_model="smollm2-135m", final_steps=30,
                   loop_model="minilm-l6" if options.pool else "smollm2-135m")


class DemoState:
    """Finished steps and what they produced, written after every step."""

    def __init__(self, path: Path):
        self.path = path
        self.steps: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def done(self, step: str) -> bool:
        return step in self.steps

    def mark(self, step: str, result: Any) -> None:
        self.steps[step] = result
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.steps, indent=2, default=str))
        tmp.replace(self.path)


def run_demo(options: DemoOptions, log: Callable[[str], None] = print) -> Path:
    """Run (or resume) every step; returns the path of report.html."""
    from synpref.data.workspace import CONFIG_FILE, Workspace

    if not (options.workspace / CONFIG_FILE).exists():
        Workspace.init(options.workspace, name="synpref-demo")
    workspace = Workspace(options.workspace)
    state = DemoState(workspace.run_dir("demo") / "steps.json")
    context = _Context(options, workspace, Budget.for_options(options), state, log)
    try:
        for step in STEPS:
            if state.done(step):
                log(f"[{step}] done earlier, skipped")
                continue
            log(f"[{step}] ...")
            started = time.monotonic()
            result = getattr(context, step)()
            state.mark(step, {"seconds": round(time.monotonic() - started, 1), **result})
            log(f"[{step}] finished in {time.monotonic() - started:.0f} s")
    finally:
        context.close()
    return workspace.root / "report.html"


class _Context:
    def __init__(self, options: DemoOptions, workspace, budget: Budget, state: DemoState, log):
        self.options = options
        self.workspace = workspace
        self.budget = budget
        self.state = state
        self.log = log
        self.inputs = workspace.root / "inputs"
        self.judge_server = None  # llama.cpp serving the judge, started by the first step that asks

    def close(self) -> None:
        if self.judge_server is not None:
            self.judge_server.__exit__(None, None, None)
            self.judge_server = None

    # --- steps ------------------------------------------------------------------------------

    def data(self) -> dict[str, Any]:
        sizes = DemoSizes.tiny() if self.options.tiny else DemoSizes()
        paths = write_demo_data(self.inputs, sizes, seed=self.options.seed)
        if self.options.pool:
            paths["pool"] = self.options.pool
        if self.options.gold:  # two thirds for the loop, the rest held out for the final test
            paths["gold"], paths["test"] = _split_file(self.options.gold, self.inputs, keep=2 / 3)
        return {"files": {name: str(path) for name, path in paths.items()}}

    def ingest(self) -> dict[str, Any]:
        from synpref.data.ingest import IngestOptions, ingest
        from synpref.eval.registry import benchmark_prompts

        files = self.state.steps["data"]["files"]
        decontaminate = self._benchmarks_present()
        counts = {}
        for name, split in (("pool", "pool"), ("gold", "gold")):
            options = IngestOptions([files[name]], split=split, workers=1,
                                    decontaminate_against=decontaminate, bench_dir=self.options.bench_dir)
            run = ingest(self.workspace, options, benchmark_prompts=benchmark_prompts)
            counts[name] = run.sources[0].model_dump(include={"read", "kept", "duplicates", "contaminated", "quarantined"})
        return {"counts": counts}

    def attributes(self) -> dict[str, Any]:
        from synpref.annotate.runner import run_job

        summary = run_job(self.workspace, "attributes", self._judges(), limit=self.budget.attributes, split="pool")
        return {"pairs": summary.pairs, "done": summary.done, "failed": summary.failed, "judge": self._judge_engine()}

    def stage1(self) -> dict[str, Any]:
        """Iterations until every one is finished; while one waits for human labels the simulated
        annotators label the queue and export, as people would with `synpref label serve`."""
        from synpref.curate.stage1 import run_stage1
        from synpref.demo.humans import label_requests

        truth = Path(self.state.steps["data"]["files"]["truth"])
        humans = []
        while True:
            iterations = run_stage1(self.workspace, self._curate_config(), log=self.log)
            if iterations[-1].get("status") != "waiting" or not truth.exists() or self.options.pool:
                break
            humans.append(label_requests(self.workspace, truth, seed=self.options.seed))
            self.log(f"simulated annotators: {humans[-1]}")
        result: dict[str, Any] = {"iterations": iterations, "simulated_humans": humans}
        if truth.exists() and not self.options.pool:
            result["sources"] = stage1_sources(self.workspace, truth)
        result["held_out"] = self._held_out_per_iteration()
        return result

    def _held_out_per_iteration(self) -> list[float]:
        """Accuracy of each Stage 1 iteration's RM on the held-out pairs (features are cached)."""
        from synpref.curate.stage1 import finished_iterations
        from synpref.curate.training import feature_cache
        from synpref.rm.data import load_pairs
        from synpref.rm.metrics import pairwise_accuracy
        from synpref.rm.scorers import load_scorer

        test = load_pairs(self.state.steps["data"]["files"]["test"])
        config, found = self._curate_config(), []
        for iteration in finished_iterations(self.workspace):
            scorer = load_scorer(str(iteration / "model"), feature_cache=feature_cache(self.workspace.root),
                                 max_length=config.score_max_length, token_budget=config.token_budget)
            chosen, rejected = scorer.score_pairs(test)
            found.append(pairwise_accuracy(chosen, rejected))
        return found

    def stage2(self) -> dict[str, Any]:
        from synpref.curate.export import export_curated
        from synpref.curate.stage2 import run_stage2

        summary = run_stage2(self.workspace, self._curate_config(), log=self.log)
        exported = export_curated(self.workspace, "jsonl", self.workspace.root / "exports" / "curated")
        return {"summary": summary, "exports": {name: [str(path), count] for name, (path, count) in exported.items()}}

    def ablation(self) -> dict[str, Any]:
        """Raw vs curated vs curated + flipped (and gold, and a random control) on the held-out pairs."""
        from synpref.curate.ablation import run_ablation
        from synpref.rm.data import load_pairs

        files = self.state.steps["data"]["files"]
        results = run_ablation(self.workspace, self._curate_config(), held_out=load_pairs(files["test"]), log=self.log)
        result: dict[str, Any] = {"accuracy": results["accuracy"], "differences": results["differences"],
                                  "report": str(self.workspace.run_dir("ablation") / "report.md"),
                                  "loop_model": self.budget.loop_model}
        truth = Path(files["truth"])
        if truth.exists() and not self.options.pool:
            result["noise"] = noise_recovery(truth, self.workspace.decisions_file)
        return result

    def train(self) -> dict[str, Any]:
        # A process of its own: accelerate's state is process-wide, and the earlier steps set fp32.
        import subprocess
        import sys

        union = self.state.steps["stage2"]["exports"]["union"][0]
        output = self.workspace.run_dir("final-rm")
        steps = self.budget.final_steps
        command = [
            sys.executable, "-m", "synpref", "train", "--data", union, "--output", str(output),
            "--model", self.budget.final_model, "--gold", str(self.workspace.root), "--max-length", "256",
            "--batch-size", "8", "--learning-rate", "3e-5" if self.budget.final_model == "minilm-l6" else "1e-5",
            "--max-steps", str(steps), "--eval-every", str(max(steps // 4, 1)), "--save-every", str(max(steps // 4, 1)),
            "--no-tensorboard", "--mixed-precision", "no" if self.budget.final_model == "minilm-l6" else "bf16",
        ]  # fmt: skip
        if (output / "checkpoints").exists():
            command.append("--resume")
        subprocess.run(command, check=True)
        return {"model": str(output), "summary": json.loads((output / "training_summary.json").read_text())}

    def evaluate(self) -> dict[str, Any]:
        from synpref.eval.evaluate import evaluate, write_results
        from synpref.rm.data import load_pairs
        from synpref.rm.metrics import pairwise_accuracy
        from synpref.rm.scorers import load_scorer

        scorer = load_scorer(self.state.steps["train"]["model"], max_length=512)
        test = load_pairs(self.state.steps["data"]["files"]["test"])
        chosen, rejected = scorer.score_pairs(test)
        held_out = pairwise_accuracy(chosen, rejected)
        result: dict[str, Any] = {"held_out_accuracy": held_out, "held_out_pairs": len(test)}
        names = self._benchmarks_present()
        if names:
            run = evaluate(scorer, names, self.options.bench_dir)
            written = write_results(run, self.workspace.run_dir("eval"), self.state.steps["train"]["model"])
            result["benchmarks"] = {name: r.score for name, r in run.results.items()}
            result["files"] = [str(p) for p in written]
        return result

    def report(self) -> dict[str, Any]:
        from synpref.curate.report import write_report
        from synpref.demo.report import write_html_report

        curate_report = write_report(self.workspace)
        path = write_html_report(self.workspace, self.state.steps, curate_report)
        return {"report": str(path)}

    # --- helpers ----------------------------------------------------------------------------

    def _benchmarks_present(self) -> list[str]:
        from synpref.eval import benchmark_names

        if self.options.bench_dir is None:
            return []
        return [name for name in benchmark_names() if (self.options.bench_dir / name).is_dir()]

    def _judges(self):
        """The SmolLM2 judge: served by llama.cpp where the llamacpp extra is installed (every
        answer fits its schema), else generated in-process by transformers."""
        from synpref.annotate import llamacpp
        from synpref.annotate.config import JobConfig, JudgeConfig

        if not llamacpp.available():
            judge = JudgeConfig(name="smollm2", backend="local", model="smollm2-135m", max_tokens=160)
            return JobConfig(judges=[judge], examples=2, parse_retries=1)
        if self.judge_server is None:
            self.log("starting llama.cpp's server for the SmolLM2 judge (synpref judges serve-local)")
            self.judge_server = llamacpp.LocalJudgeServer(parallel=4).__enter__()
        judge = llamacpp.judge_config(self.judge_server.base_url, name="smollm2", concurrency=4)
        return JobConfig(judges=[judge], examples=2, parse_retries=1)

    def _judge_engine(self) -> str:
        return "llama.cpp server (openai backend)" if self.judge_server else "transformers (local backend)"

    def _curate_config(self):
        from synpref.curate.config import CurateConfig

        judges = self._judges().model_dump(mode="json")
        # Decides the pairs that carry a reference (the generated objective ones); gated like the LLM.
        judges["judges"].append({"name": "verifier", "backend": "verifier", "model": "rules", "api_key_env": None})
        return CurateConfig(
            judges=judges,
            rm={"model": self.budget.loop_model, "head_only": True, "max_length": 256 if self.options.pool else 64},
            stage1={"iterations": 3, "seed_size": self.budget.seed_size, "max_retrieved": self.budget.max_retrieved,
                    "human_budget": self.budget.human_budget, "human_annotations": 3},
            stage2={"margin": 0.1, "flip": "reversed_passes", "max_judged": self.budget.max_judged,
                    "limit": self.budget.stage2_limit, "scope": "all"},
            judge_gate={"calibration_pairs": self.budget.calibration_pairs},
        )


def _split_file(source: Path, directory: Path, keep: float) -> tuple[Path, Path]:
    """(first share, rest) of a JSONL file (gzip or not), as two JSONL files in `directory`."""
    import gzip

    opener = gzip.open if source.read_bytes()[:2] == b"\x1f\x8b" else open
    with opener(source, "rt") as file:
        lines = [line for line in file if line.strip()]
    cut = int(len(lines) * keep)
    first, rest = directory / "gold-loop.jsonl", directory / "gold-held-out.jsonl"
    first.write_text("".join(lines[:cut]))
    rest.write_text("".join(lines[cut:]))
    return first, rest


def stage1_sources(workspace, truth: Path) -> dict[str, dict[str, Any]]:
    """Per label source (verifier, LLM judges, human): labels Stage 1 added to silver and their
    agreement with the generator's truth (the added label is right iff it un-flips exactly the flips)."""
    from synpref.curate.stage1 import DECIDED, SOURCES, last_state

    flipped = {row["id"]: row["flipped"] for row in map(json.loads, truth.read_text().splitlines())}
    rows = [r for r in last_state(workspace)["rows"] if r["verdict"] in DECIDED and r["id"] in flipped]
    found = {}
    for source, suffix in SOURCES.items():
        mine = [r for r in rows if r["origin"].endswith(f" {suffix}") and r["origin"].startswith("iter-")]
        right = sum((r["verdict"] == "rejected") == flipped[r["id"]] for r in mine)
        found[source] = {"added": len(mine), "agree_with_truth": right / len(mine) if mine else None}
    return found


def noise_recovery(truth: Path, decisions: Path) -> dict[str, Any]:
    """Precision and recall of Stage 2 at flagging (discarding or flipping) the generator's flips."""
    import pyarrow.parquet as pq

    flipped = {row["id"] for row in map(json.loads, truth.read_text().splitlines()) if row["flipped"]}
    rows = pq.read_table(decisions, columns=["id", "action"]).to_pylist()
    flagged = {row["id"] for row in rows if row["action"] != "keep"}
    recycled = {row["id"] for row in rows if row["action"] == "flip"}
    decided_flipped = flipped & {row["id"] for row in rows}

    def share(numerator: int, denominator: int) -> float:
        return numerator / denominator if denominator else float("nan")

    return {
        "decided": len(rows),
        "flipped": len(decided_flipped),
        "flagged": len(flagged),
        "precision": share(len(flagged & decided_flipped), len(flagged)),
        "recall": share(len(flagged & decided_flipped), len(decided_flipped)),
        # the pairs Stage 2 turned round: how many really were flipped, and how many flips it turned round
        "recycled": len(recycled),
        "recycled_precision": share(len(recycled & decided_flipped), len(recycled)),
        "recycled_recall": share(len(recycled & decided_flipped), len(decided_flipped)),
    }


def check_options(options: DemoOptions) -> None:
    for name in ("pool", "gold"):
        path = getattr(options, name)
        if path is not None and not Path(path).exists():
            raise SynprefError(f"--{name} {path}: no such file")
