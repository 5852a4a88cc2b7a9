"""The hybrid reward on the demo's sums: how the RM and the math verifier agree, and what the mix ranks right.

    .venv/bin/python bench/hybrid_rewards.py [--workdir /tmp/synpref-hybrid]

The demo's generator writes a noisy pool (25% of labels flipped) and clean held-out pairs whose
right answers are known. A head-only MiniLM reward model is fitted on the noisy pool (what a
user has before curating); the held-out "What is a + b?" pairs become `synpref reward score`
items (reference a + b, both replies, `pair` and `preferred`), scored by the RM alone and by the
spec below. The report lands in WORKDIR/report/report.md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

SPEC = """\
default_task: math
tasks:
  math: {verifier: math, combine: hybrid, w_rm: 0.5, w_rule: 1.0, rm: {transform: sigmoid, threshold: 0.0}, unparseable_penalty: 0.5}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/synpref-hybrid"))
    args = parser.parse_args()
    from synpref.demo.data import DemoSizes, write_demo_data
    from synpref.rm.data import load_pairs
    from synpref.rm.features import FeatureSpec
    from synpref.rm.head import fit_head_model

    paths = write_demo_data(args.workdir / "data", DemoSizes(), seed=0)
    model = args.workdir / "rm"
    if not (model / "synpref_head.json").is_file():
        fit_head_model(load_pairs(str(paths["pool"])), model, FeatureSpec("minilm-l6", 64), args.workdir / "cache",
                       gold=load_pairs(str(paths["gold"])))
    items = _sum_items(load_pairs(str(paths["test"])))
    data = args.workdir / "items.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in items))
    (args.workdir / "spec.yaml").write_text(SPEC)
    env_cache = {"SYNPREF_CACHE_DIR": str(args.workdir / "synpref-cache")}
    import os

    subprocess.run([sys.executable, "-m", "synpref", "reward", "score", "--spec", str(args.workdir / "spec.yaml"),
                    "--data", str(data), "--model", str(model), "--output", str(args.workdir / "report"), "--max-length", "64"],
                   check=True, env={**os.environ, **env_cache})
    print((args.workdir / "report" / "report.md").read_text())


def _sum_items(pairs) -> list[dict]:
    """Two items per held-out sum pair: the right reply (preferred) and the wrong one."""
    items = []
    for number, pair in enumerate(pairs):
        match = re.fullmatch(r"What is (\d+) \+ (\d+)\?", pair.conversation[-1].content)
        if not match:
            continue
        reference = str(int(match.group(1)) + int(match.group(2)))
        for reply, preferred in ((pair.chosen, True), (pair.rejected, False)):
            items.append({"prompt": pair.conversation[-1].content, "response": reply.content, "reference": reference,
                          "pair": number, "preferred": preferred})
    return items


if __name__ == "__main__":
    main()
