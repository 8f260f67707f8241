"""The tau table as the papers' figure (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .storage import atomic_write

# The WIFS 2019 paper's table (tau_train = 1e-3, tau_attack = tau_test), in percent:
# tau -> (error, CW success); and its ResNet. Drawn beside ours for the data set it used.
PAPER = {
    "mnist": {
        "label": "WIFS'19, full MNIST",
        "tau": {1e-4: (0.5, 99.7), 1e-3: (0.5, 90.7), 1e-2: (0.6, 74.4), 1e-1: (0.8, 71.6), 1.0: (1.2, 69.7)},
        "resnet": (0.4, 99.7),
    },
    "cifar10": {
        "label": "WIFS'19, CIFAR-10",
        "tau": {1e-4: (9.1, 100.0), 1e-3: (9.2, 100.0), 1e-2: (9.3, 100.0), 1e-1: (10.6, 100.0), 1.0: (11.3, 100.0)},
        "resnet": (7.3, 100.0),
    },
}
PAPER_DATASETS = {"mnist": "mnist", "mnist5k": "mnist", "cifar10": "cifar10"}
PAPER_COLUMN = {"error": 0, "success_rate": 1}

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
        paper = PAPER.get(PAPER_DATASETS.get(report.get("dataset", ""), ""))
        # the paper's attack column is at tau_attack = tau_test only
        comparable = key == "error" or (key == "success_rate" and not report.get("tol_attack"))
        if paper is not None and key in PAPER_COLUMN and comparable:
            column = PAPER_COLUMN[key]
            taus = sorted(paper["tau"])
            axes.plot(
                taus,
                [paper["tau"][tau][column] for tau in taus],
                marker="s",
                color="tab:red",
                alpha=0.6,
                linestyle=":",
                label=f"{paper['label']} (ODE-Net)",
            )
            axes.axhline(
                paper["resnet"][column], color="tab:red", alpha=0.4, linestyle="-.", label=f"{paper['label']} (ResNet)"
            )
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
