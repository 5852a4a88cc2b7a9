"""PNG plots of an evaluation run, readable without the JSON next to them."""

from __future__ import annotations

from pathlib import Path

from synpref.eval.rmbench import STYLES


def write_plots(run, output: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    written = [_scores(run, output / "scores.png")]
    if "ppe-correctness" in run.results:
        written.append(_best_of_n(run.results["ppe-correctness"].extras["best_of_n"], output / "ppe-best-of-n.png"))
    if "rm-bench" in run.results:
        written.append(_style_matrices(run.results["rm-bench"].extras["matrix"], output / "rm-bench-matrix.png"))
    return written


def _scores(run, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from synpref.eval.registry import PUBLISHED

    names = list(run.results)
    reference_name, reference = next(iter(PUBLISHED.items()))
    figure, axes = plt.subplots(figsize=(1.4 * len(names) + 3, 4))
    positions = range(len(names))
    # an incomplete benchmark has no headline: no bar (NaN)
    ours = [100 * run.results[n].score if run.results[n].score is not None else float("nan") for n in names]
    axes.bar([p - 0.2 for p in positions], ours, 0.4, label="this model")
    axes.bar([p + 0.2 for p in positions], [reference[n] for n in names], 0.4, label=reference_name, alpha=0.6)
    axes.set_xticks(list(positions), names, rotation=20)
    axes.set_ylabel("score (%)")
    axes.set_ylim(0, 100)
    axes.legend(loc="lower right")
    axes.set_title("Benchmark scores")
    return _save(figure, path)


def _best_of_n(curves: dict[str, list[float]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        axes.plot(range(1, len(curve) + 1), [100 * v for v in curve], marker="o", markersize=3, label=name)
    axes.set_xlabel("N (responses the reward model chooses from)")
    axes.set_ylabel("chosen response correct (%)")
    axes.set_title("PPE correctness: best-of-N")
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def _style_matrices(matrices: dict[str, list[list[float]]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure, all_axes = plt.subplots(1, len(matrices), figsize=(3.6 * len(matrices), 3.6), squeeze=False)
    for axes, (domain, matrix) in zip(all_axes[0], matrices.items()):
        axes.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        for i in range(3):
            for j in range(3):
                axes.text(j, i, f"{100 * matrix[i][j]:.0f}", ha="center", va="center",
                          color="white" if matrix[i][j] < 0.6 else "black")
        axes.set_xticks(range(3), STYLES, rotation=30)
        axes.set_yticks(range(3), STYLES)
        axes.set_xlabel("rejected style")
        axes.set_ylabel("chosen style")
        axes.set_title(f"RM-Bench {domain} (%)")
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path
