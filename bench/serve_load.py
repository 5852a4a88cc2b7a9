"""Load on the reward server: served throughput against the scorer alone, on the same inputs.

The server is a `synpref serve` subprocess; the load generator is another process: `wrk` (a C
client, `apt-get install wrk`) with a Lua script posting the profile's bodies in turn, or, without
wrk, a Python process with the same number of concurrent connections. Per input profile:
`pool`  single-turn pool conversations of moderate length (prompt < 600, reply < 800 chars),
`short` one-line arithmetic questions and answers (~15 tokens; e.g. verifiable-reward RL):

1. the scorer alone (a subprocess, no HTTP): `RewardScorer.score` on the profile's
   conversations, 128 per call (a server's batches under load hold 30-140), for D/2 s, with
   torch's default threads and with the server's model threads; the better rate counts;
2. closed loop: C concurrent connections, each sending one conversation per request, for D s,
   against `synpref serve` with its defaults (optionally also with batching off);
3. the scorer alone again; the ratio is served / the mean of 1 and 3 (other jobs on a shared
   machine move both; measuring around the served run keeps the ratio fair);
4. burst (first profile, `--burst-seconds` > 0): open loop at 4x the served throughput with a
   queue of ~2 s of measured work, counting 200s, 503s and anything else; then /health must
   answer "ok".

    python bench/serve_load.py [--model minilm-l6] [--profiles pool,short] [--clients 64]
                               [--seconds 30] [--workers 1] [--one-at-a-time] [--burst-seconds 10] [--bf16]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def short_conversations(limit: int = 2000) -> list[list[dict]]:
    return [[{"role": "user", "content": f"What is {a} + {a}?"}, {"role": "assistant", "content": f"It is {2 * a}."}]
            for a in range(limit)]


def conversations(limit: int = 2000) -> list[list[dict]]:
    """Single-turn pool conversations of moderate length (or the short ones without the data)."""
    found = []
    if (SHARED / "pool.jsonl.gz").exists():
        for line in gzip.open(SHARED / "pool.jsonl.gz", "rt"):
            record = json.loads(line)
            history = record["conversation"]
            if len(history) == 1 and len(history[0]["content"]) < 600 and len(record["chosen"]["content"]) < 800:
                found.append(history + [record["chosen"]])
            if len(found) >= limit:
                break
    return found or short_conversations(limit)


def start_server(model: str, options: list[str], max_queue: int, bf16: bool = False) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    synpref = str(Path(sys.executable).with_name("synpref"))
    command = [synpref, "serve", "--model", model, "--port", str(port), "--max-queue", str(max_queue),
               "--max-length", "512", "--request-timeout-s", "120", *options]
    if bf16:
        command.append("--bf16")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server did not start: {' '.join(command)}")
        time.sleep(0.5)


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=60)


ALONE = """
import json, sys, time, torch
from synpref.rm.scorer import RewardScorer
data, seconds, threads, bf16 = json.load(open(sys.argv[1])), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
if threads:
    torch.set_num_threads(threads)
scorer = RewardScorer.from_pretrained(sys.argv[5], max_length=512, dtype=torch.bfloat16 if bf16 else None, show_progress=False)
scorer.score(data[:64])  # warm-up
scored, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:  # calls of 128 inputs, each sorted by length into forward passes
    chunk = data[scored % len(data) :][:128]
    scorer.score(chunk)
    scored += len(chunk)
print(json.dumps({"rate": scored / (time.perf_counter() - start), "threads": torch.get_num_threads()}))
"""


def scorer_alone(model: str, data_file: Path, seconds: float, threads: int, bf16: bool) -> dict:
    """`RewardScorer.score` over all the inputs, in a process of its own (0 threads: torch's default)."""
    command = [sys.executable, "-c", ALONE, str(data_file), str(seconds), str(threads), "1" if bf16 else "0", model]
    output = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    return json.loads(output.stdout.strip().splitlines()[-1])


def best_alone(args, profile: str, data_file: Path, server_threads: int, when: str) -> float:
    """The scorer alone with torch's default threads and with the server's; the better rate."""
    rates = [scorer_alone(args.model, data_file, args.seconds / 2, threads, args.bf16) for threads in (0, server_threads)]
    for r in rates:
        print(f"[{profile}] scorer alone ({when}, {r['threads']} threads): {r['rate']:.1f} sequences/s", flush=True)
    return max(r["rate"] for r in rates)


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {}
for line in io.lines("%s") do bodies[#bodies + 1] = line end
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/v1/score", nil, bodies[(counter %% #bodies) + 1])
end
"""


def closed_loop(url: str, data: list, clients: int, seconds: float, folder: Path) -> dict:
    """C connections, each one request at a time, driven by wrk or else by a Python process."""
    bodies = folder / "bodies.jsonl"
    bodies.write_text("".join(json.dumps({"conversations": [c]}) + "\n" for c in data))
    if shutil.which("wrk"):
        script = folder / "post.lua"
        script.write_text(WRK_SCRIPT % bodies)
        output = subprocess.run(
            ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "60s", "--latency", "-s", str(script), url],
            capture_output=True, text=True, check=True,
        ).stdout
        return parse_wrk(output) | {"client": "wrk"}
    command = [sys.executable, __file__, "--python-client", url, str(bodies), str(clients), str(seconds)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1]) | {"client": "python"}


def parse_wrk(output: str) -> dict:
    import re

    requests, elapsed = re.search(r"(\d+) requests in ([\d.]+)(m?s)", output).groups()[:2]
    unit = re.search(r"\d+ requests in [\d.]+(m?s)", output).group(1)
    elapsed = float(elapsed) / (1000 if unit == "ms" else 1)
    failed = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", output)) else 0
    errors = re.search(r"Socket errors: (.*)", output)

    def percentile(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", output, re.M).groups()
        return float(value) * {"us": 1e-3, "ms": 1, "s": 1000}[unit]

    return {
        "requests": int(requests), "throughput": (int(requests) - failed) / elapsed, "failed": failed,
        "p50_ms": percentile("50"), "p99_ms": percentile("99"), "socket_errors": errors.group(1) if errors else "none",
    }  # fmt: skip


async def python_clients(url: str, data: list, clients: int, seconds: float) -> dict:
    """The closed loop in Python (httpx), for machines without wrk."""
    latencies, statuses = [], {}
    stop = time.monotonic() + seconds

    async def client(worker: int, http: httpx.AsyncClient) -> None:
        index = worker
        while time.monotonic() < stop:
            start = time.perf_counter()
            response = await http.post(f"{url}/v1/score", json={"conversations": [data[index % len(data)]]})
            latencies.append(time.perf_counter() - start)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            index += clients

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=180, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(w, http) for w in range(clients)))
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "throughput": statuses.get(200, 0) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "failed": len(latencies) - statuses.get(200, 0),
    }


async def burst(url: str, data: list, rate: float, seconds: float) -> dict:
    """Open loop: requests start on schedule whether or not earlier ones finished."""
    statuses: dict[str, int] = {}

    async def one(index: int, http: httpx.AsyncClient) -> None:
        try:
            response = await http.post(f"{url}/v1/score", json={"conversations": [data[index % len(data)]]})
            key = str(response.status_code)
        except httpx.HTTPError as error:  # a refused or dropped connection would land here
            key = type(error).__name__
        statuses[key] = statuses.get(key, 0) + 1

    tasks = []
    async with httpx.AsyncClient(timeout=180, limits=httpx.Limits(max_connections=1000)) as http:
        start = time.monotonic()
        sent = 0
        while time.monotonic() - start < seconds:
            due = int((time.monotonic() - start) * rate) + 1
            while sent < due:
                tasks.append(asyncio.create_task(one(sent, http)))
                sent += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
    return {"sent": sent, "statuses": statuses}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--python-client":  # the load generator without wrk
        url, bodies, clients, seconds = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
        data = [json.loads(line)["conversations"][0] for line in open(bodies)]
        print(json.dumps(asyncio.run(python_clients(url, data, clients, seconds))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--profiles", default="pool,short", help="comma-separated: pool, short")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workers", type=int, default=None, help="the server's --workers (default: its own default)")
    parser.add_argument("--one-at-a-time", action="store_true", help="also serve with batching off (one request per batch)")
    parser.add_argument("--burst-seconds", type=float, default=10, help="0: no burst")
    parser.add_argument("--burst-queue", type=int, default=0, help="server queue (sequences) in the burst; default ~2 s of measured work")
    parser.add_argument("--bf16", action="store_true", help="the server and the scorer alone score in bfloat16")
    args = parser.parse_args()
    profiles = {"pool": conversations, "short": short_conversations}
    chosen = args.profiles.split(",")
    if unknown := set(chosen) - set(profiles):
        raise SystemExit(f"unknown profile(s) {sorted(unknown)}; choose from {sorted(profiles)}")
    options = [] if args.workers is None else ["--workers", str(args.workers)]
    # The server's model threads: one per core less one per HTTP process (synpref.cli._model_threads).
    cores = len(os.sched_getaffinity(0))
    server_threads = max(1, cores - max(1 if args.workers is None else args.workers, 1))

    measured = {}
    with tempfile.TemporaryDirectory() as folder:
        for profile in chosen:
            data = profiles[profile]()
            data_file = Path(folder) / f"{profile}.json"
            data_file.write_text(json.dumps(data))
            print(f"[{profile}] model {args.model}{' bf16' if args.bf16 else ''}; {len(data):,} distinct conversations; "
                  f"{args.clients} connections for {args.seconds:g} s; {cores} cores", flush=True)

            before = best_alone(args, profile, data_file, server_threads, "before")
            servers = [("served", options)] + ([("one at a time", [*options, "--max-batch-tokens", "1", "--max-wait-ms", "0"])] if args.one_at_a_time else [])
            results = {}
            for name, server_options in servers:
                process, url = start_server(args.model, server_options, max_queue=4096, bf16=args.bf16)
                try:
                    results[name] = closed_loop(url, data, args.clients, args.seconds, Path(folder))
                finally:
                    stop_server(process)
                r = results[name]
                print(f"[{profile}] {name:>14} ({r['client']}): {r['throughput']:.1f} requests/s, p50 {r['p50_ms']:.0f} ms, "
                      f"p99 {r['p99_ms']:.0f} ms, non-2xx {r['failed']}", flush=True)
            after = best_alone(args, profile, data_file, server_threads, "after")
            reference = (before + after) / 2
            ratio = results["served"]["throughput"] / reference
            print(f"RATIO [{profile}] served / scorer alone: {results['served']['throughput']:.1f} / {reference:.1f} = "
                  f"{ratio:.2f} (target >= 0.70)", flush=True)
            if args.one_at_a_time:
                print(f"RATIO [{profile}] served batched / one at a time: "
                      f"{results['served']['throughput'] / results['one at a time']['throughput']:.2f}x", flush=True)
            measured[profile] = (data, results["served"]["throughput"])

    if args.burst_seconds <= 0:
        return
    data, throughput = measured[chosen[0]]
    rate = 4 * throughput
    # A queue sized to ~2 s of measured work, as an operator would size it from a latency budget:
    # at 4x capacity it fills within seconds, and the excess must be answered 503, not dropped.
    queue = args.burst_queue or max(8, int(2 * throughput))
    process, url = start_server(args.model, options, max_queue=queue, bf16=args.bf16)
    try:
        outcome = asyncio.run(burst(url, data, rate, args.burst_seconds))
        health = httpx.get(f"{url}/health", timeout=30).json()
    finally:
        stop_server(process)
    answered = sum(v for k, v in outcome["statuses"].items() if k.isdigit())
    print(f"[{chosen[0]}] burst at {rate:.0f} requests/s (4x) for {args.burst_seconds:g} s, queue {queue}: "
          f"sent {outcome['sent']:,}, statuses {outcome['statuses']}, answered {answered:,} of {outcome['sent']:,}; "
          f"health after: {health}")


if __name__ == "__main__":
    main()
