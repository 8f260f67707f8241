"""The decoupling grid as pictures: one heatmap per model, tau_attack rows, tau_test columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .storage import atomic_write


def plot_grid(report: dict[str, Any], path: Path) -> None:
    """Attack success (colour and the first number) and mean L2 of the adversarials (the
    second number) for every (tau_attack, tau_test) cell, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = report["models"]
    tol_attacks, tols = report["tol_attacks"], report["tols"]
    width = max(3.2, 0.9 * len(tols) + 1.6)
    figure, axes_list = plt.subplots(
        1, len(models), figsize=(width * len(models), 0.7 * len(tol_attacks) + 2.0), dpi=120, squeeze=False
    )
    image = None
    for axes, described in zip(axes_list[0], models, strict=True):
        cells = {(c["tol_attack"], c["tol_test"]): c for c in report["grid"] if c["model"] == described["model"]}
        success = np.array([[100 * cells[(a, t)]["success_rate"] for t in tols] for a in tol_attacks])
        image = axes.imshow(success, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        for row, tol_attack in enumerate(tol_attacks):
            for column, tol_test in enumerate(tols):
                l2 = cells[(tol_attack, tol_test)]["mean_l2"]
                text = f"{success[row, column]:.0f}%" + ("" if l2 is None else f"\n{l2:.2f}")
                colour = "black" if success[row, column] > 60 else "white"
                axes.text(column, row, text, ha="center", va="center", fontsize=7, color=colour)
        axes.set_xticks(range(len(tols)), [f"{t:g}" for t in tols], fontsize=8)
        axes.set_yticks(range(len(tol_attacks)), [f"{t:g}" for t in tol_attacks], fontsize=8)
        axes.set_xlabel("tau_test")
        axes.set_ylabel("tau_attack")
        axes.set_title(f"{described['model']}\n(tau_train = {described['tol_train']:g})", fontsize=9)
    figure.colorbar(image, ax=list(axes_list[0]), label="attack success (%)", shrink=0.9)
    figure.suptitle(f"{report['attack']} on {report['count']} images: success at tau_test (mean L2 below)", fontsize=10)
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", bbox_inches="tight"))
    plt.close(figure)
