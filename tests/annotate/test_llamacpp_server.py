"""The annotation engine against a real OpenAI-compatible server: llama.cpp serving the bundled
SmolLM2 GGUF (`synpref judges serve-local`, a child process on a free loopback port).

Server-side figures come from the server's own Prometheus counters at /metrics:
`llamacpp:tokens_predicted_total` grows by exactly the completion tokens of the requests it
answered, so "no request was sent" and "only these requests were sent" are checked on the
server, not only in our own accounting.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from synpref.annotate import llamacpp
from synpref.annotate.config import JobConfig
from synpref.annotate.runner import run_job
from synpref.annotate.store import samples_log, task_dir
from synpref.data.models import Attributes
from tests.annotate.conftest import make_pairs_workspace

pytestmark = pytest.mark.skipif(
    not llamacpp.available(), reason="the llamacpp extra is not installed (pip install 'synpref[llamacpp]')"
)

PREDICTED = "llamacpp:tokens_predicted_total"
PROMPT, PROMPT_CACHED = "llamacpp:prompt_tokens_total", "llamacpp:prompt_tokens_cached_total"
POOL_PAIRS = 6  # tests/annotate/conftest.py


@pytest.fixture(scope="module")
def server():
    with llamacpp.LocalJudgeServer(parallel=2, context=2048) as running:
        yield running


def job(server, **judge) -> JobConfig:
    return JobConfig(judges=[llamacpp.judge_config(server.base_url, concurrency=2, max_tokens=200, **judge)], examples=0)


def busy_slots_per_decode(before: dict[str, float], after: dict[str, float]) -> float:
    """Slots decoding together, on average over the decode calls between two readings (the
    server reports the running average and the number of calls)."""
    def busy(metrics):
        return metrics["llamacpp:n_busy_slots_per_decode"] * metrics["llamacpp:n_decode_total"]

    return (busy(after) - busy(before)) / (after["llamacpp:n_decode_total"] - before["llamacpp:n_decode_total"])


def settled_metrics(server) -> dict[str, float]:
    """Counters once no request is being processed (an aborted request may still be decoding)."""
    deadline = time.monotonic() + 60
    while (metrics := server.metrics()).get("llamacpp:requests_processing", 0) > 0:
        assert time.monotonic() < deadline, "the server stayed busy"
        time.sleep(0.1)
    return metrics


@pytest.fixture(scope="module")
def annotated(server, tmp_path_factory):
    """The 6 pool pairs' attributes written once through the server, with its counters around it."""
    workspace = make_pairs_workspace(tmp_path_factory.mktemp("annotated"))
    before = settled_metrics(server)
    summary = run_job(workspace, "attributes", job(server), split="pool")
    return workspace, summary, before, settled_metrics(server)


def test_every_attribute_answer_parses_and_usage_matches_the_server(annotated):
    workspace, summary, before, after = annotated
    assert (summary.pairs, summary.done, summary.failed, summary.request_failed, summary.cached) == (POOL_PAIRS, POOL_PAIRS, 0, 0, 0)
    records = samples_log(workspace.root, "attributes").read()
    assert len(records) == POOL_PAIRS and all(r["ok"] for r in records)
    for record in records:
        Attributes.model_validate(record["answer"])
    usage = summary.usage[llamacpp.MODEL_NAME]
    assert usage["requests"] == POOL_PAIRS  # constrained decoding: no answer needed a retry
    assert usage["completion_tokens"] == sum(r["completion_tokens"] for r in records)
    assert usage["prompt_tokens"] == sum(r["prompt_tokens"] for r in records)
    assert all(r["prompt_tokens"] > 100 and r["completion_tokens"] > 10 for r in records)
    # The server decoded exactly the tokens its `usage` fields reported, and read exactly the
    # prompt tokens reported (computed or taken from its prompt cache).
    assert after[PREDICTED] - before[PREDICTED] == usage["completion_tokens"]
    assert (after[PROMPT] + after[PROMPT_CACHED]) - (before[PROMPT] + before[PROMPT_CACHED]) == usage["prompt_tokens"]
    # With concurrency 2 the server had two requests at once some of the time (see the kill
    # test, where concurrency 1 gives exactly one).
    assert busy_slots_per_decode(before, after) > 1.0


def test_a_rerun_sends_nothing_and_a_lost_result_log_is_answered_from_the_cache(annotated, server):
    workspace, _summary, _before, after = annotated
    rerun = run_job(workspace, "attributes", job(server), split="pool")
    assert (rerun.already_done, rerun.done, rerun.usage) == (POOL_PAIRS, 0, {})

    shutil.rmtree(task_dir(workspace.root, "attributes"))  # results gone, request cache kept
    cached = run_job(workspace, "attributes", job(server), split="pool")
    assert (cached.already_done, cached.done, cached.cached, cached.usage) == (0, POOL_PAIRS, POOL_PAIRS, {})
    assert settled_metrics(server)[PREDICTED] == after[PREDICTED]  # the server decoded nothing


def test_sigkill_mid_job_then_rerun_sends_only_the_unanswered_requests(pairs_workspace, server, tmp_path):
    judge = llamacpp.judge_config(server.base_url, concurrency=1, max_tokens=200).model_dump()
    judges = tmp_path / "judges.yaml"
    judges.write_text(yaml.safe_dump({"judges": [judge], "examples": 0}))
    command = [sys.executable, "-m", "synpref", "annotate", "attributes", "-w", str(pairs_workspace.root),
               "--judges", str(judges), "--split", "pool"]
    log = samples_log(pairs_workspace.root, "attributes")

    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(log.read()) < 2:
        assert first.poll() is None, first.stderr.read().decode()
        assert time.monotonic() < deadline, "no answer recorded in time"
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    answered = {r["pair_id"] for r in log.read()}
    assert 2 <= len(answered) < POOL_PAIRS, "the job finished before it could be killed"
    before = settled_metrics(server)

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    records = log.read()
    assert sorted(r["pair_id"] for r in records) == sorted({r["pair_id"] for r in records})  # one each
    assert len(records) == POOL_PAIRS and all(r["ok"] for r in records)
    new = [r for r in records if r["pair_id"] not in answered]
    assert len(new) == POOL_PAIRS - len(answered)
    assert f"{llamacpp.MODEL_NAME}: {len(new)} requests" in rerun.stdout
    # The server decoded the unanswered requests and nothing else, one at a time: the judge's
    # concurrency limit of 1 held although the server has two slots.
    after = settled_metrics(server)
    assert after[PREDICTED] - before[PREDICTED] == sum(r["completion_tokens"] for r in new)
    assert busy_slots_per_decode(before, after) == pytest.approx(1.0, abs=1e-4)  # /metrics prints 6 digits


def test_the_server_refuses_a_client_without_its_key_and_other_origins(server):
    request = urllib.request.Request(server.base_url + "/models")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    # A web page elsewhere gets no Access-Control-Allow-Origin it could match, so its browser
    # keeps the answer from it.
    key = os.environ[llamacpp.API_KEY_ENV]
    request = urllib.request.Request(server.base_url + "/models", headers={"Authorization": f"Bearer {key}", "Origin": "http://evil.example"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert response.headers.get("Access-Control-Allow-Origin", "") == ""


def test_serve_local_writes_a_judges_file_that_points_at_it_and_stops_on_sigterm(tmp_path):
    from synpref.annotate.config import load_job_config

    judges, ready = tmp_path / "judges.yaml", tmp_path / "url"
    command = [sys.executable, "-m", "synpref", "judges", "serve-local", "--port", "0", "--parallel", "1",
               "--context", "512", "--judges-out", str(judges), "--ready-file", str(ready)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base_url = _ready_url(process, ready)
        config = load_job_config(judges)
        judge = config.judges[0]
        assert (judge.backend, judge.model, judge.base_url, judge.api_key_env) == ("openai", llamacpp.MODEL_NAME, base_url, None)
        assert (judge.structured_output, judge.max_tokens, judge.concurrency) == ("json_schema", 448, 1)
        with urllib.request.urlopen(base_url + "/models", timeout=10) as response:  # no key asked for
            assert llamacpp.MODEL_NAME in response.read().decode()
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    expected = f"serving SmolLM2-135M-Instruct.Q4_1.gguf at {base_url}; judges file: {judges} (Ctrl-C stops)"
    assert expected in output.splitlines()


GRACE_S = 5.0  # llamacpp.serve's default


def _ready_url(process: subprocess.Popen, ready: Path) -> str:
    """The base URL `serve-local --ready-file` writes once its server answers."""
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    return ready.read_text()


def _chat(base_url: str, max_tokens: int) -> tuple[object, float]:
    """(status code, or the error the client got; when) of one chat completion."""
    body = json.dumps({"model": llamacpp.MODEL_NAME, "messages": [{"role": "user", "content": "Tell me a long story."}],
                       "max_tokens": max_tokens, "ignore_eos": True}).encode()  # fmt: skip
    request = urllib.request.Request(base_url + "/chat/completions", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=200) as response:
            json.loads(response.read())
            return response.status, time.monotonic()
    except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as error:
        return error, time.monotonic()


def test_sigterm_lets_a_short_generation_finish_and_hangs_up_on_a_long_one(tmp_path):
    """SIGTERM with a generation in flight closed the port and left that request unanswered; the
    process exited only when its client gave up (200 s)."""
    ready = tmp_path / "url"
    command = [sys.executable, "-m", "synpref", "judges", "serve-local", "--port", "0", "--parallel", "2",
               "--context", "4096", "--ready-file", str(ready)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base_url = _ready_url(process, ready)
        deadline = time.monotonic() + 120
        with ThreadPoolExecutor(max_workers=2) as pool:
            short, long = pool.submit(_chat, base_url, 10), pool.submit(_chat, base_url, 4000)  # a second; minutes
            while _processing(base_url) < 2:
                assert time.monotonic() < deadline, "the requests did not start"
                time.sleep(0.05)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(ConnectionRefusedError):  # no new request once stopping
                socket.create_connection(("127.0.0.1", int(base_url.rsplit(":", 1)[1].removesuffix("/v1"))), timeout=2)
            (short_outcome, _), (long_outcome, long_at) = short.result(timeout=GRACE_S + 3), long.result(timeout=GRACE_S + 3)
        output, _ = process.communicate(timeout=GRACE_S + 3 - (time.monotonic() - signalled))
    finally:
        if process.poll() is None:
            process.kill()
    assert short_outcome == 200, output
    assert isinstance(long_outcome, (ConnectionError, http.client.RemoteDisconnected, urllib.error.URLError)), long_outcome
    assert GRACE_S <= long_at - signalled < GRACE_S + 2
    assert process.returncode == 0, output
    assert "stopped with 1 request(s) unfinished after 5 s; their connections were closed" in output.splitlines()


def _processing(base_url: str) -> float:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.split()[1]) for line in lines if line.startswith("llamacpp:requests_processing "))
