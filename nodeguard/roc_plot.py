"""The ROC picture (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

from .storage import atomic_write


def plot_roc(report, path: Path) -> None:
    """One curve per V with its AUC, the chance line, labelled axes; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 5), dpi=120)
    for curve in report.curves:
        points = sorted(curve["points"], key=lambda p: (p["fpr"], p["tpr"]))
        axes.plot(
            [p["fpr"] for p in points],
            [p["tpr"] for p in points],
            marker="o",
            markersize=3,
            label=f"V = {curve['votes']} (AUC {curve['auc']:.3f})",
        )
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set_xlabel("adversarials accepted (false positive rate)")
    axes.set_ylabel("pristine images accepted (true positive rate)")
    axes.set_title(
        f"Tolerance randomization on {report.model}\n{report.pristine} pristine, {report.adversarial} adversarials",
        fontsize=10,
    )
    axes.set_xlim(-0.02, 1.02)
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    atomic_write(path, lambda handle: figure.savefig(handle, format="png"))
    plt.close(figure)
