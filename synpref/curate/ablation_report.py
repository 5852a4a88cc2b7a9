"""The ablation's report: report.md, report.html (self-contained) and accuracy.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LABELS = {
    "raw": "(a) raw pool", "kept": "(b) Stage 2 kept", "kept+flipped": "(c) kept + flipped",
    "gold": "(d) gold only", "random": "(e) random subset of raw, size of (b)", "longer wins": "the longer answer wins",
}


def markdown(results: dict[str, Any], plot: str | None) -> str:
    n = results["heldout_pairs"]
    lines = [
        "# Does curation pay? Held-out human gold, by training set",
        "",
        f"Each gold pair is held out in exactly one of {len(results.get('folds', [])) or '?'} folds "
        f"({n} held-out pairs in all); 95% intervals from {results['resamples']:,} bootstrap resamples of them.",
        "",
        "| trained on | pairs per fold | held-out accuracy | 95% interval |",
        "|---|---|---|---|",
    ]
    for name, row in results["accuracy"].items():
        sizes = ", ".join(f"{s:,}" for s in row["train_pairs_per_fold"] if s is not None) or "-"
        lines.append(f"| {LABELS.get(name, name)} | {sizes} | {row['accuracy']:.4f} | {row['low']:.4f} - {row['high']:.4f} |")
    lines += ["", "Paired differences (same held-out pairs):", "",
              "| condition | versus | difference | 95% interval |", "|---|---|---|---|"]
    for row in results["differences"]:
        lines.append(f"| {LABELS.get(row['condition'], row['condition'])} | {LABELS.get(row['versus'], row['versus'])} "
                     f"| {row['difference']:+.4f} | {row['low']:+.4f} - {row['high']:+.4f} |")
    if plot:
        lines += ["", f"![accuracy]({plot})"]
    lines += _per_source(results.get("per_source", []))
    lines += _folds(results.get("folds", []))
    lines += _judges(results.get("folds", []))
    if results.get("benchmarks"):
        lines += _benchmarks(results["benchmarks"])
    return "\n".join(lines) + "\n"


def _per_source(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = ["", "## Stage 2 per pool source (mean per fold)", "",
             "| source | pairs | kept | discarded | flipped | gold RM agrees with the label |", "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['source']} | {row['pairs']:,.0f} | {row['kept']:,.1f} | {row['discarded']:,.1f} | "
                     f"{row['flipped']:,.1f} | {row['gold_rm_agrees']:.3f} |")
    return lines


def _folds(folds: list[dict[str, Any]]) -> list[str]:
    if not folds:
        return []
    lines = ["", "## The loop in each fold", "",
             "| fold | Stage 1 gold accuracy by iteration | Stage 2 keep / discard / flip | judged by LLMs |", "|---|---|---|---|"]
    for number, fold in enumerate(folds, 1):
        accuracies = ", ".join(f"{s['gold_accuracy']:.3f}" if s.get("gold_accuracy") is not None else "-" for s in fold["stage1"])
        stage2 = fold["stage2"]
        lines.append(f"| {number} | {accuracies} | {stage2['keep']:,} / {stage2['discard']:,} / {stage2['flip']:,} | {stage2['annotated']:,} |")
    return lines


def _judges(folds: list[dict[str, Any]]) -> list[str]:
    rows = [(number, row) for number, fold in enumerate(folds, 1) for row in fold.get("judges", [])]
    if not rows:
        return ["", "No LLM judge had a say in any fold (none configured, or none beat chance on gold)."]
    lines = ["", "## Judges, measured on each fold's loop gold", "",
             "| fold | judge | right / asked | weight | why |", "|---|---|---|---|---|"]
    for number, row in rows:
        lines.append(f"| {number} | {row['judge']} | {row['correct']} / {row['n']} | {row['weight']:.3f} | {row['why']} |")
    return lines


def _benchmarks(scores: dict[str, Any]) -> list[str]:
    names = sorted({b for k, v in scores.items() if k != "skipped" for b in v})
    lines = ["", "## Benchmarks (fold 1's models, each benchmark's own rules)", "",
             "| trained on | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for condition, values in scores.items():
        if condition != "skipped":
            cells = [values.get(b) for b in names]
            lines.append(f"| {LABELS.get(condition, condition)} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in cells) + " |")
    for name, why in scores.get("skipped", {}).items():
        lines.append(f"\nskipped {name}: {why}")
    return lines


def plot_accuracy(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["accuracy"])
    rows = [results["accuracy"][n] for n in names]
    figure, axis = plt.subplots(figsize=(8, 3.6))
    values = [r["accuracy"] for r in rows]
    errors = [[v - r["low"] for v, r in zip(values, rows)], [r["high"] - v for v, r in zip(values, rows)]]
    axis.barh([LABELS.get(n, n) for n in names], values, xerr=errors, color="#4c72b0", capsize=3)
    axis.axvline(0.5, color="#999", linestyle=":", linewidth=1)
    axis.set(xlabel="held-out gold accuracy (95% bootstrap interval)", xlim=(0.3, 1.0))
    axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_ablation_report(results: dict[str, Any], directory: Path) -> Path:
    import base64

    from markdown_it import MarkdownIt

    plot = plot_accuracy(results, directory / "accuracy.png")
    text = markdown(results, plot.name)
    (directory / "report.md").write_text(text)
    html = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    inline = f"data:image/png;base64,{base64.b64encode(plot.read_bytes()).decode()}"
    html = html.replace(f'src="{plot.name}"', f'src="{inline}"')
    style = "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
    (directory / "report.html").write_text(f"<!doctype html><meta charset='utf-8'><title>curation ablation</title><style>{style}</style>\n{html}")
    return directory / "report.html"
