"""Hostile input files (issue 13): bounded memory, strict JSON, no half-written shards, and a
fuzz corpus in which every file ends as a balanced summary or one clear error."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
import tracemalloc

import pyarrow.dataset
import pytest

import synpref.data.ingest as ingest_module
from synpref.data.ingest import IngestOptions, ingest
from synpref.data.sample import make_records
from synpref.data.workspace import Workspace
from synpref.errors import SynprefError
from tests.conftest import record, write_jsonl
from tests.data.test_bad_input import GOOD_1, GOOD_2, read_quarantine

GIB = 1 << 30
MIB = 1 << 20
GOOD_LINE_1, GOOD_LINE_2 = (json.dumps(r).encode() for r in (GOOD_1, GOOD_2))


def gzip_with_giant_line(path, line_bytes: int):
    """GOOD_1, a line of `line_bytes` x's in a JSON string, GOOD_2; one gzip member per MiB of
    x's (concatenated members are one gzip stream), so 1 GiB takes about 1 MB on disk."""
    member = gzip.compress(b"x" * MIB)
    with open(path, "wb") as file:
        file.write(gzip.compress(GOOD_LINE_1 + b'\n{"prompt": "'))
        for _ in range(line_bytes // MIB):
            file.write(member)
        file.write(gzip.compress(b'"}\n' + GOOD_LINE_2 + b"\n"))
    return path


# --- 5. bounded line length, capped raw ---------------------------------------------------


def test_a_1_gib_line_in_a_1_mb_gzip_is_quarantined_in_bounded_memory(workspace, tmp_path):
    path = gzip_with_giant_line(tmp_path / "giant.jsonl.gz", GIB)
    assert path.stat().st_size < 2 * MIB
    tracemalloc.start()
    try:
        run = ingest(workspace, IngestOptions([str(path)], workers=1))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 80 * MIB  # the line limit (16 MiB) a few times over, not the 1 GiB line
    counts = run.sources[0]
    assert (counts.read, counts.kept, counts.duplicates, counts.contaminated, counts.quarantined) == (3, 2, 0, 0, 1)
    [entry] = read_quarantine(workspace)
    size = GIB + len('{"prompt": ""}')
    assert (entry["source"], entry["location"], entry["field"]) == (str(path), "line 2", "")
    assert entry["reason"] == f"{size:,} bytes, over the limit of 16,777,216 for one record (prepare.max_record_bytes); not parsed"
    assert (entry["raw"], entry["raw_bytes"], entry["raw_truncated"]) == ('{"prompt": "' + "x" * (64 * 1024 - 12), size, True)
    assert sum(path.stat().st_size for path in workspace.quarantine_files()) < 100 * 1024


def test_the_line_limit_is_a_workspace_setting(workspace, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [GOOD_1, GOOD_2])
    config = workspace.config.prepare.model_copy(update={"max_record_bytes": len(GOOD_LINE_1)})
    run = ingest(workspace, IngestOptions([str(path)], workers=1), config=config)
    assert (run.sources[0].kept, run.sources[0].quarantined) == (1, 1)  # GOOD_2's line is longer
    [entry] = read_quarantine(workspace)
    assert entry["reason"] == f"{len(GOOD_LINE_2):,} bytes, over the limit of {len(GOOD_LINE_1):,} for one record (prepare.max_record_bytes); not parsed"
    assert (entry["raw"], entry["raw_truncated"]) == (GOOD_LINE_2.decode(), False)


# --- 6. nesting, BOM, repeated keys, NaN, killed runs -------------------------------------


def test_deeply_nested_json_is_a_clear_error_not_a_traceback(workspace, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SynprefError) as error:
        ingest(workspace, IngestOptions([str(path)], workers=1))
    assert str(error.value) == f"{path}: JSON nested too deeply to read (over {sys.getrecursionlimit()} levels)"
    result = subprocess.run([sys.executable, "-m", "synpref", "ingest", str(path), "-w", str(workspace.root)],
                            capture_output=True, text=True)
    assert (result.returncode, result.stderr.strip()) == (2, f"error: {path}: JSON nested too deeply to read (over 1000 levels)")


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "json"])
def test_a_utf8_byte_order_mark_is_skipped(workspace, tmp_path, suffix):
    path = tmp_path / f"excel.{suffix}"
    body = {
        "csv": b'prompt,chosen,rejected\nWhat is 2 + 2?,4.,5.\nName a prime number.,7 is prime.,8 is prime.\n',
        "jsonl": GOOD_LINE_1 + b"\n" + GOOD_LINE_2 + b"\n",
        "json": json.dumps([GOOD_1, GOOD_2]).encode(),
    }[suffix]
    path.write_bytes(b"\xef\xbb\xbf" + body)
    run = ingest(workspace, IngestOptions([str(path)], workers=1))
    assert (run.sources[0].read, run.sources[0].kept) == (2, 2)
    assert sorted(pair.conversation[0].content for _, pair in workspace.iter_pairs()) == ["Name a prime number.", "What is 2 + 2?"]


REPEATED_KEY = "the key {!r} appears more than once in one object (a reader would keep only one value)"
REPEATED_KEYS_TEXT = [
    # a top-level key twice
    '{"conversation": [{"role": "user", "content": "Hi"}], "chosen": {"role": "assistant", "content": "Hello."},'
    ' "rejected": {"role": "assistant", "content": "Go."}, "chosen": {"role": "assistant", "content": "Later."}}',
    # a key twice inside a message
    '{"conversation": [{"role": "user", "content": "Hi", "content": "Bye"}], "chosen": {"role": "assistant",'
    ' "content": "Hello."}, "rejected": {"role": "assistant", "content": "Go."}}',
    # no key twice, but text that looks like keys (the fast check must not quarantine it)
    '{"conversation": [{"role": "user", "content": "Write \\"a\\": 1, \\"a\\": 2 in JSON"}], "chosen": {"role":'
    ' "assistant", "content": "{\\"a\\": 1}"}, "rejected": {"role": "assistant", "content": "Go."}}',
]
NON_FINITE_TEXT = [
    json.dumps({**GOOD_1, "meta": {"score": float("nan")}}),
    json.dumps({**GOOD_2, "meta": {"scores": [1.0, float("inf")]}}),
    json.dumps(record("Say hi.", "Hi!", "No.")),
]


@pytest.mark.parametrize("container", ["jsonl", "json"])
def test_repeated_keys_are_quarantined_naming_the_key(workspace, tmp_path, container):
    path = tmp_path / f"repeated.{container}"
    path.write_text("\n".join(REPEATED_KEYS_TEXT) if container == "jsonl" else "[" + ",\n".join(REPEATED_KEYS_TEXT) + "]")
    run = ingest(workspace, IngestOptions([str(path)], workers=1))
    assert (run.sources[0].read, run.sources[0].kept, run.sources[0].quarantined) == (3, 1, 2)
    unit = "line" if container == "jsonl" else "item"
    assert [(e["location"], e["field"], e["reason"]) for e in read_quarantine(workspace)] == [
        (f"{unit} 1", "chosen", REPEATED_KEY.format("chosen")),
        (f"{unit} 2", "conversation[0].content", REPEATED_KEY.format("content")),
    ]
    [(_, kept)] = workspace.iter_pairs()
    assert kept.conversation[0].content == 'Write "a": 1, "a": 2 in JSON'


def test_nan_and_infinity_are_quarantined_in_json_as_in_jsonl(tmp_path):
    for container in ("jsonl", "json"):
        workspace = Workspace.init(tmp_path / container)
        path = tmp_path / f"numbers.{container}"
        path.write_text("\n".join(NON_FINITE_TEXT) if container == "jsonl" else "[" + ",\n".join(NON_FINITE_TEXT) + "]")
        run = ingest(workspace, IngestOptions([str(path)], workers=1))
        assert (run.sources[0].read, run.sources[0].kept, run.sources[0].quarantined) == (3, 1, 2), container
        entries = read_quarantine(workspace)
        if container == "json":
            assert [(e["field"], e["reason"]) for e in entries] == [
                ("meta.score", "not valid JSON: NaN is not a JSON number"),
                ("meta.scores[1]", "not valid JSON: Infinity is not a JSON number"),
            ]
        else:
            assert [e["reason"].split(":")[0] for e in entries] == ["not valid JSON", "not valid JSON"]


def test_a_killed_ingest_leaves_nothing_that_breaks_pyarrow_dataset(workspace, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "many.jsonl", make_records(1500, seed=3))
    monkeypatch.setattr(ingest_module, "CHUNK_ITEMS", 500)
    original, calls = ingest_module._account, {"n": 0}

    def killed_at_second_chunk(*args):
        calls["n"] += 1
        if calls["n"] == 2:  # the first chunk is in the open shard, not committed
            raise KeyboardInterrupt
        original(*args)

    monkeypatch.setattr(ingest_module, "_account", killed_at_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        ingest(workspace, IngestOptions([str(path)], workers=1))
    assert [p.name.startswith(".") and p.name.endswith(".parquet.tmp") for p in workspace.pairs_dir.iterdir()] == [True]
    assert pyarrow.dataset.dataset(workspace.pairs_dir, format="parquet").to_table().num_rows == 0
    monkeypatch.setattr(ingest_module, "_account", original)
    run = ingest(workspace, IngestOptions([str(path)], workers=1))
    assert run.sources[0].kept == 1500
    assert sorted(p.name for p in workspace.pairs_dir.iterdir()) == sorted(p.name for p in workspace.shards())
    assert pyarrow.dataset.dataset(workspace.pairs_dir, format="parquet").to_table().num_rows == 1500


# --- 8. the fuzz corpus -------------------------------------------------------------------


def garbage(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def nonblank_lines(data: bytes) -> int:
    return sum(1 for line in data.split(b"\n") if line.strip())


def corpus(tmp_path) -> list[tuple[str, bytes, str | None, object]]:
    """(file name, bytes, --format, expected): expected is (read, kept, duplicates,
    contaminated, quarantined), or the exact SynprefError message with {path} for the file."""
    good = GOOD_LINE_1 + b"\n" + GOOD_LINE_2 + b"\n"
    gzipped = gzip.compress(good)
    binary = garbage(8192, seed=1)
    wrong_types = [
        {**GOOD_1, "chosen": {"role": "assistant", "content": 42}}, {**GOOD_1, "conversation": {"role": "user"}},
        {**GOOD_1, "chosen": None}, {**GOOD_1, "rejected": {"role": None, "content": "x"}}, [1, 2, 3], "a string", None,
        {**GOOD_1, "split": "nonsense"}, {**GOOD_1, "source": 7}, {**GOOD_1, "meta": "not an object"}, GOOD_2,
    ]
    no_format = "{path}: no readable record to tell the format from (empty, or nothing parses as a record); " \
                "pass --format (hh, prompt-strings, sharegpt, synpref, trl, ultrafeedback) to read it anyway, bad records quarantined"
    return [
        ("truncated.jsonl.gz", gzipped[:-8], None,
         "{path}: cannot read past line 2: Compressed file ended before the end-of-stream marker was reached"),
        ("corrupt.jsonl.gz", gzipped[:10] + b"\xff" * 20 + gzipped[30:], None,
         "{path}: cannot read its first line: Error -3 while decompressing data: invalid block type"),
        ("gzip-magic-only.jsonl", b"\x1f\x8b" + binary[:100], None,
         "{path}: cannot read its first line: Unknown compression method"),
        ("binary.jsonl", binary, None, no_format),
        ("binary-as-synpref.jsonl", binary, "synpref", (nonblank_lines(binary), 0, 0, 0, nonblank_lines(binary))),
        ("binary.json", binary, None, "{path}: not valid UTF-8 at byte 0"),
        ("binary.parquet", binary, None, "{path}: not a readable Parquet file: Parquet magic bytes not found in footer. "
                                         "Either the file is corrupted or this is not a parquet file."),
        ("bom.csv", b"\xef\xbb\xbfprompt,chosen,rejected\nWhat is 2 + 2?,4.,5.\nName a prime.,7.,8.\n", None, (2, 2, 0, 0, 0)),
        ("bom.jsonl", b"\xef\xbb\xbf" + good, None, (2, 2, 0, 0, 0)),
        ("huge-line.jsonl.gz", gzip.compress(GOOD_LINE_1 + b'\n{"prompt": "' + b"x" * (17 * MIB) + b'"}\n'), None, (2, 1, 0, 0, 1)),
        ("deep.json", b"[" * 50_000 + b"]" * 50_000, None, "{path}: JSON nested too deeply to read (over 1000 levels)"),
        ("deep-line.jsonl", good + b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}\n", None, (3, 2, 0, 0, 1)),
        ("repeated-keys.jsonl", "\n".join(REPEATED_KEYS_TEXT).encode(), None, (3, 1, 0, 0, 2)),
        ("repeated-keys.json", ("[" + ",".join(REPEATED_KEYS_TEXT) + "]").encode(), None, (3, 1, 0, 0, 2)),
        ("nan.jsonl", "\n".join(NON_FINITE_TEXT).encode(), None, (3, 1, 0, 0, 2)),
        ("nan.json", ("[" + ",".join(NON_FINITE_TEXT) + "]").encode(), None, (3, 1, 0, 0, 2)),
        ("wrong-types.jsonl", b"\n".join(json.dumps(r).encode() for r in wrong_types), None, (11, 1, 0, 0, 10)),
        ("bad-utf8.jsonl", good + GOOD_LINE_1.replace(b"2 + 2", b"2 \xff 2") + b"\n\xc3\x28\n", None, (4, 2, 0, 0, 2)),
        ("lone-surrogate.jsonl", good + GOOD_LINE_1.replace(b"2 + 2", b"2 \\ud800 2") + b"\n", None, (3, 2, 0, 0, 1)),
        ("empty.jsonl", b"", None, no_format),
        ("empty-as-synpref.jsonl", b"", "synpref", (0, 0, 0, 0, 0)),
        ("blank-lines.jsonl", b"\n \n\t\r\n", None, no_format),
        ("empty.json", b"", None, "{path}: not valid JSON at line 1 column 1: Expecting value"),
        ("scalar.json", b"42", None, "{path}: expected a JSON list of records"),
        ("truncated.json", b'[{"conversation": ', None, "{path}: not valid JSON at line 1 column 19: Expecting value"),
        ("header-only.csv", b"prompt,chosen,rejected\n", None, no_format),
        ("ragged.csv", b"prompt,chosen,rejected\nWhat is 2 + 2?,4.,5.,extra\nShort row\n", None, (2, 1, 0, 0, 1)),
        ("duplicates.jsonl", good + good, None, (4, 2, 2, 0, 0)),
        ("crlf.jsonl", good.replace(b"\n", b"\r\n"), None, (2, 2, 0, 0, 0)),
        ("no-newline-at-end.jsonl", good.rstrip(b"\n"), None, (2, 2, 0, 0, 0)),
        ("nul-bytes.csv", b"prompt,chosen,rejected\nWhat\x00 is 2 + 2?,4.,5.\n", None, (1, 1, 0, 0, 0)),
    ]


def test_fuzz_corpus_gives_balanced_summaries_or_clear_errors(tmp_path):
    cases = corpus(tmp_path)
    assert len(cases) >= 20
    outcomes = {}
    for number, (name, data, fmt, _expected) in enumerate(cases):
        path = tmp_path / "inputs" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        workspace = Workspace.init(tmp_path / f"ws-{number}")
        try:  # anything but SynprefError (a one-line message) fails the test: that is a traceback
            run = ingest(workspace, IngestOptions([str(path)], format=fmt, workers=1))
        except SynprefError as error:
            outcomes[name] = str(error).replace(str(path), "{path}")
            assert workspace.pair_table().num_rows == 0, name
            continue
        counts = run.sources[0]
        assert counts.balances(), name
        outcomes[name] = (counts.read, counts.kept, counts.duplicates, counts.contaminated, counts.quarantined)
        # nothing lost: every record read is a stored pair, a duplicate, or a quarantine entry
        assert workspace.pair_table().num_rows == counts.kept, name
        assert len(read_quarantine(workspace)) == counts.quarantined + counts.contaminated, name
    assert outcomes == {name: expected for name, _data, _fmt, expected in cases}
