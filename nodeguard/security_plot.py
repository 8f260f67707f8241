"""The security picture (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

from .storage import atomic_write


def plot_security(report, path: Path) -> None:
    """Left: robust accuracy against the L2 budget, defended and undefended. Right: each
    attacker's success against the undefended and the defended model, against its mean L2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (curve_axes, points_axes) = plt.subplots(1, 2, figsize=(11, 4.8), dpi=120)
    eps = [point["eps"] for point in report.curve]
    curve_axes.plot(
        eps,
        [p["robust_accuracy_defended"] for p in report.curve],
        marker="o",
        label=f"defended (V = {report.votes}, v_min = {report.vmin})",
    )
    curve_axes.plot(eps, [p["robust_accuracy_undefended"] for p in report.curve], marker="s", label="undefended")
    curve_axes.set_xlabel("L2 budget eps")
    curve_axes.set_ylabel("robust accuracy (best attacker per image)")
    curve_axes.set_ylim(-0.02, 1.02)
    curve_axes.grid(alpha=0.3)
    curve_axes.legend(fontsize=8)
    curve_axes.set_title(f"{report.model}: {report.count} test digits", fontsize=10)

    for index, point in enumerate(report.points):
        if point["mean_l2"] is None:
            continue
        color = f"C{index % 10}"
        points_axes.scatter(point["mean_l2"], point["success_rate"], marker="s", color=color, alpha=0.5)
        points_axes.scatter(point["mean_l2"], point["defended_success"], marker="o", color=color, label=point["label"])
        points_axes.plot(
            [point["mean_l2"]] * 2, [point["success_rate"], point["defended_success"]], color=color, alpha=0.4
        )
    points_axes.set_xlabel("mean L2 of the adversarials")
    points_axes.set_ylabel("attack success (square: undefended, dot: defended)")
    points_axes.set_ylim(-0.02, 1.02)
    points_axes.grid(alpha=0.3)
    points_axes.legend(fontsize=7, loc="center right")
    points_axes.set_title(f"pristine accepted {report.pristine_accepted:.0%}", fontsize=10)
    figure.tight_layout()
    atomic_write(path, lambda handle: figure.savefig(handle, format="png"))
    plt.close(figure)
