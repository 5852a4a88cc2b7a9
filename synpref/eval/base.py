"""What every benchmark is made of (the registry that holds them is `synpref.eval.registry`).

A benchmark never touches a model. It loads its data into `Item`s (a history and the
candidate responses to score after it), and it turns the rewards of those responses into
its numbers (`BenchResult`), by its authors' rules. `synpref.eval.evaluate` sits between:
it scores every (history, response) of every benchmark once, with the one shared scorer.

A benchmark whose files lack a part (RM-Bench without its math file) is still scored: the
missing part is found before scoring (`missing_parts`), listed in the result, and the headline
score, which needs every part, is left out rather than computed over fewer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from synpref.data.models import Message
from synpref.errors import SynprefError


@dataclass
class Item:
    """One benchmark question: a history, and the responses a reward model scores after it."""

    history: list[Message]
    responses: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchResult:
    score: float | None  # the benchmark's headline number, 0..1; None when a subset has no data
    subsets: dict[str, float]  # every declared subset that has data, in declared order
    items: int
    extras: dict[str, Any] = field(default_factory=dict)  # curves, matrices, counts
    missing: list[str] = field(default_factory=list)  # declared subsets without data


class Benchmark:
    """Base class: `load` reads the native files, `score` applies the authors' rules."""

    name: ClassVar[str]
    subsets: ClassVar[tuple[str, ...]]  # the numbers `score` must produce, in report order
    # The parts of the data the headline needs (`part_of` names an item's part); default: the subsets.
    parts: ClassVar[tuple[str, ...]] = ()
    source: ClassVar[str]  # where the data and the scoring rule come from
    github: ClassVar[str] = ""  # repository the files come from, when not on the Hub

    # Hugging Face datasets this benchmark can be downloaded from: (dataset id, split, file name).
    hub: ClassVar[tuple[tuple[str, str, str], ...]] = ()

    def load(self, directory: Path) -> list[Item]:
        raise NotImplementedError

    def how_to_get(self, directory: Path) -> str:
        """What to run to get the files into `directory`, printed when they are missing."""
        if self.hub:
            ids = ", ".join(dataset_id for dataset_id, _, _ in self.hub)
            return f"run synpref eval with --download (saves {ids} as Parquet in {directory})"
        return f"git clone https://github.com/{self.github} {directory}"

    def download(self, directory: Path) -> None:
        """Save the benchmark's Hugging Face datasets as Parquet in `directory` (needs a network)."""
        if not self.hub:
            raise SynprefError(f"{self.name} is not on the Hugging Face Hub; to get it: {self.how_to_get(directory)}")
        import datasets

        directory.mkdir(parents=True, exist_ok=True)
        for dataset_id, split, file_name in self.hub:
            datasets.load_dataset(dataset_id, split=split).to_parquet(str(directory / file_name))

    def score(self, items: list[Item], rewards: list[list[float]]) -> BenchResult:
        raise NotImplementedError

    def part_of(self, item: Item) -> str | None:
        """The part of the data `item` belongs to (None: no part the headline needs)."""
        return item.meta["subset"]

    def missing_parts(self, items: list[Item]) -> list[str]:
        """Parts of the data with no item, known before anything is scored."""
        present = {self.part_of(item) for item in items}
        return [part for part in self.parts or self.subsets if part not in present]

    def prompts(self, directory: Path) -> list[str]:
        """First-turn prompts, for decontaminating training data against this benchmark."""
        return [next(m.content for m in item.history if m.role == "user") for item in self.load(directory)]

    def result(self, score: float, subsets: dict[str, float], items: int, **extras: Any) -> BenchResult:
        """A result with the declared subsets that have data. One without is listed as missing,
        never given a zero, and then there is no headline `score`: it stands for all of them."""
        missing = [name for name in self.subsets if name not in subsets]
        ordered = {name: subsets[name] for name in self.subsets if name in subsets}
        return BenchResult(None if missing else score, ordered, items, extras, missing)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL, JSON or Parquet file (gzip or not), through the ingest readers."""
    from synpref.data.sources import open_source
    from synpref.data.stage0 import parse_record
    from synpref.errors import RecordError

    source = open_source(str(path))
    records = []
    for number, payload in source.items():
        try:
            records.append(parse_record(payload))
        except RecordError as error:
            raise SynprefError(f"{path}: {source.unit} {number}: {error}") from None
    return records


def data_files(directory: Path, patterns: tuple[str, ...] = ("*.parquet", "*.jsonl", "*.jsonl.gz", "*.json")) -> list[Path]:
    """Data files directly in `directory`, sorted, so loading order never depends on the disk."""
    return sorted({path for pattern in patterns for path in directory.glob(pattern)})


def user_turn(text: str) -> list[Message]:
    return [Message(role="user", content=text)]


def accuracy(outcomes: list[bool] | list[float]) -> float:
    if not outcomes:
        raise SynprefError("accuracy of an empty set")
    return sum(outcomes) / len(outcomes)


def mean(values: Iterable[float]) -> float:
    """Unweighted mean, of the subsets present (a headline over fewer is discarded by `result`)."""
    values = list(values)
    return sum(values) / len(values) if values else float("nan")
