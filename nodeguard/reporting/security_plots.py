"""The security pictures: robust accuracy with its bands, the margin-spread histogram, certified accuracy.

Drawn with :func:`nodeguard.reporting.plots.pyplot` and written atomically with
:func:`nodeguard.reporting.plots.save_png`. Every rate is drawn with its 95%
Clopper–Pearson interval (a band on curves, a bar on points).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodeguard.defense.smoothing import certified_point
from nodeguard.intervals import Rate
from nodeguard.reporting.plots import pyplot, save_png


def certified_curve(report: Any, radii: list[float]) -> tuple[list[float], list[float], list[float]]:
    """(accuracy, low, high) of a ``CertifyReport`` at each radius (its per-image certificates)."""
    accuracy, low, high = [], [], []
    for radius in radii:
        rate = report.accuracy_at(radius).certified_accuracy
        value = float(rate.value or 0.0)
        interval = rate.interval or (value, value)
        accuracy.append(value)
        low.append(interval[0])
        high.append(interval[1])
    return accuracy, low, high


def radius_grid(largest: float, points: int = 200) -> list[float]:
    """``points`` radii evenly from 0 to ``largest`` (a step curve needs a fine grid)."""
    return [largest * index / (points - 1) for index in range(points)]


def draw_certified(axes: Any, report: Any, largest: float, color: str, label: str | None = None) -> None:
    """The certified-accuracy step curve of ``report`` with its 95% band, on ``axes``."""
    radii = radius_grid(largest)
    accuracy, low, high = certified_curve(report, radii)
    text = label or f"{report.model}, sigma = {report.sigma:g}"
    axes.plot(radii, accuracy, color=color, label=f"certified: {text}", drawstyle="steps-post")
    axes.fill_between(radii, low, high, color=color, alpha=0.15, step="post")


def plot_certify(reports: list[Any], path: Path) -> None:
    """Certified accuracy against the L2 radius, one curve (with its band) per report."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=120)
    largest = max(max(report.max_radius for report in reports) * 1.05, 0.5)
    for index, report in enumerate(reports):
        draw_certified(axes, report, largest, f"C{index % 10}")
        axes.axvline(report.max_radius, color=f"C{index % 10}", linestyle=":", linewidth=0.8)
    axes.set_xlabel("L2 radius (pixels in [0, 1]); dotted: the largest radius n samples can certify")
    axes.set_ylabel("certified accuracy")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    first = reports[0]
    axes.set_title(
        f"randomized smoothing (Cohen et al. 2019), first {first.count} test images\n"
        f"n0 = {first.n0}, n = {first.n}, alpha = {first.alpha:g}; bands: 95% Clopper-Pearson over images",
        fontsize=9,
    )
    figure.tight_layout()
    save_png(figure, path)


def _values(rates: list[Rate]) -> list[float]:
    return [float("nan") if rate.value is None else rate.value for rate in rates]


def _band(axes: Any, x: list[float], rates: list[Rate], color: str) -> None:
    low = [rate.interval[0] if rate.interval else float("nan") for rate in rates]
    high = [rate.interval[1] if rate.interval else float("nan") for rate in rates]
    axes.fill_between(x, low, high, color=color, alpha=0.15)


def _error_bar(axes: Any, x: float, rate: Rate, **style: Any) -> None:
    if rate.value is None:
        return
    y, interval = rate.value, rate.interval
    errors = [[y - interval[0]], [interval[1] - y]] if interval else None
    axes.errorbar([x], [y], yerr=errors, capsize=2, linestyle="none", **style)


def _draw_curves(axes: Any, report: Any) -> None:
    eps = [point.eps for point in report.curve]
    defended = _values([p.robust_accuracy_defended for p in report.curve])
    undefended = _values([p.robust_accuracy_undefended for p in report.curve])
    # the undefended curve first, the defended one dashed on top: where they coincide, both show
    axes.plot(eps, undefended, marker="s", color="C1", label="undefended (tol_train)")
    _band(axes, eps, [p.robust_accuracy_undefended for p in report.curve], "C1")
    same = " = undefended at every eps" if defended == undefended else ""
    axes.plot(
        eps,
        defended,
        marker="o",
        markerfacecolor="none",
        linestyle="--",
        color="C0",
        zorder=3,
        label=f"defended (V = {report.votes}, v_min = {report.vmin}){same}",
    )
    _band(axes, eps, [p.robust_accuracy_defended for p in report.curve], "C0")
    largest = max(eps) if eps else 1.0
    for index, certified in enumerate(report.certified):
        radii = radius_grid(largest)
        points = [certified_point(certified.labels, certified.predictions, certified.radii, r) for r in radii]
        color = f"C{index + 2}"
        axes.plot(
            radii,
            _values([p.certified_accuracy for p in points]),
            color=color,
            drawstyle="steps-post",
            label=f"certified: {certified.model}, sigma = {certified.sigma:g} (the same digits)",
        )
        _band(axes, radii, [p.certified_accuracy for p in points], color)
    axes.set_xlabel("L2 budget eps (pixels in [0, 1])")
    axes.set_ylabel("robust accuracy (worst case over attackers)")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    axes.set_title(f"{report.model}: {report.count} test digits; bands: 95% Clopper-Pearson", fontsize=9)


def _distinct_colors(count: int) -> list[Any]:
    """``count`` colours, all different: matplotlib's tab10, then tab20 and its neighbours."""
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](index) for index in range(count)]
    maps = [colormaps[name] for name in ("tab20", "tab20b", "tab20c")]
    colors = [cmap(index) for cmap in maps for index in range(20)]
    return colors[:count] if count <= len(colors) else [colormaps["turbo"](i / max(count - 1, 1)) for i in range(count)]


def _draw_points(axes: Any, report: Any) -> None:
    palette = _distinct_colors(len(report.points))  # one colour per attacker, none repeated
    for index, point in enumerate(report.points):
        if point.mean_l2 is None:
            continue
        color = palette[index]
        _error_bar(axes, point.mean_l2, point.success_rate, marker="s", color=color, alpha=0.5)
        _error_bar(
            axes,
            point.mean_l2,
            point.defended_success,
            marker="o",
            color=color,
            label=point.label,
        )
    axes.set_xlabel("mean L2 of the adversarials")
    axes.set_ylabel("attack success (square: undefended, dot: defended)")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    if any(point.mean_l2 is not None for point in report.points):  # else no attacker has a point to name
        # below the axes, where it covers no point
        axes.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    axes.set_title(
        f"pristine accepted {report.pristine_accepted.format('.0%', '.0%')}; bars: 95% intervals", fontsize=9
    )


def _draw_spread(axes: Any, report: Any) -> None:
    import numpy as np

    if report.minimal_label is None or report.minimal_label not in report.spread_images:
        axes.text(0.5, 0.5, "no CW row: no minimal adversarials to measure", ha="center", transform=axes.transAxes)
        return
    images = report.spread_images[report.minimal_label]
    rises = np.array(images["high"]) - np.array(images["reference"])
    kappas = [check.kappa for check in report.kappa_checks]
    top = max([float(rises.max()) if len(rises) else 0.1, *kappas, 0.05]) * 1.1
    bins = np.linspace(0, top, 30)
    axes.hist(np.clip(rises, 0, top), bins=bins, color="C7", alpha=0.6, label=f"rise of {report.minimal_label}")
    axes.set_xlabel("margin rise over the defense's draws (logit): max over draws - margin at tol_train")
    axes.set_ylabel("adversarials")
    twin = axes.twinx()
    grid = np.linspace(0, top, 200)
    survival = [(rises < kappa).mean() if len(rises) else float("nan") for kappa in grid]
    twin.plot(grid, survival, color="C3", label="predicted share surviving every vote: P(rise < kappa)")
    for check in report.kappa_checks:
        _error_bar(twin, check.kappa, check.survived_every_vote, marker="o", color="C3")
        twin.scatter([check.kappa], _values([check.defended_success]), marker="x", color="C0")
    twin.scatter([], [], marker="o", color="C3", label="CW at kappa: share misclassified at every draw")
    twin.scatter([], [], marker="x", color="C0", label="CW at kappa: defended success")
    twin.set_ylim(-0.02, 1.02)
    twin.set_ylabel("share of adversarials")
    for kappa in kappas:
        axes.axvline(kappa, color="grey", linestyle=":", linewidth=0.8)
    handles = axes.get_legend_handles_labels()
    twin_handles = twin.get_legend_handles_labels()
    twin.legend(handles[0] + twin_handles[0], handles[1] + twin_handles[1], fontsize=7, loc="center right")
    predicted = ", ".join(
        f"{float(share):.0%} at kappa {value:.3f}"
        for share, value in report.predicted_kappa.items()
        if value is not None
    )
    axes.set_title(f"why the defense holds or fails: predicted survival {predicted}", fontsize=9)


def _draw_ranges(axes: Any, report: Any) -> None:
    import numpy as np

    ranges = [(report.tol_range, {p.label: p.rejected for p in report.points})]
    ranges += [(item.tol_range, {row.label: row.rejected for row in item.rows}) for item in report.ranges]
    labels = [p.label for p in report.points]
    width = 0.8 / len(ranges)
    for index, (tol_range, rows) in enumerate(ranges):
        x = np.arange(len(labels)) + index * width
        values = [float(rows[label].value or 0.0) for label in labels]
        errors = np.array(
            [
                [v - (rows[label].interval or (v, v))[0], (rows[label].interval or (v, v))[1] - v]
                for v, label in zip(values, labels, strict=True)
            ]
        ).T
        axes.bar(x, values, width, yerr=errors, capsize=2, label=f"range [{tol_range[0]:g}, {tol_range[1]:g}]")
    axes.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=60, ha="right", fontsize=7)
    axes.set_ylabel("adversarials rejected")
    axes.set_ylim(0, 1.02)
    axes.legend(fontsize=7)
    axes.set_title("the same adversarials, other defense ranges (same V, v_min)", fontsize=9)


def plot_security(report: Any, path: Path) -> None:
    """The security picture of a ``SecurityReport``:

    - robust accuracy against the L2 budget, defended and undefended, with 95% bands, and
      the certified accuracy of randomized smoothing when the report carries it;
    - each attacker's success against the undefended and the defended model, with bars;
    - the margin-spread histogram of the minimal adversarials with the predicted share
      that survives every vote, and the CW rows' outcomes beside it;
    - with other tolerance ranges, the share each range rejects per attacker.
    """
    plt = pyplot()
    figure, grid = plt.subplots(2, 2, figsize=(13, 10), dpi=110)
    axes_list = grid.ravel()
    _draw_curves(axes_list[0], report)
    _draw_points(axes_list[1], report)
    _draw_spread(axes_list[2], report)
    if report.ranges:
        _draw_ranges(axes_list[3], report)
    else:
        axes_list[3].axis("off")
    figure.tight_layout()
    save_png(figure, path)
