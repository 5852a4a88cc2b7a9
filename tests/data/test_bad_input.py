"""Bad input: every broken record is quarantined with where and why; the rest is kept."""

from __future__ import annotations

import json
import subprocess
import sys

from synpref.data.ingest import IngestOptions, ingest
from tests.conftest import assistant, record, user, write_jsonl

GOOD_1 = record("What is 2 + 2?", "4.", "5.")
GOOD_2 = record("Name a prime number.", "7 is prime.", "8 is prime.")
TEN_MB = 10 * 1024 * 1024

# (raw line, expected field, expected reason) in file order, lines 2.. of bad.jsonl
BAD_LINES = [
    (b'{"conversation": [{"role": "user", "content": "hi"}], "chosen": {"role": "ass',
     "", "not valid JSON: unexpected end of data: line 1 column 78 (char 77)"),
    (json.dumps({**GOOD_1, "chosen": {"role": "assistant", "content": 42}}).encode(),
     "chosen.content", "expected a string, got int"),
    (json.dumps({"conversation": [user("Hello?")], "chosen": assistant("Hi!")}).encode(),
     "rejected", "missing (the record has: chosen, conversation; use --map rejected=COLUMN)"),
    (json.dumps(record("Say something.", "", "Something.")).encode(),
     "chosen.content", "is empty"),
    (json.dumps(record("Say something.", "Same.", "  Same. ")).encode(),
     "rejected.content", "is identical to chosen.content"),
    (json.dumps({**GOOD_1, "conversation": [user("One."), user("Two.")]}).encode(),
     "conversation[1].role", "roles must alternate, but two user messages are in a row"),
    (json.dumps({**GOOD_1, "conversation": [user("One."), assistant("Two.")]}).encode(),
     "conversation[1].role", "the history must end with a user turn, not assistant"),
    (b'{"conversation": [{"role": "user", "content": "caf\xe9"}], "chosen": {"role": "assistant", "content": "a"}, "rejected": {"role": "assistant", "content": "b"}}',
     "conversation[0].content", "invalid UTF-8 at byte 50 of the line"),
    (json.dumps(record("Write a lot.", "x" * TEN_MB, "Short.")).encode(),
     "chosen.content", "10,485,760 characters, over the limit of 200,000 (prepare.max_message_chars)"),
]


def read_quarantine(workspace) -> list[dict]:
    return [json.loads(line) for path in workspace.quarantine_files() for line in path.read_text().splitlines()]


def test_each_bad_record_is_quarantined_with_location_and_reason(workspace, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD_1] + [line for line, _, _ in BAD_LINES] + [GOOD_2])
    run = ingest(workspace, IngestOptions([str(path)], workers=1))
    counts = run.sources[0]
    assert (counts.read, counts.kept, counts.duplicates, counts.contaminated, counts.quarantined) == (11, 2, 0, 0, 9)
    assert counts.balances()
    entries = read_quarantine(workspace)
    got = [(e["source"], e["location"], e["field"], e["reason"]) for e in entries]
    want = [(str(path), f"line {n}", field, reason) for n, (_, field, reason) in enumerate(BAD_LINES, start=2)]
    assert got == want
    # The raw text of every rejected line is kept (bad bytes escaped), up to 64 KiB of it
    # with its full size beside it: a giant line does not make a giant quarantine file.
    assert (entries[0]["raw"], entries[0]["raw_bytes"], entries[0]["raw_truncated"]) == (BAD_LINES[0][0].decode(), 77, False)
    assert "caf\\xe9" in entries[7]["raw"]
    assert (len(entries[8]["raw"]), entries[8]["raw_bytes"], entries[8]["raw_truncated"]) == (65536, len(BAD_LINES[8][0]), True)
    assert entries[8]["raw"] == BAD_LINES[8][0][:65536].decode()
    kept = sorted(pair.conversation[0].content for _, pair in workspace.iter_pairs())
    assert kept == ["Name a prime number.", "What is 2 + 2?"]


def test_limits_come_from_the_workspace_config(workspace, tmp_path):
    config = workspace.config.prepare.model_copy(update={"max_message_chars": 3})
    path = write_jsonl(tmp_path / "short.jsonl", [GOOD_1, record("Hi", "Hello there.", "Go.")])
    run = ingest(workspace, IngestOptions([str(path)], workers=1), config=config)
    assert (run.sources[0].kept, run.sources[0].quarantined) == (0, 2)
    assert [e["reason"] for e in read_quarantine(workspace)] == [
        "14 characters, over the limit of 3 (prepare.max_message_chars)",
        "12 characters, over the limit of 3 (prepare.max_message_chars)",
    ]


def test_consecutive_assistant_messages_follow_the_config(workspace, tmp_path):
    split_reply = {**GOOD_1, "conversation": [user("Hi"), assistant("Hello,"), assistant("friend."), user("Bye")]}
    path = write_jsonl(tmp_path / "hh.jsonl", [split_reply])
    assert ingest(workspace, IngestOptions([str(path)], workers=1)).sources[0].kept == 1
    strict = workspace.config.prepare.model_copy(update={"allow_consecutive_assistant": False})
    other = write_jsonl(tmp_path / "hh2.jsonl", [{**split_reply, "chosen": assistant("Bye!")}])
    run = ingest(workspace, IngestOptions([str(other)], workers=1), config=strict)
    assert run.sources[0].quarantined == 1
    assert read_quarantine(workspace)[-1]["field"] == "conversation[2].role"


def test_csv_rows_with_unmapped_columns_are_quarantined(workspace, tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes(
        b"question,chosen,rejected,note\n"
        b"What is 2 + 2?,4.,5.,easy\n"
        b"Name a prime.,7.,8.,\n"
    )
    run = ingest(workspace, IngestOptions([str(path)], format="prompt-strings", workers=1))
    counts = run.sources[0]
    assert (counts.read, counts.kept, counts.quarantined) == (2, 0, 2)
    entries = read_quarantine(workspace)
    assert [(e["location"], e["field"], e["reason"]) for e in entries] == [
        ("row 1", "prompt", "missing (the record has: chosen, note, question, rejected; use --map prompt=COLUMN)"),
        ("row 2", "prompt", "missing (the record has: chosen, note, question, rejected; use --map prompt=COLUMN)"),
    ]


def test_csv_extra_columns_are_kept_in_meta_and_bad_bytes_quarantined(workspace, tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes(
        b"prompt,chosen,rejected,note\n"
        b"What is 2 + 2?,4.,5.,easy\n"
        b"caf\xe9?,Yes.,No.,\n"
    )
    run = ingest(workspace, IngestOptions([str(path)], workers=1))
    assert (run.sources[0].kept, run.sources[0].quarantined) == (1, 1)
    assert next(workspace.iter_pairs())[1].meta == {"note": "easy"}
    [entry] = read_quarantine(workspace)
    assert (entry["location"], entry["field"], entry["reason"]) == ("row 2", "prompt", "invalid UTF-8 (an unpaired surrogate)")


def synpref(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synpref", *args], capture_output=True, text=True)


def test_cli_bad_file_exits_zero_with_a_balanced_summary(workspace, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD_1] + [line for line, _, _ in BAD_LINES] + [GOOD_2])
    result = synpref("ingest", str(path), "--workspace", str(workspace.root), "--workers", "2")
    assert result.returncode == 0, result.stderr
    total = [line for line in result.stdout.splitlines() if "total" in line]
    assert total and [cell.strip() for cell in total[0].split("│")[3:8]] == ["11", "2", "0", "0", "9"]


def test_cli_missing_file_and_unreadable_format_are_clear_errors(workspace, tmp_path):
    result = synpref("ingest", str(tmp_path / "nope.jsonl"), "-w", str(workspace.root))
    assert (result.returncode, result.stderr.strip()) == (2, f"error: source not found: {tmp_path / 'nope.jsonl'}")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    result = synpref("ingest", str(notes), "-w", str(workspace.root))
    assert result.returncode == 2
    assert "cannot tell the file type from '.txt'" in result.stderr
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    result = synpref("ingest", str(broken), "-w", str(workspace.root))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {broken}: not a readable Parquet file")
    for output in (result.stderr, result.stdout):
        assert "Traceback" not in output
    result = synpref("ingest", str(notes), "-w", str(tmp_path / "not-a-workspace"))
    assert result.returncode == 2
    assert "is not a workspace (no synpref.yaml)" in " ".join(result.stderr.split())
