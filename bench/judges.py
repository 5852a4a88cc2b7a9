"""The SmolLM2 judge two ways, side by side in one run: llama.cpp's OpenAI-compatible server
(`synpref judges serve-local`, the `openai` backend, JSON-schema constrained answers) against
transformers' `generate` in-process (the `local` backend, the fallback without the llamacpp extra).

Both judge the same pairs with the same prompts: attributes for --pairs pool pairs (a seeded
sample of ../shared/data/pool.jsonl.gz) and the judge task on the first --gold gold pairs (chosen
= the majority of 3 human votes). Each engine starts from an empty workspace (no cache).
Reported per engine: valid answers, wall seconds and answers/s of each task, completion tokens
(from the answers' `usage` for the server, counted by the local backend), and agreement with
gold; then the server's throughput as a ratio of the local backend's.

    python bench/judges.py [--pairs 50] [--gold 50] [--parallel 4] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synpref.annotate import llamacpp  # noqa: E402
from synpref.annotate.config import JobConfig, JudgeConfig  # noqa: E402
from synpref.annotate.judge_agreement import agreement_report  # noqa: E402
from synpref.annotate.runner import run_job  # noqa: E402
from synpref.data.ingest import IngestOptions, ingest  # noqa: E402
from synpref.data.workspace import Workspace  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
JUDGE = {"name": "smollm2"}  # max_tokens: 448 for the server (closes any bounded answer), 160 locally (as the demo)
JOB = {"examples": 2, "parse_retries": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=50, help="pool pairs to write attributes for")
    parser.add_argument("--gold", type=int, default=50, help="gold pairs to judge")
    parser.add_argument("--parallel", type=int, default=4, help="server slots = requests in flight")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    if not llamacpp.available():
        sys.exit("the llamacpp extra is not installed: pip install 'synpref[llamacpp]'")
    with tempfile.TemporaryDirectory(prefix="synpref-bench-judges-") as workdir:
        files = write_inputs(Path(workdir), args)
        results = {}
        with llamacpp.LocalJudgeServer(parallel=args.parallel) as server:
            judge = llamacpp.judge_config(server.base_url, concurrency=args.parallel, **JUDGE)
            results["llama.cpp server"] = measure(Path(workdir) / "server", files, judge)
        results["transformers (local)"] = measure(Path(workdir) / "local", files, JudgeConfig(backend="local", max_tokens=160, **JUDGE))
    print_results(results, args)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


def write_inputs(workdir: Path, args) -> dict[str, Path]:
    with gzip.open(DATA / "pool.jsonl.gz", "rt") as file:
        pool = random.Random(0).sample(file.read().splitlines(), args.pairs)
    with gzip.open(DATA / "gold.jsonl.gz", "rt") as file:
        gold = file.read().splitlines()[: args.gold]
    files = {"pool": workdir / "pool.jsonl", "gold": workdir / "gold.jsonl"}
    files["pool"].write_text("\n".join(pool) + "\n")
    files["gold"].write_text("\n".join(gold) + "\n")
    return files


def measure(root: Path, files: dict[str, Path], judge: JudgeConfig) -> dict:
    workspace = Workspace.init(root, name="bench-judges")
    for split, path in files.items():
        ingest(workspace, IngestOptions([str(path)], split=split, workers=1))
    config = JobConfig(judges=[judge], **JOB)
    result = {}
    for task, split in (("attributes", "pool"), ("judge", "gold")):
        print(f"{judge.backend}: {task} on {split} ...", flush=True)
        started = time.perf_counter()
        summary = run_job(workspace, task, config, split=split)
        seconds = time.perf_counter() - started
        usage = next(iter(summary.usage.values()), {})
        result[task] = {
            "pairs": summary.pairs, "units": summary.units, "valid": summary.done, "invalid": summary.failed,
            "no_answer": summary.request_failed, "requests": usage.get("requests", 0),
            "completion_tokens": usage.get("completion_tokens", 0), "seconds": round(seconds, 1),
            "answers_per_second": round(summary.units / seconds, 3),
        }
    row = agreement_report(workspace)["judges"][judge.name]
    result["gold_agreement"] = row["gold_agreement"]
    result["gold_unsure_or_tie"] = row["gold_unsure_or_tie"]
    return result


def print_results(results: dict, args) -> None:
    print(f"\n{args.pairs} pool pairs (attributes), {args.gold} gold pairs (judge); server with {args.parallel} slots")
    header = f"{'engine':<22}{'task':<12}{'valid':>10}{'requests':>10}{'tokens':>9}{'seconds':>9}{'answers/s':>11}"
    print(header)
    for engine, result in results.items():
        for task in ("attributes", "judge"):
            r = result[task]
            print(f"{engine:<22}{task:<12}{r['valid']:>5}/{r['units']:<4}{r['requests']:>10}{r['completion_tokens']:>9}"
                  f"{r['seconds']:>9}{r['answers_per_second']:>11}")
        agreement = result["gold_agreement"]
        print(f"{engine:<22}gold agreement {'-' if agreement is None else f'{agreement:.3f}'}"
              f" (unsure or tie {result['gold_unsure_or_tie']})")
    server, local = results["llama.cpp server"], results["transformers (local)"]
    for task in ("attributes", "judge"):
        ratio = server[task]["answers_per_second"] / local[task]["answers_per_second"]
        print(f"{task}: server answers/s = {ratio:.2f}x the local backend's")


if __name__ == "__main__":
    main()
