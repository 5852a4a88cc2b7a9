"""Issue 26, acceptance 2 and 3: hostile replies and labels, sent concurrently to a live
`synpref serve --reward-spec`, as a policy searching for what the reward pays would send them.

Every request answers within its limit + 1 s (the limit: the spec's per-item time limit times the
items that can use all of it), /health answers within 1 s throughout, the server's process tree
stays under a memory bound, no answer is a 5xx, the log holds no traceback, SIGTERM stops the
server within 5 s, and a local HTTP server named in `$ref` labels receives no request."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytest.importorskip("torch")
psutil = pytest.importorskip("psutil")
from tests.conftest import served_process  # noqa: E402
from tests.reward.conftest import Counting  # noqa: E402

TIME_S = 2.0
WORKERS = 4
CONCURRENCY = 4  # no more requests in flight than workers: a request never waits for a worker
RSS_BOUND_GB = 2.0  # measured 1.1 GB: MiniLM owner and HTTP worker ~0.9 GB, five verifier processes ~0.05 GB each
SPEC = f"""\
default_task: math
tasks:
  math: {{verifier: math, combine: hybrid, w_rm: 0.0, w_rule: 1.0}}
  choice: {{verifier: choice, combine: rule}}
  regex: {{verifier: regex, combine: rule}}
  json: {{verifier: json_schema, combine: rule}}
limits: {{time_s: {TIME_S}, workers: {WORKERS}}}
"""
EVIL_RE = "(a+)+$"
EVIL_TEXT = "a" * 40 + "!"


def deep(depth: int, inner) -> dict:
    schema = inner
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


# (name, task, reply, reference, status, rule): rule is the verifier's 0/1 on a 200, None on a 422.
# Math that no bounded computation can compare is never credited; a label the verifier cannot use
# is the caller's error (422), never a 500.
def cases(ref_target: str) -> list[tuple]:
    slow_regex = [
        ("regex label (a+)+$", "regex", EVIL_TEXT, EVIL_RE, 200, 0.0),
        ("regex label (x+x+)+y", "regex", "x" * 40, "(x+x+)+y", 200, 0.0),
        ("regex label (.*a){25}", "regex", "a" * 40, "(.*a){25}b", 200, 0.0),
        ("json pattern ^(a+)+$", "json", json.dumps(EVIL_TEXT), {"type": "string", "pattern": "^(a+)+$"}, 200, 0.0),
    ]
    math = [
        ("unit-word backtracking", "math", "The final answer is 42 Pneumonoultramicroscopicsilicovolcanoconiosis!", "42", 200, 0.0),
        ("tower 10^10^10", "math", "\\boxed{10^10^10}", "1", 200, 0.0),
        ("tower 9^64^64", "math", "\\boxed{9^64^64}", "1", 200, 0.0),
        ("power 9^(64*64*64*64*64)", "math", "\\boxed{9^(64*64*64*64*64)}", "1", 200, 0.0),
        ("expansion (a+..+h)^64", "math", "\\boxed{(a+b+c+d+e+f+g+h)^64}", "1", 200, 0.0),
        ("tower in the label's variable", "math", "\\boxed{x^(10^10)}", "x", 200, 0.0),
        ("towers 2^2^2^2^2^2", "math", "\\boxed{2^2^2^2^2^2}", "4", 200, 0.0),
        ("factorial", "math", "\\boxed{100000!}", "1", 200, 0.0),
        ("nested parentheses", "math", "\\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}", "1", 200, 0.0),
        ("nested fractions", "math", "\\boxed{" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "}", "1", 200, 0.0),
        ("many boxes", "math", "\\boxed{" * 50_000, "1", 200, 0.0),
        # Long, but ending in the right number: the last-number rule (veRL's too) credits them.
        ("'1a ' x 50k", "math", "1a " * 50_000, "1", 200, 1.0),
        ("#### and 200k nines", "math", "#### " + "9" * 200_000, "1", 200, 0.0),
        ("the answer is + 200k spaces", "math", "The answer is" + " " * 200_000 + "x", "1", 200, 0.0),
        ("unit words x 20k", "math", "5" + " apples" * 20_000 + "!", "5", 200, 1.0),
        ("1 MB of digits", "math", "7" * 1_000_000, "7", 200, 0.0),
        ("sqrt tower", "math", "\\boxed{" + "\\sqrt{" * 200 + "2" + "}" * 200 + "}", "2", 200, 0.0),
        ("a non-number reference", "math", "\\boxed{5}", "hello world", 200, 0.0),
        ("a 1 MB reference", "math", "\\boxed{5}", "5" * 1_000_000, 422, None),
        ("an honest answer among them", "math", "So the total is \\boxed{42}.", "42", 200, 1.0),
    ]
    choice = [
        ("answer + 60k spaces", "choice", "answer" + " " * 60_000 + "z", "B", 200, 0.0),
        ("200k parentheses", "choice", "(" * 200_000, "B", 200, 0.0),
        ("'Answer: ' x 30k", "choice", "Answer: " * 30_000, "B", 200, 0.0),
        ("'(B' x 50k", "choice", "(B" * 50_000, "B", 200, 0.0),
        ("an honest choice", "choice", "The answer is (B).", "B", 200, 1.0),
        ("a reference that is no letter", "choice", "(B)", "banana", 422, None),
    ]
    regex = [
        ("an invalid regex label", "regex", "anything", "(unclosed", 422, None),
        ("a 1 MB regex label", "regex", "anything", "a" * 1_000_000, 422, None),
        ("200k newlines against ^$", "regex", "\n" * 200_000 + "x", "(?m)^y$", 200, 0.0),
    ]
    json_schema = [
        ("$ref to a local URL", "json", '"x"', {"$ref": f"{ref_target}/schema.json"}, 422, None),
        ("$ref to a local URL, nested", "json", '{"a": 1}', {"properties": {"a": {"$ref": f"{ref_target}/a.json"}}}, 422, None),
        ("$ref to file:///etc/passwd", "json", '"x"', {"$ref": "file:///etc/passwd"}, 422, None),
        ("$ref: '#'", "json", '{"a": {"a": {}}}', {"properties": {"a": {"$ref": "#"}}}, 200, 1.0),
        ("$ref: '#' alone", "json", '"x"', {"$ref": "#"}, 422, None),
        ("$ref to a non-schema fragment", "json", '"x"', {"$ref": "#/nothing/here"}, 422, None),
        ("a 400-deep label schema", "json", '{"x": 1}', deep(400, {"type": "string"}), 422, None),
        ("uniqueItems against 40k objects", "json", json.dumps([{"k": i} for i in range(40_000)]), {"uniqueItems": True}, 200, 0.0),
        ("NaN against an impossible range", "json", "NaN", {"type": "number", "minimum": 1, "maximum": 0}, 200, 0.0),
        ("Infinity", "json", "Infinity", {"type": "number"}, 200, 0.0),
        ("1e999 against an impossible range", "json", "1e999", {"type": "number", "minimum": 1, "maximum": 0}, 200, 0.0),
        ("a reply nested 100k deep", "json", "[" * 100_000 + "]" * 100_000, {"type": "array"}, 200, 0.0),
        ("30k json fences", "json", "```json\n" * 30_000, {"type": "object"}, 200, 0.0),
        ("an honest document", "json", '{"age": 36}', {"type": "object", "properties": {"age": {"type": "integer"}}}, 200, 1.0),
    ]
    return slow_regex + math + choice + regex + json_schema


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "spec.yaml").write_text(SPEC)
    options = ["--model", "minilm-l6", "--reward-spec", str(folder / "spec.yaml")]
    with served_process(options, folder / "serve.log") as (base, process):
        yield base, process, folder / "serve.log"


def request(base: str, case: tuple) -> tuple[tuple, float, httpx.Response]:
    name, task, reply, reference, *_ = case
    body = {
        "conversations": [[{"role": "user", "content": "Solve it."}, {"role": "assistant", "content": reply}]],
        "reference": [{"task": task, "reference": reference}], "truncate": True,
    }  # fmt: skip
    start = time.monotonic()
    answer = httpx.post(f"{base}/v1/score", json=body, timeout=60)
    return case, time.monotonic() - start, answer


def tree_rss(process) -> int:
    root = psutil.Process(process.pid)
    total = 0
    for member in [root, *root.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def test_hostile_verifier_inputs_against_a_live_server(server, ref_target):
    base, process, log_path = server
    all_cases = cases(ref_target)
    assert len(all_cases) >= 40
    health: list[float] = []
    peak_rss = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            start = time.monotonic()
            try:
                status = httpx.get(f"{base}/health", timeout=5).status_code
            except httpx.HTTPError:
                status = 0
            health.append(time.monotonic() - start if status == 200 else float("inf"))
            peak_rss[0] = max(peak_rss[0], tree_rss(process))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            results = list(pool.map(lambda case: request(base, case), all_cases))
    finally:
        done.set()
        watcher.join(10)

    problems = []
    for (name, _, _, _, status, rule), elapsed, answer in results:
        limit = TIME_S  # one item per request: the per-item limit
        if answer.status_code != status:
            problems.append(f"{name}: {answer.status_code} {answer.text[:200]}")
        elif status == 200 and answer.json()["components"]["rule"] != [rule]:
            problems.append(f"{name}: rule {answer.json()['components']['rule']} ({answer.json()['reasons']})")
        if elapsed > limit + 1.0:
            problems.append(f"{name}: answered in {elapsed:.2f} s, over {limit + 1.0:g} s")
    assert problems == [], "\n".join(problems)
    assert max(health) < 1.0 and len(health) >= 5
    assert peak_rss[0] < RSS_BOUND_GB * 2**30, f"{peak_rss[0] / 2**30:.2f} GB"
    assert Counting.hits == []
    log = log_path.read_text()
    assert "Traceback" not in log and " 500 " not in log

    tree = psutil.Process(process.pid).children(recursive=True)
    assert sum("synpref.reward.sandbox" in " ".join(p.cmdline()) for p in tree) == WORKERS + 1  # and a spare
    start = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(5)
    assert time.monotonic() - start < 5.0
    gone, alive = psutil.wait_procs(tree, timeout=2)
    assert alive == []  # HTTP workers and verifier processes end with the server
    print(f"\nfuzz: {len(results)} requests, slowest {max(r[1] for r in results):.2f} s, /health max {max(health) * 1000:.0f} ms "
          f"over {len(health)} probes, peak RSS of the server tree {peak_rss[0] / 2**30:.2f} GB")  # fmt: skip


def test_reward_score_refuses_an_outside_ref_without_a_traceback(tmp_path, ref_target):
    """`synpref reward score` on a file whose label points `$ref` at a URL: one line, exit 2."""
    (tmp_path / "spec.yaml").write_text(SPEC)
    line = {"prompt": "Give JSON.", "response": '"x"', "task": "json", "reference": {"$ref": "file:///etc/passwd"}}
    other = {**line, "reference": {"$ref": f"{ref_target}/x.json"}}
    (tmp_path / "data.jsonl").write_text(json.dumps(line) + "\n" + json.dumps(other) + "\n")
    out = subprocess.run(
        [sys.executable, "-m", "synpref", "reward", "score", "--model", "minilm-l6", "--spec", str(tmp_path / "spec.yaml"),
         "--data", str(tmp_path / "data.jsonl"), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert (out.returncode, out.stderr.splitlines()[-1]) == (2, "error: line 1: $ref to an outside URI is not allowed: file:///etc/passwd")
    assert "Traceback" not in out.stderr + out.stdout
    assert Counting.hits == []


def test_a_killed_server_leaves_no_process_behind(tmp_path):
    """SIGKILL of the model owner (as the kernel's OOM killer sends it): its HTTP worker and that
    worker's verifier processes end with it."""
    (tmp_path / "spec.yaml").write_text(SPEC)
    options = ["--model", "minilm-l6", "--reward-spec", str(tmp_path / "spec.yaml"), "--workers", "1"]
    with served_process(options, tmp_path / "serve.log") as (base, process):
        owner = psutil.Process(process.pid)
        tree = owner.children(recursive=True)
        assert sum("synpref.reward.sandbox" in " ".join(p.cmdline()) for p in tree) == WORKERS + 1
        owner.kill()
        gone, alive = psutil.wait_procs(tree, timeout=3)
        assert alive == []
