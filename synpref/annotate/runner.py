"""Run an annotation task over a list of pairs: resumable, cached, bounded.

`annotate_pairs` is the engine. It takes the target pairs and the gold example pairs as
values, a directory for its logs, and the request cache, prompt templates and attributes to
use; `run_job` (`synpref annotate`) is the same engine over a workspace's split, logging
under WORKSPACE/annotate/<task>/, and a curation step (synpref/curate/judging.py) runs it
over the pairs it chose, logging in its own directory.

Every unit (one request a judge must answer) is skipped when the result log already holds
its final record for the same request; otherwise it is served from the request cache, or
sent. Each judge has its own pool of `concurrency` workers. Results are appended as they
complete, so a killed job resumes where it stopped and never pays twice.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from synpref.annotate.aggregate import aggregate_pair
from synpref.annotate.backends import Backend, ChatRequest, RequestFailed, create_backend
from synpref.annotate.cache import RequestCache
from synpref.annotate.config import JobConfig, JudgeConfig
from synpref.annotate.parsing import InvalidAnswer, parse_answer
from synpref.annotate.store import (
    JUDGMENTS,
    SAMPLES,
    ResultLog,
    latest,
    samples_log,
    task_dir,
    write_parquet,
)
from synpref.annotate.tasks import (
    TASKS,
    Task,
    TaskContext,
    Unit,
    load_guideline,
    prompt_environment,
)
from synpref.annotate.verifier_judge import VerifierBackend  # noqa: F401 (registers `backend: verifier`)
from synpref.data.models import Attributes, PreferencePair
from synpref.errors import SynprefError


@dataclass
class JobSummary:
    task: str
    pairs: int = 0
    units: int = 0
    already_done: int = 0  # finished by an earlier run, skipped
    done: int = 0  # finished now with a valid answer
    cached: int = 0  # of those finished now, answered without a request (cache)
    failed: int = 0  # invalid answers after every retry (recorded with the raw text)
    request_failed: int = 0  # no answer after every retry (tried again on the next run)
    judgments: int = 0  # pairs newly aggregated (judge task)
    usage: dict[str, dict[str, float]] = field(default_factory=dict)  # per model, requests sent now

    @property
    def cost(self) -> float:
        return sum(model["cost"] for model in self.usage.values())


def run_job(
    workspace,
    task_name: str,
    config: JobConfig,
    *,
    limit: Optional[int] = None,
    split: Optional[str] = None,
    pair_ids: Optional[set[str]] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> JobSummary:
    """Annotate up to `limit` pairs of `split` (only `pair_ids`, when given) with every judge,
    the workspace's gold pairs as examples, logging under WORKSPACE/annotate/<task>/.

    A weighted judge task weighs each judge by its agreement with the workspace's gold so
    far. `progress(finished, total)` is called after each unit. See the module docstring.
    """
    from synpref.annotate.judge_agreement import gold_agreement

    task = find_task(task_name)
    attributes = load_attributes(workspace.root)
    return annotate_pairs(
        task_name, config, select_pairs(workspace, task, config, attributes, split, limit, pair_ids),
        gold=[pair for _split, pair in workspace.iter_pairs("gold")],
        directory=task_dir(workspace.root, task_name),
        cache_dir=workspace.llm_cache_dir,
        prompts_root=workspace.root,
        attributes=attributes,
        measured_agreement=lambda: gold_agreement(workspace),
        progress=progress,
    )


def annotate_pairs(
    task_name: str,
    config: JobConfig,
    pairs: Iterable[PreferencePair],
    *,
    gold: list[PreferencePair],
    directory: Path,
    cache_dir: Path,
    prompts_root: Optional[Path] = None,
    attributes: Optional[dict[str, Attributes]] = None,
    measured_agreement: Optional[Callable[[], dict[str, float]]] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> JobSummary:
    """Annotate `pairs` with every judge; results are logged under their own ids in `directory`.

    `gold`: the human-labelled pairs the judge task shows as examples. `directory`: where the
    samples log (and, judge task, the judgments log) and their Parquet snapshots live; a rerun
    with the same directory resumes. `cache_dir`: the request cache. `prompts_root`: a
    workspace whose prompts/ overrides the package's templates. `attributes`: {pair id:
    Attributes} shown in the judge prompts. `measured_agreement()`: read once the units ran,
    {judge: agreement with gold}, which replaces a judge's configured weight when the job
    combines by weight. `progress(finished, total)` is called after each unit.
    """
    task = find_task(task_name)
    context = build_context(config, gold, attributes or {}, prompts_root)
    pairs = list({pair.id: pair for pair in pairs}.values())  # a pair listed twice is one piece of work
    units = [(unit, judge) for pair in pairs for judge in config.judges for unit in task.units(pair, judge, context)]
    summary = JobSummary(task=task_name, pairs=len(pairs), units=len(units))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    log = ResultLog(directory / SAMPLES)
    finished = {record_key(r): r for r in log.read() if r["final"]}
    pending = [(u, j) for u, j in units if unit_key(u, first_request(task, u, j, config)) not in finished]
    summary.already_done = len(units) - len(pending)
    asyncio.run(run_units(pending, task, config, RequestCache(cache_dir), log, summary, progress))
    write_parquet(latest(log.read(), "pair_id", "judge", "part"), directory / "samples.parquet")
    if task_name == "judge":
        summary.judgments = aggregate_finished(directory, units, task, config, measured_agreement)
    return summary


def find_task(task_name: str) -> Task:
    if task_name not in TASKS:
        raise SynprefError(f"unknown task {task_name!r}; known: {', '.join(TASKS)}")
    return TASKS[task_name]


def build_context(config: JobConfig, gold: list[PreferencePair], attributes: dict[str, Attributes], prompts_root) -> TaskContext:
    prompts = prompt_environment(prompts_root)
    return TaskContext(config=config, prompts=prompts, guideline=load_guideline(prompts), gold=list(gold), attributes=attributes)


def select_pairs(workspace, task: Task, config: JobConfig, attributes: dict[str, Attributes], split, limit, pair_ids) -> list:
    split = split or task.default_split
    pairs = []
    for _split, pair in workspace.iter_pairs(split):
        if pair_ids is not None and pair.id not in pair_ids:
            continue  # e.g. the pairs Stage 1 retrieved
        if task.name == "preverify" and config.objective_only:
            if pair.id not in attributes or attributes[pair.id].objectivity != "objective":
                continue  # pre-verification is for objective pairs (DESIGN.md Stage 1, step 1)
        pairs.append(pair)
        if limit is not None and len(pairs) >= limit:
            break
    return pairs


def load_attributes(workspace_root) -> dict[str, Attributes]:
    """The latest valid attributes written for each pair."""
    return {
        record["pair_id"]: Attributes.model_validate(record["answer"])
        for record in samples_log(workspace_root, "attributes").read()
        if record["ok"]
    }


def unit_key(unit: Unit, request: ChatRequest) -> tuple[str, str, str, str]:
    """A unit is the same work only if its first request is the same (an edited prompt is new work)."""
    return (unit.pair_id, unit.judge, unit.part, request.key())


def record_key(record: dict[str, Any]) -> tuple[str, str, str, str]:
    return (record["pair_id"], record["judge"], record["part"], record["request_key"])


def first_request(task: Task, unit: Unit, judge: JudgeConfig, config: JobConfig) -> ChatRequest:
    return build_request(task, unit, judge, config, attempt=0)


def build_request(task: Task, unit: Unit, judge: JudgeConfig, config: JobConfig, attempt: int) -> ChatRequest:
    """Retries of a malformed answer change seed and temperature: a repeat would be identical."""
    from synpref.annotate.backends import BACKENDS

    prefill = BACKENDS[judge.backend].supports_prefill if judge.backend in BACKENDS else False
    response_format = None
    if judge.structured_output == "json_schema":
        response_format = {"type": "json_schema", "json_schema": {"name": task.name, "schema": task.response_schema()}}
    elif judge.structured_output == "json_object":
        response_format = {"type": "json_object"}
    return ChatRequest(
        model=judge.model,
        messages=[{"role": role, "content": content} for role, content in unit.messages],
        temperature=judge.temperature if attempt == 0 else max(judge.temperature, config.retry_temperature),
        max_tokens=judge.max_tokens,
        seed=judge.seed + unit.sample + 1000 * attempt,
        response_format=response_format,
        prefill=task.prefill if prefill else None,
        stop=list(task.prefill_stop) if prefill else None,
    )


async def run_units(pending, task, config, cache, log, summary, progress) -> None:
    limits: dict = {}
    backends = {judge.name: create_backend(judge, limits) for judge in config.judges}
    queues: dict[str, deque] = defaultdict(deque)
    for unit, judge in pending:
        queues[judge.name].append((unit, judge))
    finished = 0

    async def worker(queue: deque) -> None:
        nonlocal finished
        while queue:
            unit, judge = queue.popleft()
            record = await run_unit(unit, judge, backends[judge.name], task, config, cache, summary)
            log.append(record)
            finished += 1
            if progress:
                progress(finished, len(pending))

    try:
        await asyncio.gather(*(
            worker(queues[judge.name]) for judge in config.judges for _ in range(judge.concurrency)
        ))
    finally:
        for backend in backends.values():
            await backend.close()


async def run_unit(unit: Unit, judge: JudgeConfig, backend: Backend, task: Task, config: JobConfig, cache, summary) -> dict:
    """Ask until the answer validates (at most 1 + parse_retries times); return the record."""
    record = {
        "pair_id": unit.pair_id, "judge": unit.judge, "part": unit.part, "sample": unit.sample,
        "shown_order": list(unit.shown_order) if unit.shown_order else None,
        "request_key": first_request(task, unit, judge, config).key(),
        "created_at": datetime.now(timezone.utc).isoformat(),
        "ok": False, "final": True, "answer": None, "verdict": None, "error": None, "raw": None,
        "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0,  # paid by this record's requests
    }
    from_cache = True
    for attempt in range(config.parse_retries + 1):
        request = build_request(task, unit, judge, config, attempt)
        completion = cache.get(request)
        if completion is None:
            from_cache = False
            try:
                completion = await backend.complete(request)
            except RequestFailed as failure:
                summary.request_failed += 1
                return {**record, "final": False, "error": str(failure)}
            cache.put(request, completion)
            account(summary, record, judge, completion)
        try:
            answer = parse_answer(completion.text, task.schema)
        except InvalidAnswer as invalid:
            record.update(error=str(invalid), raw=completion.text)
            continue
        summary.done += 1
        summary.cached += from_cache
        return {**record, "ok": True, "error": None, "raw": None, "answer": answer.model_dump(mode="json"), **task.result_fields(unit, answer)}
    summary.failed += 1
    return record


def account(summary: JobSummary, record: dict, judge: JudgeConfig, completion) -> None:
    """Add a paid request's tokens and cost to the run's per-model usage and to its record."""
    cost = completion.prompt_tokens * judge.price_input + completion.completion_tokens * judge.price_output
    usage = summary.usage.setdefault(judge.model, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0})
    usage["requests"] += 1
    for totals in (usage, record):
        totals["prompt_tokens"] += completion.prompt_tokens
        totals["completion_tokens"] += completion.completion_tokens
        totals["cost"] += cost


def aggregate_finished(directory: Path, units, task: Task, config: JobConfig, measured_agreement=None) -> int:
    """Append a `Judgment` for each pair whose units are all final and not yet aggregated."""
    records = {record_key(r): r for r in ResultLog(directory / SAMPLES).read() if r["final"]}
    by_pair: dict[str, list] = defaultdict(list)
    for unit, judge in units:
        by_pair[unit.pair_id].append(records.get(unit_key(unit, first_request(task, unit, judge, config))))
    log = ResultLog(directory / JUDGMENTS)
    done = {(r["pair_id"], r["signature"]) for r in log.read()}
    weights = None
    if config.combine == "weighted":
        measured = measured_agreement() if measured_agreement else {}
        weights = {j.name: measured.get(j.name, j.weight) for j in config.judges}
    added = 0
    for pair_id, pair_records in by_pair.items():
        if any(r is None for r in pair_records):
            continue  # a request failed this time; the next run completes the pair
        signature = ",".join(sorted(r["request_key"][:16] for r in pair_records))
        if (pair_id, signature) in done:
            continue
        votes: dict[str, list[str]] = {judge.name: [] for judge in config.judges}
        for record in pair_records:
            votes[record["judge"]].append(record["verdict"] if record["ok"] else "unsure")
        judgment = aggregate_pair(pair_id, votes, weights, config.min_agreement)
        log.append({
            "pair_id": pair_id, "signature": signature, "verdict": judgment.verdict,
            "agreement": judgment.confidence, "votes": votes, "judgment": judgment.model_dump(mode="json"),
        })
        added += 1
    write_parquet(latest(log.read(), "pair_id"), directory / "judgments.parquet")
    return added
