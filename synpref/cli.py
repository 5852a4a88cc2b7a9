"""The `synpref` command line. Each command is a thin layer over the Python API.

Every command's options come from one pydantic model (`synpref.options.command`): a field is a
flag, its description the help; `--config FILE.yaml` and `--set key=value` work everywhere.
A command whose pyproject extra is missing says, in one line, which one to install."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import BaseModel, ConfigDict, Field, create_model
from rich.console import Console
from rich.table import Table

from synpref.curate.config import CurateConfig
from synpref.demo.run import DemoOptions
from synpref.errors import SynprefError
from synpref.options import MissingExtra, cli, command
from synpref.serve.config import ServeConfig

app = typer.Typer(
    help="Curate preference data with humans and LLMs; train, evaluate and serve reward models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

class _Options(BaseModel):
    """A command's options: each field is one flag (or argument), its description the help."""

    model_config = ConfigDict(extra="forbid")


def _workspace(help: str = "workspace directory") -> Any:
    return Field(description=help, json_schema_extra=cli(flags=["--workspace", "-w"]))


def _argument(help: str) -> Any:
    return Field(description=help, json_schema_extra=cli(argument=True))


def main() -> None:
    try:
        app()
    except SynprefError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except MissingExtra as error:
        print(error, file=sys.stderr)
        sys.exit(1)


def _plots_skipped(write: Any) -> Any:
    """`write()`, whose PNG plots come last; without the `plots` extra they are skipped (the
    files before them are written) and None is returned."""
    from synpref.options import missing_module

    try:
        return write()
    except ModuleNotFoundError as error:
        if missing_module(error) != "matplotlib":
            raise
        console.print("plots skipped: they need the 'plots' extra: pip install 'synpref[plots]'", markup=False, soft_wrap=True)
        return None


class InitOptions(_Options):
    directory: Path = _argument("directory of the new workspace")
    name: Optional[str] = Field(None, description="project name (default: directory name)")


@command(app, "init", InitOptions)
def init(options: InitOptions) -> None:
    """Create a workspace with a default, validated synpref.yaml."""
    from synpref.data.workspace import Workspace

    workspace = Workspace.init(options.directory, options.name)
    console.print(f"workspace {workspace.config.name!r} created in {options.directory}")


class IngestCommandOptions(_Options):
    sources: list[str] = _argument("files (.jsonl .json .csv .parquet, gzip or not), saved datasets, or hf://org/name[:split]")
    workspace: Path = _workspace()
    format: Optional[str] = Field(None, description="input format (default: detected)", json_schema_extra=cli(flags=["--format", "-f"]))
    map: list[str] = Field(default_factory=list, description="FIELD=COLUMN: read FIELD from COLUMN")
    split: Optional[str] = Field(None, description="split of the new pairs (default: the record's `split`, else pool)")
    source_name: Optional[str] = Field(None, description="`source` of pairs whose records have none (default: file name)")
    decontaminate_against: list[str] = Field(default_factory=list, description="benchmark file, or registered benchmark name, whose first-turn prompts must not leak into training data")
    bench_dir: Optional[Path] = Field(None, description="DIR with DIR/<benchmark>/ files, for benchmark names in --decontaminate-against")
    workers: int = Field(0, ge=0, description="worker processes (0: one per core, at most 8)")
    prepare: dict[str, Any] = Field(default_factory=dict, description="synpref.yaml's prepare values to override for this run")


@command(app, "ingest", IngestCommandOptions, set_example="prepare.max_message_chars=50000")
def ingest(options: IngestCommandOptions) -> None:
    """Read preference data into the workspace: validate, quarantine, deduplicate, decontaminate."""
    from synpref.config import validated
    from synpref.data.ingest import IngestOptions
    from synpref.data.ingest import ingest as run_ingest
    from synpref.data.workspace import Workspace, WorkspaceConfig
    from synpref.eval.registry import benchmark_prompts

    ws = Workspace(options.workspace)
    settings = ws.config.model_dump()
    settings["prepare"].update(options.prepare)
    config = validated(WorkspaceConfig, settings, "--set").prepare
    ingest_options = IngestOptions(
        sources=options.sources,
        format=options.format,
        mapping=_mapping(options.map),
        split=options.split,
        source_name=options.source_name,
        decontaminate_against=options.decontaminate_against,
        bench_dir=options.bench_dir,
    )
    if options.workers:
        ingest_options.workers = options.workers
    try:
        run = run_ingest(ws, ingest_options, config=config, console=console, benchmark_prompts=benchmark_prompts)
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
    from rich.markup import escape

    from synpref.text import printable

    table = Table(title=f"ingest {run.run_id}")
    columns = ["read", "kept", "duplicates", "contaminated", "quarantined"]
    table.add_column("source")
    table.add_column("format")
    for column in columns:
        table.add_column(column, justify="right")
    for counts in run.sources:
        # A file name can hold terminal escapes or rich markup: shown, never obeyed.
        table.add_row(escape(printable(counts.spec)), counts.format, *(f"{getattr(counts, c):,}" for c in columns))
    totals = [sum(getattr(s, c) for s in run.sources) for c in columns]
    table.add_row("total", "", *(f"{n:,}" for n in totals), style="bold")
    Console().print(table)
    for name, info in run.decontamination.items():
        hits = sum(s.contaminated_by.get(name, 0) for s in run.sources)
        Console().print(
            f"decontamination against {escape(printable(name))}: {info['prompts']:,} prompts "
            f"({info['shorter_than_n']:,} shorter than the n-gram), {hits:,} pairs dropped"
        )
    if totals[4] or totals[3]:
        Console().print("quarantined and contaminated records with their reasons: quarantine/*.jsonl")


class StatsOptions(_Options):
    directory: Path = _argument("workspace directory")
    as_json: bool = Field(False, description="print JSON instead of tables", json_schema_extra=cli(flags=["--json"]))


@command(app, "stats", StatsOptions)
def stats(options: StatsOptions) -> None:
    """Counts by source, split, user turns and length."""
    from synpref.data.stats import workspace_stats
    from synpref.data.workspace import Workspace

    result = workspace_stats(Workspace(options.directory))
    if options.as_json:
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


def _format() -> Any:
    return Field("trl", description="trl | jsonl | parquet | hf-dataset", json_schema_extra=cli(flags=["--format", "-f"]))


class ExportOptions(_Options):
    directory: Path = _argument("workspace directory")
    format: str = _format()
    output: Optional[Path] = Field(None, description="output file or directory (default: DIR/exports/...)")
    split: Optional[str] = Field(None, description="only this split")


@command(app, "export", ExportOptions)
def export(options: ExportOptions) -> None:
    """Write the workspace's pairs for trainers and other tools."""
    from synpref.data.export import export as run_export
    from synpref.data.workspace import Workspace

    path, count = run_export(Workspace(options.directory), options.format, options.output, options.split)
    console.print(f"wrote {count:,} pairs to {path}")


class SampleOptions(_Options):
    output: Path = _argument("JSONL file to write")
    pairs: int = Field(2000, description="number of distinct pairs")
    seed: int = Field(0, description="random seed")


@command(app, "sample", SampleOptions)
def sample(options: SampleOptions) -> None:
    """Write a small synthetic preference dataset (arithmetic and open questions, with noise)."""
    from synpref.data.sample import write_sample

    written = write_sample(options.output, pairs=options.pairs, seed=options.seed)
    console.print(f"wrote {written:,} records to {options.output}")


def _train_options() -> type[BaseModel]:
    """`TrainConfig` as a pydantic model: its fields, defaults and help (written once, in rm/config.py)."""
    from synpref.rm.config import config_fields

    # An empty default ("" for --data and --output) means the value must be given, by flag or --config.
    fields = {name: (kind, Field(default, description=help_text, json_schema_extra=cli(required=default == "")))
              for name, kind, default, help_text in config_fields()}  # fmt: skip
    return create_model("TrainOptions", __config__=ConfigDict(extra="forbid"), **fields)


@command(app, "train", _train_options(), set_example="learning_rate=1e-5")
def train(options: BaseModel) -> None:
    """Train a Bradley-Terry reward model (options from --config YAML, overridden by flags)."""
    from synpref.rm.config import load_train_config
    from synpref.rm.trainer import train as run_train

    config = load_train_config(None, options.model_dump())
    summary = run_train(config)
    console.print(f"model written to {options.output or 'the output directory'}: {json.dumps(summary)}")


annotate_app = typer.Typer(help="LLM annotation: attributes, pairwise judging, pre-verification.", no_args_is_help=True)
judges_app = typer.Typer(help="Reports on the LLM judges.", no_args_is_help=True)
app.add_typer(annotate_app, name="annotate")
app.add_typer(judges_app, name="judges")


class AnnotateOptions(_Options):
    workspace: Path = _workspace()
    judges: Path = Field(description="YAML file listing the judges (see synpref/annotate/config.py)")
    limit: Optional[int] = Field(None, description="annotate at most this many pairs")
    split: Optional[str] = Field(None, description="only pairs of this split (judge default: pool)")


def _annotate(task: str, options: AnnotateOptions) -> None:
    from rich.progress import Progress

    from synpref.annotate.config import load_job_config
    from synpref.annotate.runner import run_job
    from synpref.data.workspace import Workspace

    ws, config = Workspace(options.workspace), load_job_config(options.judges)
    try:
        with Progress(console=console, transient=True) as progress:
            bar = progress.add_task(f"annotate {task}", total=None)
            summary = run_job(ws, task, config, limit=options.limit, split=options.split,
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


def _annotate_command(task: str, doc: str) -> None:
    def run(options: AnnotateOptions) -> None:
        _annotate(task, options)

    run.__doc__, run.__name__ = doc, f"annotate_{task}"
    command(annotate_app, task, AnnotateOptions)(run)


_annotate_command("attributes", "Write the 5-tuple of attributes (task category, objectivity, ...) for each pair.")
_annotate_command("judge", "Judge which response of each pair is better; combine the judges into one Judgment.")
_annotate_command("preverify", "Judge each response of objective pairs alone: correct or incorrect, with a reason.")


class JudgesAgreementOptions(_Options):
    workspace: Path = _workspace()
    as_json: bool = Field(False, description="print JSON instead of tables", json_schema_extra=cli(flags=["--json"]))


@command(judges_app, "agreement", JudgesAgreementOptions)
def judges_agreement(options: JudgesAgreementOptions) -> None:
    """Each judge's agreement with human gold labels and with the others, and its position bias."""
    from synpref.annotate.judge_agreement import agreement_report
    from synpref.data.workspace import Workspace

    report = agreement_report(Workspace(options.workspace))
    if options.as_json:
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


class JudgesServeLocalOptions(_Options):
    model: Optional[Path] = Field(None, description="GGUF model file (default: the bundled SmolLM2-135M-Instruct)")
    host: str = Field("127.0.0.1", description="address to listen on (loopback by default)")
    port: int = Field(8080, ge=0, le=65535, description="port to listen on; 0 picks a free one")
    parallel: int = Field(4, ge=1, description="requests decoded together (llama.cpp slots, continuous batching)")
    context: int = Field(2048, ge=256, description="context tokens per slot")
    threads: Optional[int] = Field(None, ge=1, description="CPU threads (default: all cores)")
    api_key_env: Optional[str] = Field(None, description="environment variable holding a key every client must send")
    judges_out: Optional[Path] = Field(None, description="also write a judges file pointing the openai backend here")
    ready_file: Optional[Path] = Field(None, description="write the base URL here once the server answers")


@command(judges_app, "serve-local", JudgesServeLocalOptions, extra="llamacpp")
def judges_serve_local(options: JudgesServeLocalOptions) -> None:
    """Serve the bundled SmolLM2 GGUF with llama.cpp's OpenAI-compatible server, for judging."""
    import os

    import yaml

    from synpref.annotate import llamacpp

    api_key = None
    if options.api_key_env:
        api_key = os.environ.get(options.api_key_env)
        if not api_key:
            raise SynprefError(f"--api-key-env: environment variable {options.api_key_env} is not set")

    def announce(base_url: str) -> None:
        if options.judges_out:
            judge = llamacpp.judge_config(base_url, api_key_env=options.api_key_env, concurrency=options.parallel,
                                          model=llamacpp.served_name(options.model)).model_dump(exclude_defaults=True)
            options.judges_out.write_text(yaml.safe_dump({"judges": [{"name": judge.pop("name"), **judge}]}, sort_keys=False))
        # A plain line (no wrapping): the URL is for copying.
        print(f"serving {options.model or llamacpp.bundled_gguf().name} at {base_url}"
              + (f"; judges file: {options.judges_out}" if options.judges_out else "") + " (Ctrl-C stops)", flush=True)

    llamacpp.serve(model=options.model, host=options.host, port=options.port, parallel=options.parallel,
                   context=options.context, threads=options.threads, api_key=api_key,
                   ready_file=options.ready_file, on_ready=announce)


def _cell(value) -> str:
    return "-" if value is None else f"{value:.1%}" if isinstance(value, float) else f"{value:,}"


def _score_dtype(bf16: bool):
    """torch.bfloat16 for --bf16, else None (the model's own dtype)."""
    if not bf16:
        return None
    import torch

    return torch.bfloat16


MODEL_HELP = ("reward model: an embedded name (smollm2-135m, minilm-l6), a Hugging Face id, a path, a server URL "
              "(http://host:port; API key from SYNPREF_API_KEY) or length-baseline (reward = response length)")
MAX_LENGTH_HELP = "longest input in tokens; longer ones are cut"


class EvalOptions(_Options):
    model: str = Field(description=MODEL_HELP)
    data_dir: Path = Field(description="DIR whose DIR/<benchmark>/ folders hold each benchmark's files")
    output: Path = Field(description="folder for results.json, results.md and plots")
    bench: list[str] = Field(default_factory=list, description="benchmark name, repeatable; default all")
    max_length: int = Field(4096, description=MAX_LENGTH_HELP)
    token_budget: Optional[int] = Field(None, description="tokens per scoring batch, padding included (default: 16384 on a GPU, 1024 on CPU)")
    protocol: str = Field("synpref", description="for a server URL as --model: synpref (/v1/score), openrlhf (/get_reward), vllm or sglang (/classify)")
    tokenizer: Optional[str] = Field(None, description="for --protocol openrlhf, vllm or sglang: the model's tokenizer, to format inputs")
    download: bool = Field(False, description="fetch missing benchmarks hosted on the Hugging Face Hub into --data-dir")
    bf16: bool = Field(False, description="score in bfloat16 (faster on GPUs and on CPUs with bf16 units; scores move by ~1e-2)")


@command(app, "eval", EvalOptions)
def eval_command(options: EvalOptions) -> None:
    """Score a reward model on the reward-model benchmarks, each by its authors' rules."""
    from synpref.eval.evaluate import evaluate, write_results
    from synpref.rm.scorers import load_scorer

    scorer = load_scorer(options.model, max_length=options.max_length, token_budget=options.token_budget,
                         dtype=_score_dtype(options.bf16), show_progress=True, protocol=options.protocol,
                         tokenizer=options.tokenizer)  # fmt: skip
    run = evaluate(scorer, options.bench or ["all"], options.data_dir, console=console, download=options.download)
    written = _plots_skipped(lambda: write_results(run, options.output, options.model))
    if written is None:  # results.json and results.md come before the plots
        written = [options.output / "results.json", options.output / "results.md"]
    Console().print((options.output / "results.md").read_text().split("\n\n## ")[0], highlight=False)
    console.print("wrote " + ", ".join(str(path) for path in written))


label_app = typer.Typer(help="The human annotation app: gold labelling under a written protocol.", no_args_is_help=True)
app.add_typer(label_app, name="label")


def _db() -> Any:
    return Field(None, description="SQLAlchemy URL (default: sqlite:///WORKSPACE/annotations.db), e.g. postgresql+psycopg://user@host/db",
                 json_schema_extra=cli(flags=["--db"]))  # fmt: skip


class LabelServeOptions(_Options):
    workspace: Path = _workspace()
    db: Optional[str] = _db()
    host: str = Field("127.0.0.1", description="address to listen on (loopback by default; put HTTPS in front before opening it up)")
    port: int = Field(8000, description="port")
    https_only: bool = Field(False, description="send the session cookie over HTTPS only (behind a TLS proxy)", json_schema_extra=cli(flags=["--https-only"]))


@command(label_app, "serve", LabelServeOptions, extra="label")
def label_serve(options: LabelServeOptions) -> None:
    """Run the annotation web app."""
    import uvicorn

    from synpref.label.app import create_app

    console.print(f"synpref label on http://{options.host}:{options.port} (Ctrl-C to stop)")
    web_app = create_app(options.workspace, options.db, https_only=options.https_only)
    uvicorn.run(web_app, host=options.host, port=options.port, log_level="warning")


class LabelAddUserOptions(_Options):
    name: str = _argument("login name")
    workspace: Path = _workspace()
    role: str = Field("annotator", description="admin | annotator")
    password: str = Field(description="at least 8 characters (prompted when left out)", json_schema_extra=cli(secret=True))
    db: Optional[str] = _db()


@command(label_app, "add-user", LabelAddUserOptions, extra="label")
def label_add_user(options: LabelAddUserOptions) -> None:
    """Create a user of the annotation app."""
    from synpref.data.workspace import Workspace
    from synpref.label.db import default_url, open_database
    from synpref.label.users import add_user

    ws = Workspace(options.workspace)
    add_user(open_database(options.db or default_url(ws.root)), options.name, options.password, options.role)
    console.print(f"added {options.role} {options.name!r}")


class LabelExportOptions(_Options):
    workspace: Path = _workspace()
    db: Optional[str] = _db()
    output: Optional[Path] = Field(None, description="JSONL file to write (default: WORKSPACE/label/gold-<time>.jsonl)")


@command(label_app, "export", LabelExportOptions, extra="label")
def label_export(options: LabelExportOptions) -> None:
    """Write the gold set (JSONL, original orientation) and add decided pairs to the workspace."""
    from synpref.data.workspace import Workspace
    from synpref.label.db import default_url, open_database
    from synpref.label.export import export_gold

    ws = Workspace(options.workspace)
    with open_database(options.db or default_url(ws.root))() as session:
        summary = export_gold(session, ws, options.output)
    print(json.dumps(summary, indent=2))


class ServeOptions(ServeConfig):
    model: str = Field(description="reward model: an embedded name, a Hugging Face id or a path")
    host: str = Field("127.0.0.1", description="address to bind; loopback unless you mean to expose it")
    port: int = Field(8000, description="port")
    max_length: int = Field(4096, description="longest input in tokens; longer ones get 422 unless the request asks to truncate")
    bf16: bool = Field(False, description="score in bfloat16 (faster on CPUs with bf16 units and on GPUs)")


@command(app, "serve", ServeOptions, flags={"api_keys": ["--api-key"], "keyless_clients": ["--keyless-client"]}, extra="serve")
def serve(options: ServeOptions) -> None:
    """Serve a reward model over HTTP for RLHF trainers (OpenRLHF's /get_reward included).

    API keys: --api-key (repeatable) and SYNPREF_API_KEYS=k1,k2.
    """
    import os

    from synpref.rm.scorer import RewardScorer
    from synpref.serve.app import create_app
    from synpref.serve.limits import auth_summary
    from synpref.serve.server import run, run_workers

    keys = options.api_keys + [k for k in os.environ.get("SYNPREF_API_KEYS", "").split(",") if k]
    config = ServeConfig.model_validate(options.model_dump(include=set(ServeConfig.model_fields)) | {"api_keys": keys})
    model, host, port, workers = options.model, options.host, options.port, config.workers
    spec = _reward_spec_logged(config)  # before loading the model: a bad spec fails fast
    # Tokenization is batched on a thread of each HTTP process; Rust threads on top would fight the model for cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Not `synpref.rm.scorers.load_scorer`: the server cuts, batches and packs token ids itself
    # (`scorer.formatter`, `scorer.score_ids`), which only a token-level `RewardScorer` has; a
    # head-only decoder loads here as the plain classifier it also is (same rewards).
    scorer = RewardScorer.from_pretrained(
        model, max_length=options.max_length, token_budget=config.model_batch_tokens, dtype=_score_dtype(options.bf16), show_progress=False
    )
    threads = _model_threads(scorer, config)
    mode = f"{workers} HTTP worker process(es) + model owner" if workers else "one process"
    console.print(f"serving {model} on http://{host}:{port} ({'API keys required' if keys else 'no API keys'}; "
                  f"{mode}; {threads or 'GPU'} model threads)")  # fmt: skip
    console.print(auth_summary(keys, config.keyless_clients), markup=False, soft_wrap=True)
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


class RewardScoreOptions(_Options):
    spec: Path = Field(description="YAML reward spec (synpref/reward/spec.py)")
    data: Path = Field(description="JSONL of prompt, response, reference (optional: task; pair + preferred)")
    model: str = Field(description=MODEL_HELP)
    output: Path = Field(description="folder for components.jsonl, report.md, rm_by_outcome.png, reward-spec.yaml")
    max_length: int = Field(4096, description=MAX_LENGTH_HELP)


@command(reward_app, "score", RewardScoreOptions)
def reward_score(options: RewardScoreOptions) -> None:
    """Reward components per item, and how often the RM and the verifier disagree."""
    from synpref.reward.offline import score_file
    from synpref.reward.spec import load_spec
    from synpref.rm.scorers import load_scorer

    reward_spec = load_spec(options.spec)
    scorer = load_scorer(options.model, max_length=options.max_length, show_progress=True)
    plotted = _plots_skipped(lambda: score_file(options.data, reward_spec, scorer, options.output))  # the plot comes last
    Console().print((options.output / "report.md").read_text(), highlight=False)
    console.print(f"wrote {options.output}/components.jsonl, report.md, {'rm_by_outcome.png, ' if plotted else ''}reward-spec.yaml")


curate_app = typer.Typer(help="The curation loop: Stage 1 iterations, Stage 2 filtering, report, export.", no_args_is_help=True)
app.add_typer(curate_app, name="curate")
CURATE_CONFIG_HELP = "curation YAML (default: WORKSPACE/curate.yaml if present; see synpref/curate/config.py)"


def _curate_command(name: str, model: type[BaseModel]):
    """A curation command: its options are the `CurateConfig` (nested values through --set), its
    YAML file WORKSPACE/curate.yaml unless --config names another."""
    from synpref.curate.config import CONFIG_FILE

    def default_config(given: dict[str, Any]) -> Path | None:
        path = Path(given["workspace"]) / CONFIG_FILE
        return path if path.is_file() else None

    return command(curate_app, name, model, set_example="stage2.margin=0.2 or rm.max_steps=50",
                   config_help=CURATE_CONFIG_HELP, default_config=default_config, extra="curate")  # fmt: skip


def _curate_config(options: BaseModel):
    """The workspace and the `CurateConfig` part of a curation command's options."""
    from synpref.curate.config import CurateConfig
    from synpref.data.workspace import Workspace

    return Workspace(options.workspace), CurateConfig.model_validate(options.model_dump(include=set(CurateConfig.model_fields)))


class CurateStage1Options(CurateConfig):
    workspace: Path = _workspace()
    iterations: Optional[int] = Field(None, description="iterations to reach (default: stage1.iterations); finished ones are skipped")


@_curate_command("stage1", CurateStage1Options)
def curate_stage1(options: CurateStage1Options) -> None:
    """Train on silver, measure gold, retrieve similar pool pairs, LLM-judge them; N times, resumable."""
    from synpref.curate.stage1 import run_stage1

    ws, curate_config = _curate_config(options)
    for summary in run_stage1(ws, curate_config, iterations=options.iterations, log=console.print):
        console.print(json.dumps(summary))


class CurateStage2Options(CurateConfig):
    workspace: Path = _workspace()


@_curate_command("stage2", CurateStage2Options)
def curate_stage2(options: CurateStage2Options) -> None:
    """Gold RM + best RM over the pool, LLM judges below the band; keep/discard/flip with reasons."""
    from synpref.curate.stage2 import run_stage2

    ws, curate_config = _curate_config(options)
    console.print(json.dumps(run_stage2(ws, curate_config, log=console.print)))


class CurateAblationOptions(CurateConfig):
    workspace: Path = _workspace()
    bench_dir: Optional[Path] = Field(None, description="DIR/<benchmark>/ files: also score every condition's model (fold 1) on them")
    folds: int = Field(3, description="gold is split into this many parts by a seeded hash; each is held out once")
    seed: int = Field(0, description="seed of the gold split, the random-subset control and the bootstrap")


@_curate_command("ablation", CurateAblationOptions)
def curate_ablation(options: CurateAblationOptions) -> None:
    """Raw pool vs curated vs curated + flipped vs gold vs a random subset, on held-out gold with 95% intervals."""
    from synpref.curate.ablation import run_ablation

    ws, curate_config = _curate_config(options)
    try:
        results = run_ablation(ws, curate_config, folds=options.folds, seed=options.seed, bench_dir=options.bench_dir, log=console.print)
    except KeyboardInterrupt:
        console.print("interrupted: finished steps are kept; run the same command again to continue")
        raise typer.Exit(130) from None
    for name, row in results["accuracy"].items():
        console.print(f"{name:>14}: {row['accuracy']:.4f}  [{row['low']:.4f}, {row['high']:.4f}]")
    console.print(f"report: {ws.run_dir('ablation') / 'report.html'} ({results['seconds']:.0f} s)")


class CurateReportOptions(_Options):
    workspace: Path = _workspace()
    output: Optional[Path] = Field(None, description="folder (default: WORKSPACE/runs/curate-report)")


@command(curate_app, "report", CurateReportOptions, extra="curate")
def curate_report(options: CurateReportOptions) -> None:
    """Markdown/HTML report with PNG plots: gold accuracy per iteration, kept/discarded/flipped, judge agreement."""
    from synpref.curate.report import write_report
    from synpref.data.workspace import Workspace

    console.print(f"report written to {write_report(Workspace(options.workspace), options.output)}")


class CurateExportOptions(_Options):
    workspace: Path = _workspace()
    format: str = _format()
    output: Optional[Path] = Field(None, description="folder for curated/flipped/union (default: WORKSPACE/exports/curated)")


@command(curate_app, "export", CurateExportOptions, extra="curate")
def curate_export(options: CurateExportOptions) -> None:
    """The curated set, the flipped set and their union, with provenance columns (origin, reason)."""
    from synpref.curate.export import export_curated
    from synpref.data.workspace import Workspace

    ws = Workspace(options.workspace)
    for name, (path, count) in export_curated(ws, options.format, options.output or ws.root / "exports" / "curated").items():
        console.print(f"{name}: {count:,} pairs -> {path}")


@command(app, "demo", DemoOptions, extra="curate")
def demo(options: DemoOptions) -> None:
    """Run the whole loop offline: prepare, attributes, Stage 1, Stage 2, train, evaluate, report."""
    from synpref.demo.run import check_options, run_demo

    check_options(options)
    try:
        report = run_demo(options, log=lambda line: console.print(line, highlight=False, markup=False))
    except KeyboardInterrupt:
        console.print("interrupted: finished steps are kept; run the same command again to continue")
        raise typer.Exit(130) from None
    console.print(f"report: {report}")
