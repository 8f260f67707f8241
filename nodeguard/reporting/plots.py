"""The pictures nodeguard draws: the ROC, the tau figure, the decoupling grid (the security
pictures: :mod:`nodeguard.reporting.security_plots`).

Every picture is drawn with matplotlib's Agg backend (no display needed), written as PNG
to a temporary file and moved into place (:func:`nodeguard.storage.files.atomic_write`),
and its figure closed, in one place: :func:`pyplot` and :func:`save_png`.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from nodeguard.intervals import INTERVAL_LABEL, Rate, format_interval
from nodeguard.stages.grid import GridReport
from nodeguard.stages.sweep import SweepReport, SweepRow
from nodeguard.storage.files import atomic_write


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (imported here: drawing is rare, matplotlib is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(figure: Any, path: Path, tight: bool = False) -> None:
    """Write ``figure`` to ``path`` as PNG atomically, then close it."""
    plt = pyplot()
    options = {"bbox_inches": "tight"} if tight else {}
    atomic_write(Path(path), lambda handle: figure.savefig(handle, format="png", **options))
    plt.close(figure)


def interval_errors(values: list[float], intervals: list[list[float] | None], scale: float = 1.0) -> Any:
    """matplotlib's ``yerr`` (or ``xerr``): a (2, N) array of distances below and above each
    value to its interval's ends (0 where a value has no interval), times ``scale``."""
    import numpy as np

    below = [0.0 if ci is None else max(value - ci[0], 0.0) for value, ci in zip(values, intervals, strict=True)]
    above = [0.0 if ci is None else max(ci[1] - value, 0.0) for value, ci in zip(values, intervals, strict=True)]
    return np.array([below, above]) * scale


def plot_roc(report, path: Path) -> None:
    """One curve per V with its AUC, the chance line, labelled axes; written as PNG.

    Each curve's operating points (the v_min that rejects most adversarials with 90%, 95%
    and all of the pristine images accepted) carry their 95% intervals as error bars:
    across, the share of adversarials accepted (1 - the share rejected); up and down, the
    share of pristine images accepted."""
    plt = pyplot()

    figure, axes = plt.subplots(figsize=(5.5, 5), dpi=120)
    bars = False
    for index, curve in enumerate(report.curves):
        color = f"C{index % 10}"
        points = sorted(curve.points, key=lambda p: (p.fpr.count, p.tpr.count))
        axes.plot(
            [p.fpr.value for p in points],
            [p.tpr.value for p in points],
            marker="o",
            markersize=3,
            color=color,
            label=f"V = {curve.votes} (AUC {curve.auc:.3f})",
        )
        chosen = {curve.vmin_at_90_accept, curve.vmin_at_95_accept, curve.vmin_at_100_accept}
        marked = [p for p in curve.points if p.vmin in chosen]
        if marked:
            bars = True
            fpr, tpr = [float(p.fpr.value or 0.0) for p in marked], [float(p.tpr.value or 0.0) for p in marked]
            axes.errorbar(
                fpr,
                tpr,
                xerr=interval_errors(fpr, [p.fpr.interval_list() for p in marked]),
                yerr=interval_errors(tpr, [p.tpr.interval_list() for p in marked]),
                fmt="none",
                ecolor=color,
                elinewidth=1,
                capsize=3,
                alpha=0.8,
            )
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set_xlabel("adversarials accepted (false positive rate)")
    axes.set_ylabel("pristine images accepted (true positive rate)")
    title = f"Tolerance randomization on {report.model}\n{report.pristine} pristine, {report.adversarial} adversarials"
    if bars:
        title += f"\nbars: {INTERVAL_LABEL}, operating points for 90/95/100% accepted"
    axes.set_title(title, fontsize=9)
    axes.set_xlim(-0.02, 1.02)
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    save_png(figure, path)


# The WIFS 2019 paper's table (tau_train = 1e-3, tau_attack = tau_test), in percent:
# tau -> (error, CW success); and its ResNet. Drawn beside ours for the data set it used.
PAPER: dict[str, dict[str, Any]] = {
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


def _sweep_value(row: SweepRow, key: str) -> Rate | float | None:
    """A sweep column's metric: its error or success (a ``Rate``), or its mean L2."""
    if key == "error":
        return row.error.rate
    if row.attack is None:
        return None
    return row.attack.success_rate if key == "success_rate" else row.attack.mean_l2


PANELS = (
    ("error", "classification error (%)", 100.0),
    ("success_rate", "attack success (%)", 100.0),
    ("mean_l2", "mean L2 of the adversarials", 1.0),
)
DECOUPLED_L2_LABEL = "mean L2 of the adversarials\nstill misclassified at tau_test"


def plot_sweep(report: SweepReport, path: Path) -> None:
    """One panel per metric the sweep measured (error; with an attack, success and mean
    L2) against tau on a log axis; the baseline, when there is one, as a horizontal line.
    Error and success carry their 95% intervals as error bars, the baseline's as a band."""
    plt = pyplot()

    rows = report.rows
    if report.tol_attack:
        x_label = "tau_test"
    else:
        x_label = "tau (tau_attack = tau_test)" if report.attack else "solver tolerance tau"
    panels = [panel for panel in PANELS if any(_sweep_value(row, panel[0]) is not None for row in rows)]
    figure, axes_list = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), dpi=120, squeeze=False)
    bars = False
    for axes, (key, label, scale) in zip(axes_list[0], panels, strict=True):
        drawn = [(row.tol, _sweep_value(row, key)) for row in rows if _sweep_value(row, key) is not None]
        taus = [tol for tol, _ in drawn]
        rates = [value for _, value in drawn if isinstance(value, Rate)]
        if rates:
            bars = True
            values = [float(rate.value or 0.0) for rate in rates]
            axes.errorbar(
                taus,
                [value * scale for value in values],
                yerr=interval_errors(values, [rate.interval_list() for rate in rates], scale),
                marker="o",
                capsize=3,
                label=report.model,
            )
        else:
            axes.plot(
                taus, [float(typing.cast(float, value)) * scale for _, value in drawn], marker="o", label=report.model
            )
        baseline = report.baseline
        found = None if baseline is None else _sweep_value(baseline, key)
        if baseline is not None and found is not None:
            level = found.value if isinstance(found, Rate) else found
            axes.axhline(float(level or 0.0) * scale, color="grey", linestyle="--", label=baseline.model)
            if isinstance(found, Rate) and found.interval is not None:
                low, high = found.interval
                axes.axhspan(low * scale, high * scale, color="grey", alpha=0.15, linewidth=0)
        paper = PAPER.get(PAPER_DATASETS.get(report.dataset, ""))
        # the paper's attack column is at tau_attack = tau_test only
        comparable = key == "error" or (key == "success_rate" and not report.tol_attack)
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
        axes.set_ylabel(DECOUPLED_L2_LABEL if key == "mean_l2" and report.tol_attack else label)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    attack = f", {report.attack} on {report.count} images" if report.attack else ""
    made_at = f" made at tau_attack = {report.tol_attack:g}" if report.tol_attack else ""
    note = f"\nbars (baseline: band): {INTERVAL_LABEL} intervals" if bars else ""
    figure.suptitle(f"{report.model}: the tau table{attack}{made_at}{note}", fontsize=10)
    figure.tight_layout()
    save_png(figure, path)


def plot_grid(report: GridReport, path: Path) -> None:
    """Attack success (colour and the first number; its 95% interval below it) and mean L2
    of the adversarials (the last number) for every (tau_attack, tau_test) cell, one panel
    per model."""
    plt = pyplot()
    import numpy as np

    models = report.models
    tol_attacks, tols = report.tol_attacks, report.tols
    width = max(3.2, 0.9 * len(tols) + 1.6)
    row_height = 0.9
    figure, axes_list = plt.subplots(
        1, len(models), figsize=(width * len(models), row_height * len(tol_attacks) + 2.0), dpi=120, squeeze=False
    )
    image = None
    for axes, described in zip(axes_list[0], models, strict=True):
        cells = report.cells_of(described.model)
        success = np.array([[100 * float(cells[(a, t)].success_rate.value or 0.0) for t in tols] for a in tol_attacks])
        image = axes.imshow(success, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        for row, tol_attack in enumerate(tol_attacks):
            for column, tol_test in enumerate(tols):
                cell = cells[(tol_attack, tol_test)]
                l2, interval = cell.mean_l2, cell.success_rate.interval_list()
                text = f"{success[row, column]:.0f}%" + ("" if interval is None else f"\n{format_interval(interval)}")
                text += "" if l2 is None else f"\n{l2:.2f}"
                colour = "black" if success[row, column] > 60 else "white"
                axes.text(column, row, text, ha="center", va="center", fontsize=7, color=colour)
        axes.set_xticks(range(len(tols)), [f"{t:g}" for t in tols], fontsize=8)
        axes.set_yticks(range(len(tol_attacks)), [f"{t:g}" for t in tol_attacks], fontsize=8)
        axes.set_xlabel("tau_test")
        axes.set_ylabel("tau_attack")
        axes.set_title(f"{described.model}\n(tau_train = {described.tol_train:g})", fontsize=9)
    figure.colorbar(image, ax=list(axes_list[0]), label="attack success (%)", shrink=0.9)
    below = f"its {INTERVAL_LABEL} interval and the mean L2 of those still fooled below"
    title = f"{report.attack} on {report.count} images: success at tau_test ({below})"
    figure.suptitle(title, fontsize=10, y=1.0, va="bottom")  # above the panel titles (saved with a tight box)
    save_png(figure, path, tight=True)
