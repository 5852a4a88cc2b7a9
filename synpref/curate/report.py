"""`synpref curate report`: what each step did, as Markdown, HTML and PNG plots.

    runs/curate-report/report.md, report.html, gold_accuracy.png, stage2_decisions.png, stage2_p.png
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def collect(workspace) -> dict[str, Any]:
    """The figures of a run: Stage 1 summaries, Stage 2 summary, decisions and judge agreement."""
    import pyarrow.parquet as pq

    from synpref.curate.stage1 import finished_iterations

    figures: dict[str, Any] = {"stage1": [json.loads((p / "summary.json").read_text()) for p in finished_iterations(workspace)]}
    stage2 = workspace.run_dir("stage2")
    figures["stage2"] = json.loads((stage2 / "summary.json").read_text()) if (stage2 / "summary.json").is_file() else None
    figures["decisions"] = pq.read_table(workspace.decisions_file).to_pylist() if workspace.decisions_file.is_file() else []
    figures["stage2_judges"] = judge_agreement(figures["decisions"])
    figures["reasons"] = _reason_counts(figures["decisions"])
    return figures


def judge_agreement(decisions: list[dict[str, Any]]) -> dict[str, Any]:
    """How often the LLM judges' verdict agrees with each RM on the pairs they judged."""
    judged = [d for d in decisions if d["annotated"] and d["llm_verdict"] in ("chosen", "rejected")]
    if not judged:
        return {"judged": sum(d["annotated"] for d in decisions), "decided": 0}

    def share(key: str) -> float:
        return sum((d["llm_verdict"] == "chosen") == (d[key] > 0.5) for d in judged) / len(judged)

    return {"judged": sum(d["annotated"] for d in decisions), "decided": len(judged),
            "with_gold_rm": round(share("gold_p"), 4), "with_best_rm": round(share("best_p"), 4),
            "says_chosen": round(sum(d["llm_verdict"] == "chosen" for d in judged) / len(judged), 4)}


def _reason_counts(decisions: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    counts: dict[tuple[str, str], int] = {}
    for d in decisions:
        counts[(d["action"], d["reason"])] = counts.get((d["action"], d["reason"]), 0) + 1
    return sorted(((a, r, n) for (a, r), n in counts.items()), key=lambda item: -item[2])


def write_report(workspace, output: Path | None = None) -> Path:
    from markdown_it import MarkdownIt

    output = Path(output or workspace.run_dir("curate-report"))
    output.mkdir(parents=True, exist_ok=True)
    figures = collect(workspace)
    plots = _plots(figures, output)
    text = markdown_report(figures, [p.name for p in plots])
    (output / "report.md").write_text(text)
    (output / "report.json").write_text(json.dumps({k: v for k, v in figures.items() if k != "decisions"}, indent=2))
    html = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    (output / "report.html").write_text(f"<!doctype html><meta charset='utf-8'><title>curation report</title>\n{html}")
    return output


def markdown_report(figures: dict[str, Any], plots: list[str]) -> str:
    lines = ["# Curation report", ""]
    if figures["stage1"]:
        lines += ["## Stage 1", "", "| iteration | silver trained on | gold accuracy | mean gold p | retrieved | judged chosen / rejected / unsure "
                  "| added to silver | by verifier / LLM judges / humans | sent to humans | judge agreement | seconds |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in figures["stage1"]:
            judged = s["judged"]
            added = s.get("added_by", {"verifier": 0, "llm": s["added_to_silver"], "human": 0})  # before verifiers and humans
            lines.append(f"| {s['iteration']} | {s['silver_trained_on']} | {s['gold_accuracy']:.3f} | {s['gold_p_mean']:.3f} | {s['retrieved']} | "
                         f"{judged['chosen']} / {judged['rejected']} / {judged['unsure']} | {s['added_to_silver']} | "
                         f"{added['verifier']} / {added['llm']} / {added['human']} | {s.get('sent_to_humans', 0)} | {s['judge_agreement_mean']:.3f} | {s['seconds']} |")
        lines.append("")
    stage2 = figures["stage2"]
    if stage2:
        lines += ["## Stage 2", "", f"Rule `{stage2['rule']}`, band p > {0.5 + stage2['margin']:.2f} skips annotation, flip option `{stage2['flip_option']}`.", "",
                  "| pairs | kept | discarded | flipped | LLM-annotated |", "|---|---|---|---|---|",
                  f"| {stage2['pairs']} | {stage2['keep']} | {stage2['discard']} | {stage2['flip']} | {stage2['annotated']} |", "",
                  "| action | reason | pairs |", "|---|---|---|"]
        lines += [f"| {action} | {reason} | {count} |" for action, reason, count in figures["reasons"]]
        judges = figures["stage2_judges"]
        lines += ["", f"LLM judges: {judges['judged']} pairs judged, {judges['decided']} with a verdict"]
        if judges["decided"]:
            lines[-1] += (f"; agreement with the gold RM {judges['with_gold_rm']:.3f}, with the best RM {judges['with_best_rm']:.3f}; "
                          f"they kept the stored orientation on {judges['says_chosen']:.3f}")
        lines.append("")
    lines += [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def _plots(figures: dict[str, Any], output: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    written = []
    if figures["stage1"]:
        figure, axes = plt.subplots(figsize=(5, 3.5))
        iterations = [s["iteration"] for s in figures["stage1"]]
        axes.plot(iterations, [s["gold_accuracy"] for s in figures["stage1"]], marker="o", label="gold accuracy")
        axes.plot(iterations, [s["gold_p_mean"] for s in figures["stage1"]], marker="s", label="mean gold p")
        axes.set(xlabel="Stage 1 iteration", ylim=(0, 1), xticks=iterations, title="RM on gold, per iteration")
        axes.legend()
        written.append(_save(figure, output / "gold_accuracy.png"))
    if figures["decisions"]:
        figure, (bars, scatter) = plt.subplots(1, 2, figsize=(10, 4))
        actions = ["keep", "discard", "flip"]
        for annotated, colour in ((False, "tab:blue"), (True, "tab:orange")):
            counts = [sum(d["action"] == a and d["annotated"] == annotated for d in figures["decisions"]) for a in actions]
            bottom = None if not annotated else [sum(d["action"] == a and not d["annotated"] for d in figures["decisions"]) for a in actions]
            bars.bar(actions, counts, bottom=bottom, color=colour, label="LLM-annotated" if annotated else "not annotated")
        bars.set(title="Stage 2 decisions", ylabel="pairs")
        bars.legend()
        for action, colour in zip(actions, ("tab:green", "tab:red", "tab:purple")):
            chosen = [d for d in figures["decisions"] if d["action"] == action]
            scatter.scatter([d["best_p"] for d in chosen], [d["gold_p"] for d in chosen], s=6, color=colour, label=action)
        scatter.axhline(0.5, color="grey", linewidth=0.5)
        scatter.axvline(0.5 + figures["stage2"]["margin"], color="grey", linewidth=0.5, linestyle="--")
        scatter.set(xlabel="best RM p", ylabel="gold RM p", xlim=(0, 1), ylim=(0, 1), title="p per pool pair")
        scatter.legend()
        written.append(_save(figure, output / "stage2_decisions.png"))
    return written


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path
