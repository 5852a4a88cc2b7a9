"""Ingest (issue 16): every split of a `datasets` DatasetDict directory (`DIR:split` picks one),
and OpenAI-style content parts (text parts joined, other parts quarantined with the reason)."""

from __future__ import annotations

import pytest

from synpref.data.ingest import IngestOptions, ingest
from synpref.data.workspace import Workspace
from synpref.errors import SynprefError
from tests.conftest import write_jsonl
from tests.data.test_bad_input import read_quarantine


def trl_row(question: str, good: str, bad: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": question}],
        "chosen": [{"role": "assistant", "content": good}],
        "rejected": [{"role": "assistant", "content": bad}],
    }


@pytest.fixture
def dataset_dict_dir(tmp_path):
    datasets = pytest.importorskip("datasets")
    splits = {
        "train": [trl_row("What is 2 + 2?", "4", "5"), trl_row("Capital of France?", "Paris", "Lyon")],
        "test": [trl_row("Is ice cold?", "Yes", "No")],
    }
    directory = tmp_path / "prefs"
    datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()}).save_to_disk(str(directory))
    return directory


def kept(workspace: Workspace) -> list[tuple[str, str]]:
    return sorted((pair.conversation[0].content, pair.meta.get("dataset_split")) for _, pair in workspace.iter_pairs())


def test_every_split_of_a_dataset_dict_is_ingested(workspace, dataset_dict_dir):
    counts = ingest(workspace, IngestOptions([str(dataset_dict_dir)], workers=1)).sources[0]
    assert (counts.read, counts.kept, counts.quarantined) == (3, 3, 0)
    assert kept(workspace) == [("Capital of France?", "train"), ("Is ice cold?", "test"), ("What is 2 + 2?", "train")]


def test_dir_colon_split_selects_one(workspace, dataset_dict_dir):
    counts = ingest(workspace, IngestOptions([f"{dataset_dict_dir}:test"], workers=1)).sources[0]
    assert (counts.read, counts.kept) == (1, 1)
    assert kept(workspace) == [("Is ice cold?", None)]


def test_an_unknown_split_names_the_ones_there(workspace, dataset_dict_dir):
    with pytest.raises(SynprefError, match=r"prefs:validation: no split 'validation'; the dataset has train, test"):
        ingest(workspace, IngestOptions([f"{dataset_dict_dir}:validation"], workers=1))


def test_openai_content_parts(workspace, tmp_path):
    parts = [{"type": "text", "text": "Look at this:"}, {"type": "text", "text": "what is 2 + 2?"}]
    image = [{"type": "text", "text": "What is in"}, {"type": "image_url", "image_url": {"url": "http://x/cat.png"}}]
    records = [
        {"conversation": [{"role": "user", "content": parts}],
         "chosen": {"role": "assistant", "content": [{"type": "text", "text": "4"}]},
         "rejected": {"role": "assistant", "content": "5"}},
        {"conversation": [{"role": "user", "content": image}],
         "chosen": {"role": "assistant", "content": "A cat."}, "rejected": {"role": "assistant", "content": "A dog."}},
        {"conversation": [{"role": "user", "content": []}],
         "chosen": {"role": "assistant", "content": "A"}, "rejected": {"role": "assistant", "content": "B"}},
    ]  # fmt: skip
    path = write_jsonl(tmp_path / "parts.jsonl", records)
    counts = ingest(workspace, IngestOptions([str(path)], workers=1)).sources[0]
    assert (counts.read, counts.kept, counts.quarantined) == (3, 1, 2)
    [(_, pair)] = list(workspace.iter_pairs())
    assert (pair.conversation[0].content, pair.chosen.content) == ("Look at this:\nwhat is 2 + 2?", "4")
    assert [(e["location"], e["field"], e["reason"]) for e in read_quarantine(workspace)] == [
        ("line 2", "conversation[0].content[1]", "a part of type 'image_url': only text parts (text, input_text, output_text) can be read"),
        ("line 3", "conversation[0].content", "an empty list of content parts"),
    ]
