"""Ingest inputs that are not regular files, and file names that carry terminal control bytes.

A FIFO used to block ingest on its first read, and a link to /dev/zero to read for ever;
both are now refused before any input is read, naming the path. A name holding "\\x1b[2J"
(clear the screen) or "\\r" is shown escaped in progress and in errors.
"""

from __future__ import annotations

import io
import os
import threading

import pytest
from rich.console import Console

from synpref.data.ingest import IngestOptions, ingest
from synpref.errors import SynprefError
from tests.conftest import record, write_jsonl

EVIL_NAME = "evil\x1b[2J\rname.jsonl"
EVIL_SHOWN = "evil\\x1b[2J\\rname.jsonl"


def ingest_within(seconds: float, workspace, sources: list[str], console=None):
    """Run ingest in a daemon thread; its result or exception, or a failure after `seconds`."""
    outcome: list = []

    def run():
        try:
            outcome.append(ingest(workspace, IngestOptions(sources, workers=1), console=console))
        except BaseException as error:  # handed to the test below
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"ingest still running after {seconds} s"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def refusal(workspace, sources: list[str]) -> str:
    with pytest.raises(SynprefError) as caught:
        ingest_within(5, workspace, sources)
    return str(caught.value)


def test_a_fifo_is_refused_before_anything_is_read(workspace, tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [record("Q1", "yes", "no")])
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    assert refusal(workspace, [str(good), str(fifo)]) == f"source {fifo} is a FIFO (named pipe), not a regular file"
    assert workspace.manifests() == [] and workspace.existing_ids() == set()  # the good file waits for a fixed command


def test_a_link_to_dev_zero_is_refused(workspace, tmp_path):
    link = tmp_path / "zeros.jsonl"
    link.symlink_to("/dev/zero")
    assert refusal(workspace, [str(link)]) == f"source {link} (a link to /dev/zero) is a character device, not a regular file"


def test_a_device_given_directly_is_refused(workspace):
    assert refusal(workspace, ["/dev/zero"]) == "source /dev/zero is a character device, not a regular file"


def test_a_fifo_with_control_bytes_in_its_name_is_named_escaped(workspace, tmp_path):
    fifo = tmp_path / EVIL_NAME
    os.mkfifo(fifo)
    message = refusal(workspace, [str(fifo)])
    assert message == f"source {tmp_path}/{EVIL_SHOWN} is a FIFO (named pipe), not a regular file"
    assert "\x1b" not in message and "\r" not in message


def test_progress_shows_a_file_name_escaped(workspace, tmp_path):
    evil = write_jsonl(tmp_path / EVIL_NAME, [record("Q1", "yes", "no"), record("Q2", "yes", "no")])
    output = io.StringIO()
    run = ingest_within(30, workspace, [str(evil)], console=Console(file=output, width=300))
    assert [(counts.read, counts.kept) for counts in run.sources] == [(2, 2)]
    shown = output.getvalue()
    assert shown.startswith(f"{tmp_path}/{EVIL_SHOWN}: 2 read, 2 kept, 0 dup, 0 quarantined ")
    assert "\x1b" not in shown and "\r" not in shown


def test_a_bracket_in_a_file_name_is_not_read_as_rich_markup(workspace, tmp_path):
    bracketed = write_jsonl(tmp_path / "[bold]odd[red].jsonl", [record("Q1", "yes", "no")])
    output = io.StringIO()
    ingest_within(30, workspace, [str(bracketed)], console=Console(file=output, width=300))
    assert output.getvalue().startswith(f"{tmp_path}/[bold]odd[red].jsonl: 1 read, 1 kept, 0 dup, 0 quarantined ")
