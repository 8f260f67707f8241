"""The tau table as the papers' figure (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .storage import atomic_write

PANELS = (
    ("error", "classification error (%)", 100.0),
    ("success_rate", "attack success (%)", 100.0),
    ("mean_l2", "mean L2 of the adversarials", 1.0),
)


def plot_sweep(report: dict[str, Any], path: Path) -> None:
    """One panel per metric the sweep measured (error; with an attack, success and mean
    L2) against tau on a log axis; the baseline, when there is one, as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    if report.get("tol_attack"):
        x_label = "tau_test"
    else:
        x_label = "tau (tau_attack = tau_test)" if report.get("attack") else "solver tolerance tau"
    panels = [panel for panel in PANELS if any(row.get(panel[0]) is not None for row in rows)]
    figure, axes_list = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), dpi=120, squeeze=False)
    for axes, (key, label, scale) in zip(axes_list[0], panels, strict=True):
        points = [(row["tol"], row[key] * scale) for row in rows if row.get(key) is not None]
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=report["model"])
        baseline = report.get("baseline") or {}
        if baseline.get(key) is not None:
            axes.axhline(baseline[key] * scale, color="grey", linestyle="--", label=baseline["model"])
        axes.set_xscale("log")
        axes.set_xlabel(x_label)
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    attack = f", {report['attack']} on {report['count']} images" if report.get("attack") else ""
    made_at = f" made at tau_attack = {report['tol_attack']:g}" if report.get("tol_attack") else ""
    figure.suptitle(f"{report['model']}: the tau table{attack}{made_at}", fontsize=10)
    figure.tight_layout()
    atomic_write(path, lambda handle: figure.savefig(handle, format="png"))
    plt.close(figure)
