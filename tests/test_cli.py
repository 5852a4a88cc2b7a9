"""The command line, as a newcomer runs it (the demo's steps), in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def synpref(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synpref", *args], capture_output=True, text=True)


def test_sample_ingest_stats_export(tmp_path: Path):
    ws = str(tmp_path / "ws")
    assert synpref("init", ws).returncode == 0
    assert synpref("sample", str(tmp_path / "sample.jsonl"), "--pairs", "2000").returncode == 0
    result = synpref("ingest", str(tmp_path / "sample.jsonl"), "-w", ws)
    assert result.returncode == 0, result.stderr
    total = next(line for line in result.stdout.splitlines() if "total" in line)
    assert [cell.strip() for cell in total.split("│")[3:8]] == ["2,120", "2,000", "100", "0", "20"]
    stats = json.loads(synpref("stats", ws, "--json").stdout)
    assert stats == {
        "pairs": 2000,
        "quarantined": 20,
        "by_source": {"synthetic": 2000},
        "by_split": {"pool": 2000},
        "by_user_turns": {"1": 2000},
        "by_length_chars": {"<1k": 2000},
    }
    result = synpref("export", ws, "--format", "trl")
    assert result.returncode == 0
    exported = (tmp_path / "ws" / "exports" / "pairs.trl.jsonl").read_text().splitlines()
    assert len(exported) == 2000
    assert set(json.loads(exported[0])) == {"prompt", "chosen", "rejected", "id", "source", "split", "meta"}


def test_config_errors_are_clear(tmp_path: Path):
    ws = tmp_path / "ws"
    synpref("init", str(ws))
    again = synpref("init", str(ws))
    assert (again.returncode, again.stderr.strip()) == (2, f"error: {ws / 'synpref.yaml'} already exists")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "Hi", "chosen": "Hello there", "rejected": "Go"}) + "\n")
    result = synpref("ingest", str(data), "-w", str(ws), "--set", "prepare.colour=red")
    assert (result.returncode, result.stderr.strip()) == (2, "error: --set: prepare.colour: Extra inputs are not permitted")
    result = synpref("ingest", str(data), "-w", str(ws), "--set", "prepare.max_message_chars=5")
    assert result.returncode == 0
    assert json.loads(synpref("stats", str(ws), "--json").stdout)["quarantined"] == 1
    config = ws / "synpref.yaml"
    config.write_text(config.read_text() + "colour: red\n")
    result = synpref("stats", str(ws))
    assert (result.returncode, result.stderr.strip()) == (2, f"error: {config}: colour: Extra inputs are not permitted")


def test_ingest_shows_a_hostile_file_name_without_obeying_it(tmp_path: Path):
    """Terminal escapes and rich markup in a file name are printed as text in the summary table."""
    ws = str(tmp_path / "ws")
    assert synpref("init", ws).returncode == 0
    data = tmp_path / "evil\x1b[2J\r[red]x.jsonl"
    data.write_text(json.dumps({"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}) + "\n")
    import os

    result = subprocess.run([sys.executable, "-m", "synpref", "ingest", str(data), "-w", ws], capture_output=True,
                            text=True, env={**os.environ, "COLUMNS": "400"})  # wide enough for the whole name
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout + result.stderr and "\r" not in result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines() if "evil" in line)
    assert row.split("│")[1].strip() == f"{tmp_path}/evil\\x1b[2J\\r[red]x.jsonl"
