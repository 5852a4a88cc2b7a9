"""The demo's data, generated here: a noisy pool, a small gold set and a clean held-out set.

Objective tasks (sums, comparisons, repetition) have an answer the generator knows; open-ended ones
(advice) pair a helpful answer with a curt or off-topic one. A share of the pool's labels is
flipped at random, as in data judged by weak annotators; which ones is written to
`truth.jsonl` (never into the pairs), so the curation can be scored against it. Objective pairs
carry their reference answer (`reference`: the sum or the larger number for the math verifier,
the repeated words for normalised matching), as math and extraction data sets do; open-ended
ones have none, so only a judge or a human can label them. The gold set
comes from three *simulated* annotators, each right 90% of the time, oriented by their
majority vote and marked `label_source: simulated`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from synpref.data.models import Message, pair_id

TOPICS = [
    "baking sourdough bread", "preparing for a job interview", "learning the violin", "a rainy weekend",
    "saving for a bicycle", "growing tomatoes", "training for a first marathon", "moving to a new city",
    "keeping houseplants alive", "learning to touch type", "writing a cover letter", "sleeping better",
]  # fmt: skip
CURT = ["Just figure it out.", "I don't know.", "That is not something I can help with.", "Search online."]


@dataclass
class DemoSizes:
    pool: int = 600
    gold: int = 60
    test: int = 200
    noise: float = 0.25  # share of pool labels flipped

    @classmethod
    def tiny(cls) -> DemoSizes:
        return cls(pool=120, gold=24, test=40)


WORDS = [
    "apple", "river", "candle", "pencil", "garden", "rocket", "violin", "pepper", "window", "forest", "marble",
    "lantern", "saddle", "tunnel", "copper", "meadow", "harbor", "basket", "ladder", "mirror", "velvet", "pillow",
    "anchor", "bucket", "cactus", "dragon", "falcon", "ginger", "hammer", "island", "jacket", "kettle",
]  # fmt: skip


def _objective(rng: random.Random, index: int) -> tuple[str, str, str, dict]:
    """A question with a checkable answer and a wrong one a small reward model can learn to spot.

    (Near-miss arithmetic such as 37 + 48 = 86 is beyond a 22M-parameter encoder at this data
    size; these are not: a sum that is far off, the smaller number, the word said once.)
    """
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    kind = rng.randrange(3)  # drawn, not cycled: a kind whose prompts run out is simply drawn less
    if kind == 0:
        return (f"What is {a} + {b}?", f"{a} + {b} = {a + b}", f"{a} + {b} = {a + b + rng.randint(50, 90)}",
                {"answer": str(a + b), "verifier": "math"})
    if kind == 1:
        return (f"Which number is larger, {a} or {b + 100}?", f"The larger number is {b + 100}.", f"The larger number is {a}.",
                {"answer": str(b + 100), "verifier": "math"})
    word = rng.choice(WORDS)
    times = rng.choice([3, 4, 5])
    count = {3: "three", 4: "four", 5: "five"}[times]
    right = " ".join([word] * times)
    return f"Repeat the word '{word}' {count} times.", right, word, {"answer": right, "verifier": "normalised"}


def _open_ended(rng: random.Random) -> tuple[str, str, str, None]:
    topic = rng.choice(TOPICS)
    tips = rng.sample(["start small", "keep a routine", "ask someone experienced", "write down your progress",
                       "plan a little each evening", "be patient with setbacks"], 3)
    helpful = f"Here are three tips for {topic}: " + "; ".join(f"{n}. {tip}" for n, tip in enumerate(tips, 1)) + "."
    return f"Can you give me some advice on {topic}?", helpful, rng.choice(CURT), None


def _pair(rng: random.Random, index: int) -> tuple[str, str, str, dict | None]:
    return _objective(rng, index) if rng.random() < 0.85 else _open_ended(rng)


def _record(question: str, chosen: str, rejected: str, reference: dict | None, source: str, **extra) -> dict:
    record = {
        "conversation": [{"role": "user", "content": question}],
        "chosen": {"role": "assistant", "content": chosen},
        "rejected": {"role": "assistant", "content": rejected},
        "source": source,
        **extra,
    }
    return {**record, "reference": reference} if reference else record


def _id(record: dict) -> str:
    return pair_id(
        [Message(**m) for m in record["conversation"]], Message(**record["chosen"]), Message(**record["rejected"])
    )


def write_demo_data(directory: Path, sizes: DemoSizes, seed: int = 0) -> dict[str, Path]:
    """pool.jsonl (noisy), gold.jsonl (simulated annotators), test.jsonl (clean), truth.jsonl."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    questions = []
    while len(questions) < sizes.pool + sizes.gold + sizes.test:
        question, right, wrong, reference = _pair(rng, len(questions))
        if question not in seen:  # every split gets its own prompts
            seen.add(question)
            questions.append((question, right, wrong, reference))
    pool, gold, test = (questions[: sizes.pool], questions[sizes.pool : sizes.pool + sizes.gold],
                        questions[sizes.pool + sizes.gold :])  # fmt: skip
    pool_records, truth = [], []
    for question, right, wrong, reference in pool:
        flipped = rng.random() < sizes.noise
        record = _record(question, *((wrong, right) if flipped else (right, wrong)), reference, "demo-pool")
        pool_records.append(record)
        truth.append({"id": _id(record), "flipped": flipped})
    gold_records = [_gold_record(rng, *triple) for triple in gold]
    test_records = [_record(*question, "demo-test") for question in test]
    paths = {}
    for name, records in (("pool", pool_records), ("gold", gold_records), ("test", test_records), ("truth", truth)):
        paths[name] = directory / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in records))
    return paths


def _gold_record(rng: random.Random, question: str, right: str, wrong: str, reference: dict | None) -> dict:
    votes = ["chosen" if rng.random() < 0.9 else "rejected" for _ in range(3)]
    majority_right = votes.count("chosen") >= 2
    chosen, rejected = (right, wrong) if majority_right else (wrong, right)
    # votes are recorded relative to the stored orientation, as a human label export would
    stored = votes if majority_right else ["rejected" if v == "chosen" else "chosen" for v in votes]
    annotators = [{"id": f"simulated-{n}", "vote": vote} for n, vote in enumerate(stored, 1)]
    return _record(question, chosen, rejected, reference, "demo-gold", label_source="simulated", annotators=annotators)
