"""A small preference dataset the project makes itself, for the demo and tests.

Arithmetic questions with a correct and a wrong answer (objective, known label) and open
questions with a helpful and a curt answer (subjective). A few records are exact or
whitespace-only repeats and a few are broken, so that Stage 0 has real work to show.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = ["sourdough bread", "a job interview", "learning the violin", "a rainy weekend",
          "saving for a bicycle", "planting tomatoes", "a first marathon", "moving to a new city"]


def make_records(pairs: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for index in range(pairs):
        if index % 2 == 0:
            a, b = rng.randint(10, 999), rng.randint(10, 999)
            question = f"What is {a} + {b}? (question {index})"
            chosen = f"{a} + {b} = {a + b}."
            rejected = f"{a} + {b} = {a + b + rng.choice([-10, -1, 1, 10])}."
        else:
            topic = rng.choice(TOPICS)
            question = f"Can you give me three tips for {topic}? (question {index})"
            chosen = "\n".join(f"{n}. A concrete tip about {topic}, step {n}." for n in (1, 2, 3))
            rejected = "Just figure it out."
        records.append({
            "conversation": [{"role": "user", "content": question}],
            "chosen": {"role": "assistant", "content": chosen},
            "rejected": {"role": "assistant", "content": rejected},
            "source": "synthetic",
            "meta": {"kind": "arithmetic" if index % 2 == 0 else "open"},
        })
    return records


def write_sample(output: Path, pairs: int = 2000, seed: int = 0) -> int:
    """Write `pairs` distinct pairs plus 5% repeats and 1% broken records; returns lines written."""
    rng = random.Random(seed + 1)
    records = make_records(pairs, seed)
    lines = [json.dumps(r) for r in records]
    for record in rng.sample(records, max(1, pairs // 20)):
        repeat = json.loads(json.dumps(record))
        repeat["chosen"]["content"] = "  " + repeat["chosen"]["content"].replace(" ", "  ") + "\n"
        lines.append(json.dumps(repeat))
    for record in rng.sample(records, max(1, pairs // 100)):
        broken = json.loads(json.dumps(record))
        broken["rejected"]["content"] = ""
        lines.append(json.dumps(broken))
    rng.shuffle(lines)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text("\n".join(lines) + "\n")
    return len(lines)
