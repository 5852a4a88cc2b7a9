"""Load on the reward server: dynamic micro-batching vs a one-request-at-a-time server.

Both servers are `synpref serve` subprocesses with the same model; the second has batching
switched off (every batch is one request). This script is the second process that drives
them, one at a time, over loopback:

1. closed loop: C concurrent clients, each sending one conversation per request, for D s;
   throughput (requests/s) and p50/p99 latency; once per input profile:
   `pool`  single-turn pool conversations of moderate length (prompt < 600, reply < 800 chars),
   `short` one-line arithmetic questions and answers (~15 tokens; e.g. verifiable-reward RL);
2. burst (batched server only, first profile): open loop at 4x the throughput measured in 1 for
   B s, with a queue of ~2 s of measured work, counting 200s, 503s and anything else; then
   /health must answer "ok".

    python bench/serve_load.py [--model minilm-l6] [--profiles pool,short] [--clients 64]
                               [--seconds 60] [--burst-seconds 10] [--bf16]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import socket
import subprocess
import sys
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


def start_server(model: str, batching: bool, max_queue: int, bf16: bool = False) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    synpref = str(Path(sys.executable).with_name("synpref"))
    command = [synpref, "serve", "--model", model, "--port", str(port), "--max-queue", str(max_queue),
               "--max-length", "512", "--request-timeout-s", "120"]
    if not batching:  # a batch never holds more than the first request
        command += ["--max-batch-tokens", "1", "--max-wait-ms", "0"]
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


async def closed_loop(url: str, data: list, clients: int, seconds: float) -> dict:
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
        "statuses": statuses,
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--profiles", default="pool,short", help="comma-separated: pool, short")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--burst-seconds", type=float, default=10)
    parser.add_argument("--burst-queue", type=int, default=0, help="server queue (sequences) in the burst; default ~2 s of measured work")
    parser.add_argument("--bf16", action="store_true", help="both servers score in bfloat16")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    profiles = {"pool": conversations, "short": short_conversations}
    chosen = args.profiles.split(",")
    if unknown := set(chosen) - set(profiles):
        raise SystemExit(f"unknown profile(s) {sorted(unknown)}; choose from {sorted(profiles)}")

    measured = {}
    for profile in chosen:
        data = profiles[profile]()
        print(f"[{profile}] model {args.model}{' bf16' if args.bf16 else ''}; {len(data):,} distinct conversations; "
              f"{args.clients} clients for {args.seconds:g} s", flush=True)
        results = {}
        for name, batching in (("batched", True), ("one at a time", False)):
            process, url = start_server(args.model, batching, max_queue=4096, bf16=args.bf16)
            try:
                results[name] = asyncio.run(closed_loop(url, data, args.clients, args.seconds))
            finally:
                process.terminate()
                process.wait(timeout=60)
            r = results[name]
            print(f"[{profile}] {name:>14}: {r['throughput']:.1f} requests/s, p50 {r['p50_ms']:.0f} ms, "
                  f"p99 {r['p99_ms']:.0f} ms, statuses {r['statuses']}", flush=True)
        ratio = results["batched"]["throughput"] / results["one at a time"]["throughput"]
        print(f"RATIO [{profile}] throughput batched / one-at-a-time: {ratio:.2f}x (target >= 3x)", flush=True)
        measured[profile] = (data, results["batched"]["throughput"])

    data, throughput = measured[chosen[0]]
    rate = 4 * throughput
    # A queue sized to ~2 s of measured work, as an operator would size it from a latency budget:
    # at 4x capacity it fills within seconds, and the excess must be answered 503, not dropped.
    queue = args.burst_queue or max(8, int(2 * throughput))
    process, url = start_server(args.model, True, max_queue=queue, bf16=args.bf16)
    try:
        outcome = asyncio.run(burst(url, data, rate, args.burst_seconds))
        health = httpx.get(f"{url}/health", timeout=30).json()
    finally:
        process.terminate()
        process.wait(timeout=60)
    answered = sum(v for k, v in outcome["statuses"].items() if k.isdigit())
    print(f"[{chosen[0]}] burst at {rate:.0f} requests/s (4x) for {args.burst_seconds:g} s, queue {queue}: "
          f"sent {outcome['sent']:,}, statuses {outcome['statuses']}, answered {answered:,} of {outcome['sent']:,}; "
          f"health after: {health}")


if __name__ == "__main__":
    main()
