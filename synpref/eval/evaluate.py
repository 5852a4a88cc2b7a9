"""`synpref eval`: run benchmarks with one scorer and write results.json, results.md and plots.

Every (history, response) text of every benchmark is scored once per run: RM-Bench and the
best-of-N sets repeat responses, and the same prompt can appear in several benchmarks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from synpref.data.models import Message
from synpref.errors import SynprefError
from synpref.eval.base import Benchmark, BenchResult, Item
from synpref.eval.registry import PUBLISHED, benchmark_names, get_benchmark


class Scorer(Protocol):
    def score(self, conversations: list[list[Message]]) -> list[float]: ...


@dataclass
class EvalRun:
    results: dict[str, BenchResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # benchmark -> why, and how to get its data
    incomplete: dict[str, list[str]] = field(default_factory=dict)  # benchmark -> parts its files lack
    texts: int = 0  # (history, response) texts the benchmarks asked for
    unique_texts: int = 0  # texts actually scored


def evaluate(scorer: Scorer, names: list[str], data_dir: Path, console=None, download: bool = False) -> EvalRun:
    """Load each benchmark found under `data_dir/<name>/`, score all texts once, apply the rules.

    Everything that can be known without scoring (missing files, a missing part, unreadable
    data) is found and reported first, so a long scoring run never ends in an error that
    throws its results away. With `download`, a missing benchmark hosted on the Hugging Face
    Hub is fetched first.
    """
    run = EvalRun()
    loaded = {}
    for name in benchmark_names() if names == ["all"] else names:
        items = _load(get_benchmark(name), data_dir / name, run, download)
        if items:
            loaded[name] = items
    if console:
        _report_gaps(run, console)
    slots, conversations = _unique_texts(loaded)
    run.texts = sum(len(item.responses) for items in loaded.values() for item in items)
    run.unique_texts = len(conversations)
    rewards = scorer.score(conversations) if conversations else []
    for name, items in loaded.items():
        item_rewards = [[rewards[slot] for slot in item_slots] for item_slots in slots[name]]
        run.results[name] = get_benchmark(name).score(items, item_rewards)
    return run


def _load(benchmark: Benchmark, directory: Path, run: EvalRun, download: bool) -> list[Item]:
    """The benchmark's items, or [] with the reason in `run.skipped`; gaps in `run.incomplete`."""
    name = benchmark.name
    if download and not directory.is_dir() and benchmark.hub:
        benchmark.download(directory)
    if not directory.is_dir():
        run.skipped[name] = f"no data in {directory}; to get it: {benchmark.how_to_get(directory)}"
        return []
    try:
        items = benchmark.load(directory)
    except SynprefError as error:  # one unreadable benchmark does not cost the others their run
        run.skipped[name] = f"unreadable data in {directory}: {error}"
        return []
    if not items:
        run.skipped[name] = f"{directory} holds no items"
    elif missing := benchmark.missing_parts(items):
        run.incomplete[name] = missing
    return items


def _report_gaps(run: EvalRun, console) -> None:
    for name, reason in run.skipped.items():
        console.print(f"[yellow]skipping {name}[/]: {reason}", highlight=False)
    for name, parts in run.incomplete.items():
        console.print(
            f"[yellow]{name} is incomplete[/]: no data for {', '.join(parts)}; "
            "its other parts are scored, its headline score is left out", highlight=False,
        )  # fmt: skip


def _unique_texts(loaded: dict[str, list[Item]]) -> tuple[dict[str, list[list[int]]], list[list[Message]]]:
    """Per benchmark and item, the index of each response's conversation in one deduplicated list."""
    index: dict[tuple, int] = {}
    conversations: list[list[Message]] = []
    slots: dict[str, list[list[int]]] = {}
    for name, items in loaded.items():
        slots[name] = []
        for item in items:
            history_key = tuple((m.role, m.content) for m in item.history)
            item_slots = []
            for response in item.responses:
                key = (history_key, response)
                if key not in index:
                    index[key] = len(conversations)
                    conversations.append([*item.history, Message(role="assistant", content=response)])
                item_slots.append(index[key])
            slots[name].append(item_slots)
    return slots, conversations


def write_results(run: EvalRun, output: Path, model: str) -> list[Path]:
    """results.json, results.md and PNG plots in `output`; returns the files written."""
    if not run.results:
        raise SynprefError("no benchmark had data: nothing to report (see the messages above)")
    output.mkdir(parents=True, exist_ok=True)
    data = {
        "model": model,
        "benchmarks": {name: asdict(result) for name, result in run.results.items()},
        "skipped": run.skipped,
        "incomplete": run.incomplete,
        "texts": run.texts,
        "unique_texts": run.unique_texts,
        "scoring_saved": run.texts - run.unique_texts,
    }
    (output / "results.json").write_text(json.dumps(data, indent=2))
    (output / "results.md").write_text(markdown_report(run, model))
    from synpref.eval.plots import write_plots

    return [output / "results.json", output / "results.md", *write_plots(run, output)]


def markdown_report(run: EvalRun, model: str) -> str:
    published = list(PUBLISHED)
    lines = [
        f"# Reward-model benchmarks: {model}",
        "",
        "| benchmark | this model | " + " | ".join(published) + " |",
        "|---|---:|" + "---:|" * len(published),
    ]
    for name, result in run.results.items():
        reference = " | ".join(f"{PUBLISHED[p][name]:.1f}" for p in published)
        lines.append(f"| {name} | {_headline(result)} | {reference} |")
    lines += ["", f"Scored {run.unique_texts:,} unique texts for {run.texts:,} requested "
              f"({run.texts - run.unique_texts:,} saved by scoring identical texts once).", ""]
    for name, result in run.results.items():
        lines += [f"## {name} ({result.items:,} items)", "", "| subset | score |", "|---|---:|"]
        lines += [f"| {subset} | {100 * value:.1f} |" for subset, value in result.subsets.items()]
        lines += [f"| {subset} | no data |" for subset in result.missing]
        lines += _other_sets(result.extras.get("other_sets", {}))
        lines.append("")
    if run.skipped:
        lines += ["## Not run", ""] + [f"- {name}: {reason}" for name, reason in run.skipped.items()] + [""]
    return "\n".join(lines)


def _headline(result: BenchResult) -> str:
    if result.score is None:
        return f"incomplete (no {', '.join(result.missing)})"
    return f"{100 * result.score:.1f}"


def _other_sets(sets: dict[str, dict]) -> list[str]:
    """Sets a benchmark reports beside its headline set (JudgeBench's Claude responses)."""
    lines = []
    for name, values in sets.items():
        parts = ", ".join(f"{subset} {100 * value:.1f}" for subset, value in values["subsets"].items())
        lines += ["", f"Second set, {name} ({values['items']:,} items, not in the headline): "
                  f"{100 * values['score']:.1f} ({parts})"]
    return lines
