"""Issue 26: verifiers run in worker processes that a hostile reply cannot take down with it.

User patterns (a regex label, a JSON-schema `pattern`) may backtrack for ever in C code that no
thread can stop; the pool kills the worker past the item's time limit and goes on."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from synpref.errors import SynprefError
from synpref.reward.combine import BadLabel, HybridReward, transform_rm
from synpref.reward.sandbox import Cancelled, VerifierPool
from synpref.reward.spec import RewardSpec, RmTransform, load_spec

EVIL = ("a" * 40 + "!", "(a+)+$")  # exponential backtracking in Python's re: hours at 40 a's
SPEC = {
    "default_task": "regex",
    "tasks": {"regex": {"verifier": "regex", "combine": "rule"}, "json": {"verifier": "json_schema", "combine": "rule"},
              "math": {"verifier": "math", "combine": "rule"}},
    "limits": {"time_s": 1.0, "workers": 2},
}  # fmt: skip


@pytest.fixture(scope="module")
def pool():
    pool = VerifierPool(RewardSpec.model_validate(SPEC))
    pool.start()
    yield pool
    pool.close()


def outcomes(verdicts) -> list[tuple[str, str]]:
    return [(v.outcome.value, v.reason) for v in verdicts]


def test_a_hanging_item_costs_its_own_verdict_and_the_batch_goes_on(pool):
    replaced = pool.replaced
    start = time.perf_counter()
    verdicts = pool.verify([("regex", "ok fine", "fine"), ("regex", *EVIL), ("regex", "hello", "hel+o"), ("math", "\\boxed{4}", "4")])
    elapsed = time.perf_counter() - start
    assert outcomes(verdicts) == [
        ("correct", "matches fine"), ("unparseable", "time limit (1 s)"), ("correct", "matches hel+o"), ("correct", "4 equals the reference"),
    ]  # fmt: skip
    assert pool.replaced == replaced + 1
    assert 1.0 <= elapsed < 2.0  # the limit, then the spare worker takes over at once


def test_a_user_json_schema_pattern_is_under_the_same_limit(pool):
    schema = {"type": "string", "pattern": "^(a+)+$"}
    verdicts = pool.verify([("json", '"' + EVIL[0] + '"', schema), ("json", '"aaa"', schema)])
    assert outcomes(verdicts) == [("unparseable", "time limit (1 s)"), ("correct", "valid against the schema")]


def test_concurrent_callers_each_get_their_own_verdicts(pool):
    results: dict[int, list] = {}

    def call(index: int) -> None:
        items = [("regex", *EVIL)] if index == 0 else [("regex", f"reply {index}", str(index))]
        results[index] = outcomes(pool.verify(items))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results[0] == [("unparseable", "time limit (1 s)")]
    assert [results[i] for i in range(1, 6)] == [[("correct", f"matches {i}")] for i in range(1, 6)]
    assert time.perf_counter() - start < 2.5


def test_a_deadline_or_a_cancel_drops_the_work(pool):
    start = time.perf_counter()
    with pytest.raises(Cancelled, match="the deadline passed"):
        pool.verify([("regex", *EVIL)] * 3, deadline=time.monotonic() + 0.3)
    assert time.perf_counter() - start < 0.6
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(Cancelled, match="the caller gave up"):
        pool.verify([("regex", *EVIL)], cancel=cancel)
    assert outcomes(pool.verify([("regex", "still here", "here")])) == [("correct", "matches here")]


def test_a_worker_that_dies_costs_its_item_only(pool):
    """Killed from outside mid-item (as the kernel's OOM killer would)."""

    def kill_the_busy_worker() -> None:
        time.sleep(0.3)
        for worker in list(pool._workers):
            if worker.position()[0] == 0 and worker.alive():
                os.kill(worker.process.pid, signal.SIGKILL)

    threading.Thread(target=kill_the_busy_worker).start()
    verdicts = pool.verify([("regex", *EVIL), ("regex", "after", "after")])
    assert outcomes(verdicts)[1] == ("correct", "matches after")
    assert outcomes(verdicts)[0] in {("unparseable", "the verifier process died"), ("unparseable", "time limit (1 s)")}


def test_bad_references_name_their_item(pool):
    hybrid = HybridReward(RewardSpec.model_validate(SPEC))
    try:
        with pytest.raises(BadLabel, match=r"^item 1: invalid regular expression") as raised:
            hybrid.many([0.0, 0.0], ["x", "y"], ["x", "(unclosed"])
        assert raised.value.index == 1
    finally:
        hybrid.close()


def test_closing_kills_busy_workers_at_once():
    pool = VerifierPool(RewardSpec.model_validate({**SPEC, "limits": {"time_s": 30.0}}))
    errors = []
    thread = threading.Thread(target=lambda: errors.append(pytest.raises(Cancelled, pool.verify, [("regex", *EVIL)])))
    thread.start()
    time.sleep(1.5)  # the worker started and is stuck in the regex
    processes = [w.process for w in pool._workers]
    start = time.perf_counter()
    pool.close()
    thread.join(5)
    assert time.perf_counter() - start < 1.0 and not thread.is_alive()
    assert [p.poll() for p in processes] == [-signal.SIGKILL] * len(processes)


def test_the_memory_limit_fails_the_item_not_the_worker_loop():
    program = (
        "from synpref.reward.sandbox import _limit_memory, _verify_one\n"
        "class Greedy:\n"
        "    def verify(self, response, reference): return bytearray(2 * 1024**3)\n"
        "_limit_memory(512)\n"
        "print(_verify_one({'t': Greedy()}, 't', 'x', 'y'))\n"
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "['verdict', 'unparseable', 'memory limit', None]", out.stderr


def test_the_worker_does_not_rerun_the_callers_main_module(tmp_path):
    """A script without a `__main__` guard (multiprocessing's spawn would re-run it in a child)."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from synpref.reward.combine import HybridReward\nfrom synpref.reward.spec import RewardSpec\n"
        f"hybrid = HybridReward(RewardSpec.model_validate({SPEC!r}))\n"
        "print(hybrid.components(0.0, 'abc', 'b').rule)\nhybrid.close()\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert (out.stdout, out.returncode) == ("1.0\n", 0), out.stderr


# ------------------------------------------------------------------------ spec numbers (LOW)


def test_a_spec_number_that_is_not_finite_is_refused(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("default_task: math\ntasks:\n  math: {verifier: math, w_rm: .nan}\n")
    with pytest.raises(SynprefError, match=r"tasks\.math\.w_rm: Input should be a finite number"):
        load_spec(path)
    path.write_text("default_task: math\ntasks:\n  math: {verifier: math, rm: {transform: sigmoid, threshold: 0, temperature: 1e-300}}\n")
    with pytest.raises(SynprefError, match=r"tasks\.math\.rm\.temperature: Input should be greater than or equal to 0.000001"):
        load_spec(path)


def test_the_sigmoid_transform_never_overflows():
    sharp = RmTransform(transform="sigmoid", threshold=0.0, temperature=1e-6)
    assert [transform_rm(s, sharp) for s in (-1e6, -1.0, 0.0, 1.0, 1e6, math.inf, -math.inf)] == [0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0]


def test_references_json_cannot_carry_natively_still_reach_the_worker(pool):
    """NaN and integers past 64 bits are valid in a Python JSON body; the pool's messages carry them."""
    verdicts = pool.verify([("regex", "n 123", "\\d+"), ("math", f"\\boxed{{{2**70}}}", 2**70), ("math", "\\boxed{1}", math.nan)])
    assert [v.outcome.value for v in verdicts] == ["correct", "correct", "incorrect"]


def test_workers_outlive_the_thread_that_started_them_and_die_with_the_process(tmp_path):
    """A server replaces workers from short-lived pool threads; the kernel's parent-death signal
    follows the starting thread, so workers are started from one long-lived thread instead."""
    pool = VerifierPool(RewardSpec.model_validate(SPEC))
    try:
        starter = threading.Thread(target=pool.verify, args=([("regex", "x", "x")],))
        starter.start()
        starter.join(30)
        time.sleep(0.5)
        assert [w.alive() for w in pool._workers] == [True]
        assert outcomes(pool.verify([("regex", "y", "y")])) == [("correct", "matches y")] and pool.replaced == 0
    finally:
        pool.close()
    program = (
        "import sys, threading, time\nfrom synpref.reward.sandbox import VerifierPool\nfrom synpref.reward.spec import RewardSpec\n"
        f"pool = VerifierPool(RewardSpec.model_validate({ {**SPEC, 'limits': {'time_s': 60.0}} !r}))\n"
        f"threading.Thread(target=pool.verify, args=([('regex', {EVIL[0]!r}, {EVIL[1]!r})],), daemon=True).start()\n"
        "time.sleep(2)\nprint(*[w.process.pid for w in pool._workers], flush=True)\ntime.sleep(60)\n"
    )  # fmt: skip
    parent = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    pids = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(pids) == 1
    parent.kill()  # SIGKILL: no close(), no atexit
    parent.wait(10)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and _running(pids[0]):
        time.sleep(0.05)
    assert not _running(pids[0])  # stuck in the regex, and still gone with its parent


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
