"""Preference pairs with a known right answer, for the noise-recovery experiment and tests.

Two objective tasks whose answer the generator computes: a sum (the wrong answer is 50 to 90
too large) and repeating a made-up word three times (the wrong answer says it once); each pair
carries its reference answer (the sum for the math verifier, the repeated word for normalised
matching), so verifier judges can decide it. Both
differ in what an uncased tokenizer sees (MiniLM lower-cases its input, so a task about
capital letters would give two identical inputs).
`flip_labels` swaps chosen and rejected on a random share, recording the truth in meta.
"""

from __future__ import annotations

import random

SYLLABLES = ["ba", "ko", "ri", "tu", "me", "sa", "lo", "ni", "de", "fa", "gu", "pe", "zo", "vi", "ha", "ju"]


def objective_records(count: int, seed: int = 0, offset: int = 0) -> list[dict]:
    """`count` distinct pairs, chosen = right answer; `offset` keeps two sets' questions apart."""
    rng = random.Random(seed)
    records = []
    for index in range(offset, offset + count):
        if index % 2 == 0:
            a, b = rng.randint(1, 60), rng.randint(1, 60)
            question, right, wrong = f"What is {a} + {b}? (#{index})", f"{a} + {b} = {a + b}", f"{a} + {b} = {a + b + rng.randint(50, 90)}"
            reference = {"answer": str(a + b), "verifier": "math"}
        else:
            word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
            question, right, wrong = f"Repeat the word '{word}' three times. (#{index})", " ".join([word] * 3), word
            reference = {"answer": right, "verifier": "normalised"}
        records.append({
            "conversation": [{"role": "user", "content": question}],
            "chosen": {"role": "assistant", "content": right},
            "rejected": {"role": "assistant", "content": wrong},
            "source": "objective", "meta": {"task": "sum" if index % 2 == 0 else "repeat", "flipped": False},
            "reference": reference,
        })
    return records


def flip_labels(records: list[dict], rate: float, seed: int = 0) -> list[dict]:
    """A copy with `rate` of the pairs swapped at random; meta["flipped"] says which."""
    rng = random.Random(seed)
    flipped = set(rng.sample(range(len(records)), round(rate * len(records))))
    result = []
    for index, record in enumerate(records):
        record = {**record, "meta": {**record["meta"], "flipped": index in flipped}}
        if index in flipped:
            record["chosen"], record["rejected"] = record["rejected"], record["chosen"]
        result.append(record)
    return result
