"""Config and spec YAML files: only regular files of at most 1 MiB are read.

`--spec /dev/zero` used to read until memory ran out, and a FIFO nobody writes to blocked for
ever. Each check runs in a daemon thread with a deadline, so a regression fails instead of
hanging the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from synpref.config import MAX_YAML_BYTES, load_yaml
from synpref.errors import SynprefError
from synpref.reward.spec import load_spec


def within(seconds: float, function, *args):
    """`function(*args)`'s result or raised exception, or a failure after `seconds`."""
    outcome: list = []

    def run():
        try:
            outcome.append(("returned", function(*args)))
        except BaseException as error:  # handed to the test below
            outcome.append(("raised", error))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still running after {seconds} s"
    kind, value = outcome[0]
    if kind == "raised":
        raise value
    return value


def refusal(path) -> str:
    with pytest.raises(SynprefError) as caught:
        within(5, load_yaml, path, f"reward spec {path}")
    return str(caught.value)


def test_a_device_is_refused():
    assert refusal("/dev/zero") == "reward spec /dev/zero: /dev/zero is a character device, not a regular file"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    assert refusal(fifo) == f"reward spec {fifo}: {fifo} is a FIFO (named pipe), not a regular file"


def test_a_symlink_to_a_device_is_refused(tmp_path):
    link = tmp_path / "spec.yaml"
    link.symlink_to("/dev/zero")
    assert refusal(link) == f"reward spec {link}: {link} (a link to /dev/zero) is a character device, not a regular file"


def test_a_directory_is_refused(tmp_path):
    assert refusal(tmp_path) == f"reward spec {tmp_path}: {tmp_path} is a directory, not a regular file"


def test_a_file_over_the_limit_is_refused(tmp_path):
    big = tmp_path / "spec.yaml"
    big.write_text("# padding\n" * 200_000)  # 2,000,000 bytes
    assert MAX_YAML_BYTES == 1_048_576
    assert refusal(big) == f"reward spec {big}: {big} is over the limit of 1,048,576 bytes"


def test_a_file_at_the_limit_and_a_symlink_to_a_file_are_read(tmp_path):
    exact = tmp_path / "spec.yaml"
    exact.write_text("a: 1\n" + "#" * (MAX_YAML_BYTES - 6) + "\n")
    assert exact.stat().st_size == MAX_YAML_BYTES
    assert within(5, load_yaml, exact, "spec") == {"a": 1}
    link = tmp_path / "link.yaml"
    link.symlink_to(exact)
    assert within(5, load_yaml, link, "spec") == {"a": 1}


def test_a_path_with_escape_bytes_is_shown_escaped(tmp_path):
    fifo = tmp_path / "evil\x1b[2J\r.yaml"
    os.mkfifo(fifo)
    shown = str(fifo).replace("\x1b", "\\x1b").replace("\r", "\\r")
    assert refusal(fifo) == f"reward spec {shown}: {shown} is a FIFO (named pipe), not a regular file"


def test_the_reward_spec_loader_refuses_dev_zero():
    with pytest.raises(SynprefError, match="^reward spec /dev/zero: /dev/zero is a character device, not a regular file$"):
        within(5, load_spec, "/dev/zero")


def test_reward_score_with_spec_dev_zero_fails_at_once(tmp_path):
    command = [sys.executable, "-m", "synpref", "reward", "score", "--spec", "/dev/zero", "--data", str(tmp_path / "d.jsonl"),
               "--model", "unused", "--output", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (2, "error: reward spec /dev/zero: /dev/zero is a character device, not a regular file\n")
