"""The `synpref` command line. Each command is a thin layer over the Python API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from synpref.errors import SynprefError

app = typer.Typer(
    help="Curate preference data with humans and LLMs; train, evaluate and serve reward models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

WorkspaceArg = Annotated[Path, typer.Option("--workspace", "-w", help="workspace directory")]


def main() -> None:
    try:
        app()
    except SynprefError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


@app.command()
def init(
    directory: Path,
    name: Annotated[Optional[str], typer.Option(help="project name (default: directory name)")] = None,
) -> None:
    """Create a workspace with a default, validated synpref.yaml."""
    from synpref.data.workspace import Workspace

    workspace = Workspace.init(directory, name)
    console.print(f"workspace {workspace.config.name!r} created in {directory}")


@app.command()
def ingest(
    sources: Annotated[list[str], typer.Argument(help="files (.jsonl .json .csv .parquet, gzip or not), saved datasets, or hf://org/name[:split]")],
    workspace: WorkspaceArg,
    format: Annotated[Optional[str], typer.Option("--format", "-f", help="input format (default: detected)")] = None,
    map: Annotated[Optional[list[str]], typer.Option("--map", help="FIELD=COLUMN: read FIELD from COLUMN")] = None,
    split: Annotated[Optional[str], typer.Option(help="split of the new pairs (default: the record's `split`, else pool)")] = None,
    source_name: Annotated[Optional[str], typer.Option(help="`source` of pairs whose records have none (default: file name)")] = None,
    decontaminate_against: Annotated[Optional[list[str]], typer.Option(help="benchmark file, or registered benchmark name, whose first-turn prompts must not leak into training data")] = None,
    bench_dir: Annotated[Optional[Path], typer.Option(help="DIR with DIR/<benchmark>/ files, for benchmark names in --decontaminate-against")] = None,
    workers: Annotated[int, typer.Option(help="worker processes (default: one per core)")] = 0,
    set: Annotated[Optional[list[str]], typer.Option("--set", help="override a synpref.yaml value, e.g. prepare.max_message_chars=50000")] = None,
) -> None:
    """Read preference data into the workspace: validate, quarantine, deduplicate, decontaminate."""
    from synpref.data.ingest import IngestOptions
    from synpref.data.ingest import ingest as run_ingest
    from synpref.data.workspace import Workspace, apply_overrides
    from synpref.eval.registry import benchmark_prompts

    ws = Workspace(workspace)
    config = apply_overrides(ws.config, set or []).prepare
    options = IngestOptions(
        sources=sources,
        format=format,
        mapping=_mapping(map or []),
        split=split,
        source_name=source_name,
        decontaminate_against=decontaminate_against or [],
        bench_dir=bench_dir,
    )
    if workers:
        options.workers = workers
    try:
        run = run_ingest(ws, options, config=config, console=console, benchmark_prompts=benchmark_prompts)
    except KeyboardInterrupt:
        console.print("interrupted: committed work is kept; run the same command again to resume")
        raise typer.Exit(130) from None
    _print_summary(run)


def _mapping(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for item in pairs:
        target, sep, column = item.partition("=")
        if not sep or not target or not column:
            raise SynprefError(f"--map {item!r}: expected FIELD=COLUMN")
        mapping[target] = column
    return mapping


def _print_summary(run) -> None:
    table = Table(title=f"ingest {run.run_id}")
    columns = ["read", "kept", "duplicates", "contaminated", "quarantined"]
    table.add_column("source")
    table.add_column("format")
    for column in columns:
        table.add_column(column, justify="right")
    for counts in run.sources:
        table.add_row(counts.spec, counts.format, *(f"{getattr(counts, c):,}" for c in columns))
    totals = [sum(getattr(s, c) for s in run.sources) for c in columns]
    table.add_row("total", "", *(f"{n:,}" for n in totals), style="bold")
    Console().print(table)
    for name, info in run.decontamination.items():
        hits = sum(s.contaminated_by.get(name, 0) for s in run.sources)
        Console().print(
            f"decontamination against {name}: {info['prompts']:,} prompts "
            f"({info['shorter_than_n']:,} shorter than the n-gram), {hits:,} pairs dropped"
        )
    if totals[4] or totals[3]:
        Console().print("quarantined and contaminated records with their reasons: quarantine/*.jsonl")


@app.command()
def stats(
    directory: Annotated[Path, typer.Argument(help="workspace directory")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Counts by source, split, user turns and length."""
    from synpref.data.stats import workspace_stats
    from synpref.data.workspace import Workspace

    result = workspace_stats(Workspace(directory))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    out = Console()
    out.print(f"{result['pairs']:,} pairs, {result['quarantined']:,} quarantined records")
    for key, title in [
        ("by_source", "source"),
        ("by_split", "split"),
        ("by_user_turns", "user turns"),
        ("by_length_chars", "length (characters)"),
    ]:
        table = Table(title=f"pairs by {title}")
        table.add_column(title)
        table.add_column("pairs", justify="right")
        table.add_column("share", justify="right")
        for label, count in result[key].items():
            table.add_row(label, f"{count:,}", f"{count / max(result['pairs'], 1):.1%}")
        out.print(table)


@app.command()
def export(
    directory: Annotated[Path, typer.Argument(help="workspace directory")],
    format: Annotated[str, typer.Option("--format", "-f", help="trl | jsonl | parquet | hf-dataset")] = "trl",
    output: Annotated[Optional[Path], typer.Option(help="output file or directory (default: DIR/exports/...)")] = None,
    split: Annotated[Optional[str], typer.Option(help="only this split")] = None,
) -> None:
    """Write the workspace's pairs for trainers and other tools."""
    from synpref.data.export import export as run_export
    from synpref.data.workspace import Workspace

    path, count = run_export(Workspace(directory), format, output, split)
    console.print(f"wrote {count:,} pairs to {path}")


@app.command()
def sample(
    output: Annotated[Path, typer.Argument(help="JSONL file to write")],
    pairs: Annotated[int, typer.Option(help="number of distinct pairs")] = 2000,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Write a small synthetic preference dataset (arithmetic and open questions, with noise)."""
    from synpref.data.sample import write_sample

    written = write_sample(output, pairs=pairs, seed=seed)
    console.print(f"wrote {written:,} records to {output}")


def _train_command() -> None:
    """Register `synpref train` with one option per `TrainConfig` field (help lives there)."""
    import inspect

    from synpref.rm.config import config_fields

    parameters = [
        inspect.Parameter(
            "config", inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[Optional[Path], typer.Option("--config", help="YAML file of options (command line wins)")],
        )
    ]
    for name, kind, _default, help_text in config_fields():
        flag = "--" + name.replace("_", "-")
        decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
        option_type = Optional[bool] if kind is bool else Optional[_cli_type(kind)]
        parameters.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[option_type, typer.Option(*decls, help=f"{help_text} [default: {_default}]")],
        ))

    def train(**options) -> None:
        """Train a Bradley-Terry reward model (options from --config YAML, overridden by flags)."""
        from synpref.rm.config import load_train_config
        from synpref.rm.trainer import train as run_train

        config_file = options.pop("config")
        summary = run_train(load_train_config(config_file, options))
        console.print(f"model written to {options.get('output') or 'the output directory'}: {json.dumps(summary)}")

    train.__signature__ = inspect.Signature(parameters)
    app.command(name="train")(train)


def _cli_type(kind):
    """The plain type typer should parse for a config field (Optional[x] -> x, Literal -> str)."""
    from typing import Literal, get_args, get_origin

    if get_origin(kind) is Literal:
        return str
    if get_origin(kind) is not None:
        return next(a for a in get_args(kind) if a is not type(None))
    return kind


_train_command()


annotate_app = typer.Typer(help="LLM annotation: attributes, pairwise judging, pre-verification.", no_args_is_help=True)
judges_app = typer.Typer(help="Reports on the LLM judges.", no_args_is_help=True)
app.add_typer(annotate_app, name="annotate")
app.add_typer(judges_app, name="judges")
JudgesOption = Annotated[Path, typer.Option("--judges", help="YAML file listing the judges (see synpref/annotate/config.py)")]
LimitOption = Annotated[Optional[int], typer.Option(help="annotate at most this many pairs")]
SplitOption = Annotated[Optional[str], typer.Option(help="only pairs of this split (judge default: pool)")]


def _annotate(task: str, workspace: Path, judges: Path, limit: Optional[int], split: Optional[str]) -> None:
    from rich.progress import Progress

    from synpref.annotate.config import load_job_config
    from synpref.annotate.runner import run_job
    from synpref.data.workspace import Workspace

    ws, config = Workspace(workspace), load_job_config(judges)
    try:
        with Progress(console=console, transient=True) as progress:
            bar = progress.add_task(f"annotate {task}", total=None)
            summary = run_job(ws, task, config, limit=limit, split=split,
                              progress=lambda done, total: progress.update(bar, completed=done, total=total))
    except KeyboardInterrupt:
        console.print("interrupted: finished requests are kept; run the same command again to resume")
        raise typer.Exit(130) from None
    table = Table(title=f"annotate {task}: {summary.pairs:,} pairs, {summary.units:,} requests")
    for column in ("done", "cached", "failed", "request failed", "already done", "cost"):
        table.add_column(column, justify="right")
    table.add_row(*(f"{n:,}" for n in (summary.done, summary.cached, summary.failed, summary.request_failed, summary.already_done)), f"{summary.cost:.4f}")
    Console().print(table)
    for model, usage in summary.usage.items():
        Console().print(f"{model}: {usage['requests']:,} requests, {usage['prompt_tokens']:,} prompt + {usage['completion_tokens']:,} completion tokens, cost {usage['cost']:.4f}")
    if summary.request_failed:
        console.print(f"{summary.request_failed} requests got no answer after every retry; run the same command again to retry them")


@annotate_app.command("attributes")
def annotate_attributes(workspace: WorkspaceArg, judges: JudgesOption, limit: LimitOption = None, split: SplitOption = None) -> None:
    """Write the 5-tuple of attributes (task category, objectivity, ...) for each pair."""
    _annotate("attributes", workspace, judges, limit, split)


@annotate_app.command("judge")
def annotate_judge(workspace: WorkspaceArg, judges: JudgesOption, limit: LimitOption = None, split: SplitOption = None) -> None:
    """Judge which response of each pair is better; combine the judges into one Judgment."""
    _annotate("judge", workspace, judges, limit, split)


@annotate_app.command("preverify")
def annotate_preverify(workspace: WorkspaceArg, judges: JudgesOption, limit: LimitOption = None, split: SplitOption = None) -> None:
    """Judge each response of objective pairs alone: correct or incorrect, with a reason."""
    _annotate("preverify", workspace, judges, limit, split)


@judges_app.command("agreement")
def judges_agreement(
    workspace: WorkspaceArg,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Each judge's agreement with human gold labels and with the others, and its position bias."""
    from synpref.annotate.agreement import agreement_report
    from synpref.data.workspace import Workspace

    report = agreement_report(Workspace(workspace))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title="judges")
    for column in ("judge", "pairs", "gold pairs", "gold agreement", "gold tie/unsure", "answers", "picks Candidate 1"):
        table.add_column(column, justify="right")
    for name, row in report["judges"].items():
        table.add_row(name, *(_cell(row[k]) for k in ("pairs", "gold_pairs", "gold_agreement", "gold_unsure_or_tie", "answers", "picks_candidate_1")))
    Console().print(table)
    for name, row in report["between_judges"].items():
        Console().print(f"{name}: {_cell(row['agreement'])} on {row['pairs']:,} pairs")
    ensemble = report["ensemble"]
    Console().print(f"ensemble: gold agreement {_cell(ensemble['gold_agreement'])} on {ensemble['gold_pairs']:,} gold pairs")


def _cell(value) -> str:
    return "-" if value is None else f"{value:.1%}" if isinstance(value, float) else f"{value:,}"


def _local_scorer(model: str, **options):
    """The scorer for a model directory: head-only encoder models score from cached features."""
    from synpref.rm.head import HeadScorer
    from synpref.rm.models import cache_dir, head_kind
    from synpref.rm.scorer import RewardScorer

    if head_kind(model) == "encoder":
        return HeadScorer(model, cache_dir() / "features", show_progress=options.get("show_progress"))
    return RewardScorer.from_pretrained(model, **options)


def _score_dtype(bf16: bool):
    """torch.bfloat16 for --bf16, else None (the model's own dtype)."""
    if not bf16:
        return None
    import torch

    return torch.bfloat16


@app.command("eval")
def eval_command(
    model: Annotated[str, typer.Option(help="reward model: an embedded name (smollm2-135m, minilm-l6), a Hugging Face id or a path")],
    data_dir: Annotated[Path, typer.Option(help="DIR whose DIR/<benchmark>/ folders hold each benchmark's files")],
    output: Annotated[Path, typer.Option(help="folder for results.json, results.md and plots")],
    bench: Annotated[Optional[list[str]], typer.Option(help="benchmark name, repeatable; default all")] = None,
    max_length: Annotated[int, typer.Option(help="longest input in tokens; longer ones are cut")] = 4096,
    token_budget: Annotated[Optional[int], typer.Option(help="tokens per scoring batch, padding included (default: 16384 on a GPU, 1024 on CPU)")] = None,
    protocol: Annotated[str, typer.Option(help="for a server URL as --model: synpref (/v1/score), openrlhf (/get_reward), vllm or sglang (/classify)")] = "synpref",
    tokenizer: Annotated[Optional[str], typer.Option(help="for --protocol openrlhf, vllm or sglang: the model's tokenizer, to format inputs")] = None,
    download: Annotated[bool, typer.Option(help="fetch missing benchmarks hosted on the Hugging Face Hub into --data-dir")] = False,
    bf16: Annotated[bool, typer.Option(help="score in bfloat16 (faster on GPUs and on CPUs with bf16 units; scores move by ~1e-2)")] = False,
) -> None:
    """Score a reward model on the reward-model benchmarks, each by its authors' rules.

    --model may be a server URL (http://host:port); its API key is read from SYNPREF_API_KEY.
    """
    import os

    from synpref.eval.evaluate import evaluate, write_results

    if model.startswith(("http://", "https://")):
        from synpref.serve.remote import RemoteScorer

        scorer = RemoteScorer(model, protocol, tokenizer=tokenizer, api_key=os.environ.get("SYNPREF_API_KEY"))
    else:
        scorer = _local_scorer(model, max_length=max_length, token_budget=token_budget, dtype=_score_dtype(bf16), show_progress=True)
    run = evaluate(scorer, bench or ["all"], data_dir, console=console, download=download)
    written = write_results(run, output, model)
    Console().print((output / "results.md").read_text().split("\n\n## ")[0], highlight=False)
    console.print("wrote " + ", ".join(str(path) for path in written))


label_app = typer.Typer(help="The human annotation app: gold labelling under a written protocol.", no_args_is_help=True)
app.add_typer(label_app, name="label")
DbOption = Annotated[Optional[str], typer.Option("--db", help="SQLAlchemy URL (default: sqlite:///WORKSPACE/annotations.db), e.g. postgresql+psycopg://user@host/db")]


@label_app.command("serve")
def label_serve(
    workspace: WorkspaceArg,
    db: DbOption = None,
    host: Annotated[str, typer.Option(help="address to listen on (loopback by default; put HTTPS in front before opening it up)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    https_only: Annotated[bool, typer.Option("--https-only", help="send the session cookie over HTTPS only (behind a TLS proxy)")] = False,
) -> None:
    """Run the annotation web app."""
    import uvicorn

    from synpref.label.app import create_app

    console.print(f"synpref label on http://{host}:{port} (Ctrl-C to stop)")
    uvicorn.run(create_app(workspace, db, https_only=https_only), host=host, port=port, log_level="warning")


@label_app.command("add-user")
def label_add_user(
    name: Annotated[str, typer.Argument(help="login name")],
    workspace: WorkspaceArg,
    role: Annotated[str, typer.Option(help="admin | annotator")] = "annotator",
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="at least 8 characters (prompted when left out)")] = "",
    db: DbOption = None,
) -> None:
    """Create a user of the annotation app."""
    from synpref.data.workspace import Workspace
    from synpref.label.db import default_url, open_database
    from synpref.label.users import add_user

    ws = Workspace(workspace)
    add_user(open_database(db or default_url(ws.root)), name, password, role)
    console.print(f"added {role} {name!r}")


@label_app.command("export")
def label_export(
    workspace: WorkspaceArg,
    db: DbOption = None,
    output: Annotated[Optional[Path], typer.Option(help="JSONL file to write (default: WORKSPACE/label/gold-<time>.jsonl)")] = None,
) -> None:
    """Write the gold set (JSONL, original orientation) and add decided pairs to the workspace."""
    from synpref.data.workspace import Workspace
    from synpref.label.db import default_url, open_database
    from synpref.label.export import export_gold

    ws = Workspace(workspace)
    with open_database(db or default_url(ws.root))() as session:
        summary = export_gold(session, ws, output)
    print(json.dumps(summary, indent=2))


def _serve_help(field: str) -> str:
    from synpref.serve.config import ServeConfig

    return ServeConfig.model_fields[field].description


@app.command()
def serve(
    model: Annotated[str, typer.Option(help="reward model: an embedded name, a Hugging Face id or a path")],
    host: Annotated[str, typer.Option(help="address to bind; loopback unless you mean to expose it")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    api_key: Annotated[Optional[list[str]], typer.Option(help="accepted Bearer key, repeatable; also SYNPREF_API_KEYS=k1,k2")] = None,
    max_batch_tokens: Annotated[int, typer.Option(help=_serve_help("max_batch_tokens"))] = 16384,
    model_batch_tokens: Annotated[Optional[int], typer.Option(help=_serve_help("model_batch_tokens"))] = None,
    max_wait_ms: Annotated[float, typer.Option(help=_serve_help("max_wait_ms"))] = 5.0,
    workers: Annotated[int, typer.Option(help=_serve_help("workers"))] = 1,
    model_threads: Annotated[Optional[int], typer.Option(help=_serve_help("model_threads"))] = None,
    max_queue: Annotated[int, typer.Option(help=_serve_help("max_queue"))] = 2048,
    max_items: Annotated[int, typer.Option(help=_serve_help("max_items"))] = 512,
    max_body_bytes: Annotated[int, typer.Option(help=_serve_help("max_body_bytes"))] = 8 * 2**20,
    request_timeout_s: Annotated[float, typer.Option(help=_serve_help("request_timeout_s"))] = 60.0,
    read_timeout_s: Annotated[float, typer.Option(help=_serve_help("read_timeout_s"))] = 10.0,
    max_length: Annotated[int, typer.Option(help="longest input in tokens; longer ones get 422 unless the request asks to truncate")] = 4096,
    keyless_client: Annotated[Optional[list[str]], typer.Option(help=_serve_help("keyless_clients") + "; repeatable")] = None,
    bf16: Annotated[bool, typer.Option(help="score in bfloat16 (faster on CPUs with bf16 units and on GPUs)")] = False,
    reward_spec: Annotated[Optional[Path], typer.Option(help=_serve_help("reward_spec"))] = None,
    log_dir: Annotated[Optional[Path], typer.Option(help=_serve_help("log_dir"))] = None,
) -> None:
    """Serve a reward model over HTTP for RLHF trainers (OpenRLHF's /get_reward included)."""
    import os

    from synpref.rm.scorer import RewardScorer
    from synpref.serve.app import create_app
    from synpref.serve.config import ServeConfig
    from synpref.serve.server import run, run_workers

    keys = list(api_key or []) + [k for k in os.environ.get("SYNPREF_API_KEYS", "").split(",") if k]
    config = ServeConfig(
        max_batch_tokens=max_batch_tokens, model_batch_tokens=model_batch_tokens, max_wait_ms=max_wait_ms,
        max_queue=max_queue, max_items=max_items, max_body_bytes=max_body_bytes,
        request_timeout_s=request_timeout_s, read_timeout_s=read_timeout_s, api_keys=keys,
        keyless_clients=list(keyless_client or []), reward_spec=reward_spec, log_dir=log_dir,
        workers=workers, model_threads=model_threads,
    )  # fmt: skip
    spec = _reward_spec_logged(config)  # before loading the model: a bad spec fails fast
    # Tokenization is batched on a thread of each HTTP process; Rust threads on top would fight the model for cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    scorer = RewardScorer.from_pretrained(
        model, max_length=max_length, token_budget=config.model_batch_tokens, dtype=_score_dtype(bf16), show_progress=False
    )
    threads = _model_threads(scorer, config)
    mode = f"{workers} HTTP worker process(es) + model owner" if workers else "one process"
    console.print(f"serving {model} on http://{host}:{port} ({'API keys required' if keys else 'no API keys'}; "
                  f"{mode}; {threads or 'GPU'} model threads)")  # fmt: skip
    if workers:
        run_workers(scorer, config, host=host, port=port, workers=workers, model_name=model)
    else:
        run(create_app(scorer, config, model_name=model, reward_spec=spec), host=host, port=port, read_timeout_s=config.read_timeout_s)


def _model_threads(scorer, config) -> int | None:
    """Set torch's CPU threads for the model: with the HTTP side busy on a core, a model thread per
    core stalls at every parallel region waiting for the preempted one (measured: 5x slower)."""
    import os

    import torch

    if next(scorer.model.parameters()).device.type != "cpu":
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = config.model_threads or max(1, cores - max(config.workers, 1))
    torch.set_num_threads(threads)
    return threads


def _reward_spec_logged(config):
    """Set up logging (to stderr, and to LOG_DIR/serve.log); save the reward spec beside it."""
    import logging

    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if config.log_dir is not None:
        config.log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(config.log_dir / "serve.log"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", handlers=handlers)
    if config.reward_spec is None:
        return None
    from synpref.reward.spec import load_spec, save_spec

    spec = load_spec(config.reward_spec)
    log = logging.getLogger("synpref.serve")
    if config.log_dir is not None:
        log.info("reward spec %s (sha256 %s) saved as %s", config.reward_spec, spec.digest(), save_spec(spec, config.log_dir))
    else:  # no folder to save it in: the resolved spec goes into the log itself
        log.info("reward spec %s (sha256 %s):\n%s", config.reward_spec, spec.digest(), spec.to_yaml())
    return spec


reward_app = typer.Typer(help="Hybrid rewards: rule-based verifiers beside the reward model.", no_args_is_help=True)
app.add_typer(reward_app, name="reward")


@reward_app.command("score")
def reward_score(
    spec: Annotated[Path, typer.Option(help="YAML reward spec (synpref/reward/spec.py)")],
    data: Annotated[Path, typer.Option(help="JSONL of prompt, response, reference (optional: task; pair + preferred)")],
    model: Annotated[str, typer.Option(help="reward model: an embedded name (smollm2-135m, minilm-l6), a Hugging Face id or a path")],
    output: Annotated[Path, typer.Option(help="folder for components.jsonl, report.md, rm_by_outcome.png, reward-spec.yaml")],
    max_length: Annotated[int, typer.Option(help="longest input in tokens; longer ones are cut")] = 4096,
) -> None:
    """Reward components per item, and how often the RM and the verifier disagree."""
    from synpref.reward.offline import score_file
    from synpref.reward.spec import load_spec

    reward_spec = load_spec(spec)
    scorer = _local_scorer(model, max_length=max_length, show_progress=True)
    score_file(data, reward_spec, scorer, output)
    Console().print((output / "report.md").read_text(), highlight=False)
    console.print(f"wrote {output}/components.jsonl, report.md, rm_by_outcome.png, reward-spec.yaml")


curate_app = typer.Typer(help="The curation loop: Stage 1 iterations, Stage 2 filtering, report, export.", no_args_is_help=True)
app.add_typer(curate_app, name="curate")
CurateConfigOption = Annotated[Optional[Path], typer.Option("--config", help="curation YAML (default: WORKSPACE/curate.yaml if present; see synpref/curate/config.py)")]
CurateSetOption = Annotated[Optional[list[str]], typer.Option("--set", help="override a config value, e.g. stage2.margin=0.2 or rm.max_steps=50")]
ExecutorOption = Annotated[Optional[str], typer.Option(help="local (default) or ray (RAY_ADDRESS picks a cluster; unset: a local runtime)")]


def _curate_config(workspace: Path, config: Optional[Path], overrides: Optional[list[str]], executor: Optional[str]):
    from synpref.curate.config import load_curate_config
    from synpref.data.workspace import Workspace

    extra = [f"executor={executor}"] if executor else []
    return Workspace(workspace), load_curate_config(workspace, config, list(overrides or []) + extra)


@curate_app.command("stage1")
def curate_stage1(
    workspace: WorkspaceArg,
    iterations: Annotated[Optional[int], typer.Option(help="iterations to reach (default: stage1.iterations); finished ones are skipped")] = None,
    config: CurateConfigOption = None, set: CurateSetOption = None, executor: ExecutorOption = None,
) -> None:
    """Train on silver, measure gold, retrieve similar pool pairs, LLM-judge them; N times, resumable."""
    from synpref.curate.stage1 import run_stage1

    ws, curate_config = _curate_config(workspace, config, set, executor)
    for summary in run_stage1(ws, curate_config, iterations=iterations, log=console.print):
        console.print(json.dumps(summary))


@curate_app.command("stage2")
def curate_stage2(workspace: WorkspaceArg, config: CurateConfigOption = None, set: CurateSetOption = None, executor: ExecutorOption = None) -> None:
    """Gold RM + best RM over the pool, LLM judges below the band; keep/discard/flip with reasons."""
    from synpref.curate.stage2 import run_stage2

    ws, curate_config = _curate_config(workspace, config, set, executor)
    console.print(json.dumps(run_stage2(ws, curate_config, log=console.print)))


@curate_app.command("ablation")
def curate_ablation(
    workspace: WorkspaceArg,
    bench_dir: Annotated[Optional[Path], typer.Option(help="DIR/<benchmark>/ files: also score every condition's model (fold 1) on them")] = None,
    folds: Annotated[int, typer.Option(help="gold is split into this many parts by a seeded hash; each is held out once")] = 3,
    seed: Annotated[int, typer.Option(help="seed of the gold split, the random-subset control and the bootstrap")] = 0,
    config: CurateConfigOption = None, set: CurateSetOption = None, executor: ExecutorOption = None,
) -> None:
    """Raw pool vs curated vs curated + flipped vs gold vs a random subset, on held-out gold with 95% intervals."""
    from synpref.curate.ablation import run_ablation

    ws, curate_config = _curate_config(workspace, config, set, executor)
    try:
        results = run_ablation(ws, curate_config, folds=folds, seed=seed, bench_dir=bench_dir, log=console.print)
    except KeyboardInterrupt:
        console.print("interrupted: finished steps are kept; run the same command again to continue")
        raise typer.Exit(130) from None
    for name, row in results["accuracy"].items():
        console.print(f"{name:>14}: {row['accuracy']:.4f}  [{row['low']:.4f}, {row['high']:.4f}]")
    console.print(f"report: {ws.root / 'runs' / 'ablation' / 'report.html'} ({results['seconds']:.0f} s)")


@curate_app.command("report")
def curate_report(workspace: WorkspaceArg, output: Annotated[Optional[Path], typer.Option(help="folder (default: WORKSPACE/runs/curate-report)")] = None) -> None:
    """Markdown/HTML report with PNG plots: gold accuracy per iteration, kept/discarded/flipped, judge agreement."""
    from synpref.curate.report import write_report
    from synpref.data.workspace import Workspace

    console.print(f"report written to {write_report(Workspace(workspace), output)}")


@curate_app.command("export")
def curate_export(
    workspace: WorkspaceArg,
    format: Annotated[str, typer.Option("--format", "-f", help="trl | jsonl | parquet | hf-dataset")] = "trl",
    output: Annotated[Optional[Path], typer.Option(help="folder for curated/flipped/union (default: WORKSPACE/exports/curated)")] = None,
) -> None:
    """The curated set, the flipped set and their union, with provenance columns (origin, reason)."""
    from synpref.curate.export import export_curated
    from synpref.data.workspace import Workspace

    ws = Workspace(workspace)
    for name, (path, count) in export_curated(ws, format, output or ws.root / "exports" / "curated").items():
        console.print(f"{name}: {count:,} pairs -> {path}")


@app.command()
def demo(
    workspace: Annotated[Path, typer.Option("--workspace", "-w", help="workspace directory (created if missing)")] = Path("demo-workspace"),
    tiny: Annotated[bool, typer.Option(help="a minute-scale run with tiny data and models (CI's end-to-end test)")] = False,
    pool: Annotated[Optional[Path], typer.Option(help="real pool (any ingest format) instead of the generated one")] = None,
    gold: Annotated[Optional[Path], typer.Option(help="real human-labelled gold set (shared-data JSONL schema)")] = None,
    bench_dir: Annotated[Optional[Path], typer.Option(help="DIR/<benchmark>/ files to evaluate the final model on")] = None,
    seed: Annotated[int, typer.Option(help="seed of the generated data (which pairs, which labels flipped)")] = 0,
) -> None:
    """Run the whole loop offline: prepare, attributes, Stage 1, Stage 2, train, evaluate, report."""
    from synpref.demo.run import DemoOptions, check_options, run_demo

    options = DemoOptions(workspace=workspace, tiny=tiny, pool=pool, gold=gold, bench_dir=bench_dir, seed=seed)
    check_options(options)
    try:
        report = run_demo(options, log=lambda line: console.print(line, highlight=False, markup=False))
    except KeyboardInterrupt:
        console.print("interrupted: finished steps are kept; run the same command again to continue")
        raise typer.Exit(130) from None
    console.print(f"report: {report}")
