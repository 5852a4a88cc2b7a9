"""report.html: one self-contained page (plots inlined) of what the demo did and measured."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any


def write_html_report(workspace, steps: dict[str, Any], curate_report: Path) -> Path:
    from markdown_it import MarkdownIt

    markdown = MarkdownIt("commonmark", {"html": False}).enable("table")
    sections = [_ablation(steps.get("ablation", {}), markdown), _stage1(steps.get("stage1", {}), workspace.run_dir("demo")), _summary(steps)]
    curate_md = curate_report / "report.md"
    if curate_md.exists():
        sections.append(_with_images(markdown.render(curate_md.read_text()), curate_report))
    evaluation = steps.get("evaluate", {})
    sections.append(_evaluation(evaluation, markdown))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>synpref demo report</title>"
        f"<style>{_STYLE}</style></head><body><h1>synpref demo report</h1>"
        + "\n".join(sections)
        + "</body></html>"
    )
    path = workspace.root / "report.html"
    path.write_text(page)
    return path


def _ablation(result: dict[str, Any], markdown) -> str:
    """The lead: does curation pay on this data, and did Stage 2 find the flipped labels?"""
    if not result:
        return ""
    parts = []
    if "noise" in result:
        noise = result["noise"]
        parts.append(
            f"<h2>Label noise found by Stage 2</h2><p>Of the {noise['decided']} pool pairs Stage 2 decided, "
            f"{noise['flipped']} had their label flipped by the generator. Stage 2 flagged {noise['flagged']} "
            f"(discarded or flipped back): precision <b>{noise['precision']:.2f}</b>, recall <b>{noise['recall']:.2f}</b>. "
            f"It turned {noise['recycled']} round (recycled as flipped): precision <b>{noise['recycled_precision']:.2f}</b>, "
            f"recall <b>{noise['recycled_recall']:.2f}</b>.</p>"
            f"<p>Configuration: every reward model of the loop is head-only {html.escape(result.get('loop_model', ''))} "
            "(frozen features, a Bradley-Terry head), the seed pairs the best RM trained on are scored out of fold "
            "(5 folds), and the rule reads the gold RM, the best RM and the judges that earned a say on gold: the verifier "
            "judge (for pairs with a reference answer); the SmolLM2 judge, at chance, gets none. "
            "SmolLM2's last-token state tells a right sum from a wrong one; MiniLM's mean pooling does not, "
            "and with it Stage 2 turned correct sums round.</p>"
        )
    report = Path(result["report"])
    if report.is_file():
        parts.insert(0, _with_images(markdown.render(report.read_text()), report.parent))
    return "\n".join(parts)


def _stage1(result: dict[str, Any], directory: Path) -> str:
    """Stage 1 per iteration: gold and held-out accuracy of its RM, and the labels it added by source."""
    iterations = [s for s in result.get("iterations", []) if "added_by" in s]
    if not iterations:
        return ""
    held_out = result.get("held_out", [])
    rows = ""
    for i, s in enumerate(iterations):
        accuracy = f"{held_out[i]:.3f}" if i < len(held_out) else ""
        added = s["added_by"]
        rows += (f"<tr><td>{s['iteration']}</td><td>{s['silver_trained_on']}</td><td>{s['gold_accuracy']:.3f}</td><td>{accuracy}</td>"
                 f"<td>{s['retrieved']}</td><td>{added['verifier']}</td><td>{added['llm']}</td><td>{added['human']}</td></tr>")
    parts = [
        "<h2>Stage 1: labels added per iteration, and what the reward model learnt</h2>",
        "<p>Each iteration trains its RM on the silver so far (seed plus what earlier iterations added), measures it on gold "
        "and on the held-out pairs, retrieves pool pairs near the gold pairs it gets wrong and labels them. A verifier judge "
        "labels the pairs that carry a reference answer (it earned its weight on gold); the LLM judge is asked only if it beat "
        "chance on gold; the pairs neither decided go, a few per iteration, to the annotation app's queue, where "
        "<b>simulated annotators</b> (three, each right 90% of the time, a simulated lead adjudicating disagreements) label "
        "them, and the iteration finishes once their labels are exported.</p>",
        "<table><tr><th>iteration</th><th>silver trained on</th><th>gold accuracy</th><th>held-out accuracy</th><th>retrieved</th>"
        f"<th>added by verifier</th><th>added by LLM judge</th><th>added by humans</th></tr>{rows}</table>",
    ]
    sources = result.get("sources")
    if sources:
        cells = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{row['added']}</td><td>{'' if row['agree_with_truth'] is None else format(row['agree_with_truth'], '.3f')}</td></tr>"
            for name, row in sources.items()
        )
        parts.append("<p>Labels Stage 1 added to silver, by source, and how often each agrees with the generator's truth:</p>"
                     f"<table><tr><th>source</th><th>labels added</th><th>agreement with truth</th></tr>{cells}</table>")
    plot = _stage1_plot(iterations, held_out, directory / "stage1_accuracy.png")
    if plot is not None:
        parts.append(_image(plot))
    return "\n".join(parts)


def _stage1_plot(iterations: list[dict[str, Any]], held_out: list[float], path: Path) -> Path | None:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    numbers = [s["iteration"] for s in iterations]
    figure, (accuracy, added) = plt.subplots(1, 2, figsize=(10, 3.5))
    accuracy.plot(numbers, [s["gold_accuracy"] for s in iterations], marker="o", label="gold accuracy")
    if len(held_out) == len(numbers):
        accuracy.plot(numbers, held_out, marker="s", label="held-out accuracy")
    accuracy.set(xlabel="Stage 1 iteration", ylim=(0, 1), xticks=numbers, title="RM of each iteration")
    accuracy.legend()
    bottom = [0] * len(numbers)
    for source, colour in (("verifier", "tab:green"), ("llm", "tab:blue"), ("human", "tab:orange")):
        counts = [s["added_by"][source] for s in iterations]
        added.bar(numbers, counts, bottom=bottom, color=colour, label={"llm": "LLM judge"}.get(source, source))
        bottom = [b + c for b, c in zip(bottom, counts)]
    added.set(xlabel="Stage 1 iteration", ylabel="labels added to silver", xticks=numbers, title="Labels by source")
    added.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _summary(steps: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{result.get('seconds', '')}</td><td>{html.escape(_brief(name, result))}</td></tr>"
        for name, result in steps.items()
    )
    return f"<h2>Steps</h2><table><tr><th>step</th><th>seconds</th><th>result</th></tr>{rows}</table>"


def _brief(step: str, result: dict[str, Any]) -> str:
    if step == "ingest":
        return "; ".join(f"{name}: {c['read']} read, {c['kept']} kept" for name, c in result["counts"].items())
    if step == "attributes":
        judge = f" by {result['judge']}" if "judge" in result else ""
        return f"{result['done']} of {result['pairs']} pairs annotated{judge}, {result['failed']} failed"
    if step == "stage1":
        added = [s.get("added_to_silver", 0) for s in result["iterations"]]
        return f"{len(result['iterations'])} iterations, labels added per iteration: {added}"
    if step == "stage2":
        return ", ".join(f"{name}: {count}" for name, (_, count) in result["exports"].items())
    if step == "train":
        summary = result["summary"]
        return f"{summary['steps']} steps, best gold accuracy {summary['best_gold_accuracy']}"
    if step == "ablation":
        accuracy = result["accuracy"]
        return ", ".join(f"{name} {row['accuracy']:.3f}" for name, row in accuracy.items())
    if step == "evaluate":
        return f"held-out accuracy {result['held_out_accuracy']:.3f} on {result['held_out_pairs']} pairs"
    if step == "data":
        return ", ".join(f"{name}: {path}" for name, path in result["files"].items())
    return ""


def _evaluation(result: dict[str, Any], markdown) -> str:
    if not result:
        return ""
    parts = [f"<h2>Evaluation of the final reward model</h2><p>Held-out accuracy: "
             f"<b>{result['held_out_accuracy']:.1%}</b> on {result['held_out_pairs']} pairs the pipeline never saw.</p>"]
    files = [Path(p) for p in result.get("files", [])]
    for path in files:
        if path.suffix == ".md":
            parts.append(_with_images(markdown.render(path.read_text()), path.parent))
    for path in files:
        if path.suffix == ".png":
            parts.append(_image(path))
    if not files:
        parts.append("<p>No benchmark data was given (--bench-dir), so no benchmark was run.</p>")
    return "\n".join(parts)


def _with_images(rendered: str, directory: Path) -> str:
    """Inline the PNGs a rendered Markdown page links to, so the page stands alone."""

    def inline(match: re.Match) -> str:
        path = directory / html.unescape(match.group(1))
        if not path.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'

    return re.sub(r'src="([^"/]+\.png)"', inline, rendered)


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<figure><img alt='{html.escape(path.stem)}' src='data:image/png;base64,{data}'><figcaption>{html.escape(path.name)}</figcaption></figure>"


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: 4px 8px; }
figure { display: inline-block; margin: 0.5em; } img { max-width: 100%; border: 1px solid #eee; }
"""
