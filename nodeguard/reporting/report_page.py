"""One self-contained HTML page of a gathered model report: tables, pictures, flags, verdict, commands.

The pictures are drawn by :mod:`nodeguard.reporting.plots` and
:mod:`nodeguard.reporting.security_plots` and embedded as base64 PNGs, so the page is
one file to attach. Every figure sits beside the ``nodeguard`` command that reproduces it.
"""

from __future__ import annotations

import base64
import html
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodeguard.experiments.indicators import Indicator, indicator_mark, row_flags
from nodeguard.intervals import INTERVAL_LABEL, format_number
from nodeguard.reporting.plots import plot_roc
from nodeguard.reporting.security_plots import plot_security
from nodeguard.stages.report import ModelReport

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
pre { background: #f4f4f4; padding: 0.6em; white-space: pre-wrap; word-break: break-all; font-size: 0.85em; }
.verdict { background: #eef5ff; border-left: 4px solid #36c; padding: 0.6em 1em; }
.unreliable { color: #b00; font-weight: bold; } .expected { color: #666; } .ok { color: #070; }
img { max-width: 100%; border: 1px solid #ddd; }
td.code { text-align: left; font-family: monospace; font-size: 0.85em; }
"""


def _escape(value: Any) -> str:
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[Any]], code: int | None = None) -> str:
    """An HTML table; column ``code`` (a command) left-aligned in a monospace font."""

    def cell(index: int, value: Any) -> str:
        return f'<td class="code">{_escape(value)}</td>' if index == code else f"<td>{_escape(value)}</td>"

    head = "".join(f"<th>{_escape(name)}</th>" for name in header)
    body = "".join("<tr>" + "".join(cell(i, value) for i, value in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _command(text: str | None) -> str:
    return f"<pre>{_escape(text)}</pre>" if text else ""


def _picture(draw: Callable[[Any, Path], None], report: Any, alt: str) -> str:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "picture.png"
        draw(report, path)
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_escape(alt)}" src="data:image/png;base64,{encoded}">'


def _training(report: ModelReport) -> str:
    training = report.config.get("training", {})
    metrics = report.metrics
    error = metrics.get("test_error")
    rows = [
        ["data set", report.config.get("dataset")],
        ["architecture", report.config.get("model", {}).get("arch")],
        ["tol_train", metrics.get("tol_train")],
        ["test error", "n/a" if error is None else f"{error:.1%}"],
        ["epochs", metrics.get("epochs")],
        ["NFE per forward", metrics.get("nfe")],
        ["training seed", training.get("seed")],
        ["training time (s)", format_number(metrics.get("seconds"), ".0f")],
    ]
    return "<h2>Training</h2>" + _table(["setting", "value"], rows) + _command(report.train_command)


def _roc(report: ModelReport) -> str:
    if report.roc is None:
        return ""
    roc = report.roc
    rows = []
    for curve in roc.curves:
        vmin = curve.votes - 1
        point = next(item for item in curve.points if item.vmin == vmin)
        rejected = curve.rejected_at(vmin).format(".1%", ".1%")
        accepted = point.tpr.format(".1%", ".1%")
        rows.append([curve.votes, f"{curve.auc:.3f}", vmin, rejected, accepted])
    text = (
        f"<h2>Detection: the defense's ROC</h2><p>{roc.pristine} pristine digits, {roc.adversarial} adversarials "
        f"of attack set {_escape(roc.set)}; draws: {_escape(roc.draws)}.</p>"
    )
    header = ["V", "AUC", "v_min", "adversarials rejected", "pristine accepted"]
    return text + _table(header, rows) + _picture(plot_roc, roc, "ROC") + _command(report.roc_command)


def _security(report: ModelReport) -> str:
    if not report.security:
        return ""
    stored = report.security[0]
    values = stored.report
    flags = row_flags(values.indicators)
    rows = [
        [
            row.label,
            format_number(row.median_l2, ".3f"),
            row.success_rate.format(".0%"),
            row.rejected.format(".0%"),
            row.defended_success.format(".0%"),
            format_number(row.attack_seconds, ".0f"),
            flags.get(row.label, ""),
        ]
        for row in values.points
    ]
    header = ["attacker", "median L2", "success", "rejected", "defended success", "seconds", "flags"]
    parts = [
        "<h2>Security: attackers who know more</h2>",
        f"<p>{values.count} test digits; V = {values.votes}, v_min = {values.vmin}; range "
        f"[{values.tol_range[0]:g}, {values.tol_range[1]:g}]; draws: {_escape(values.draws)}; pristine accepted "
        f"{_escape(values.pristine_accepted.format())}.</p>",
        _table(header, rows),
        _command(stored.command),
        "<h3>Robust accuracy (worst case over attackers per image)</h3>",
        _table(
            ["L2 budget", "defended", "undefended"],
            [
                [
                    f"{point.eps:g}",
                    point.robust_accuracy_defended.format(".0%"),
                    point.robust_accuracy_undefended.format(".0%"),
                ]
                for point in values.curve
            ],
        ),
        _picture(plot_security, values, "security"),
        "<h3>Checks of the evaluation</h3>",
        _indicators(values),
        _budget_check(values),
        "<h3>Optimality (AttackBench)</h3>",
        _table(
            ["attacker", "undefended", "defended"],
            [
                [item.label, format_number(item.undefended, ".2f"), format_number(item.defended, ".2f")]
                for item in values.optimality
            ],
        ),
        f'<p class="verdict"><b>Verdict.</b> {_escape(values.verdict)}</p>',
    ]
    others = report.security[1:]
    if others:
        listed = "".join(f"<li>{_escape(item.key)}: {_command(item.command)}</li>" for item in others)
        parts.append(
            f"<p>Other stored security reports (show one with <code>--security KEY</code>):</p><ul>{listed}</ul>"
        )
    return "".join(parts)


def _budget_check(values: Any) -> str:
    check = values.budget_check
    if check is None:
        return ""
    outcome = "within" if check.converged else "<b>above</b>"
    own = check.fooled.format(".1%")
    return (
        f"<p>Budget check: {_escape(check.label)} rerun with {check.steps_more} steps (its own: {check.steps}) on "
        f"the first {check.count} images fools the undefended model on {check.fooled_more.count} of them, against "
        f"{check.fooled.count} ({_escape(own)}): {outcome} that interval"
        f"{'' if check.converged else ': not converged'}.</p>"
    )


def _tau_tables(report: ModelReport) -> str:
    if not report.tau_tables:
        return ""
    parts = ["<h2>The tau tables (Carrara et al., WIFS 2019)</h2>"]
    for table in report.tau_tables:
        errors, coupled = table.kind == "error", table.kind == "attack"
        first = "error" if errors else "attack success" if coupled else "misclassified"
        header = ["tau", first, "images"] + (["NFE per image"] if errors else []) + (["mean L2"] if coupled else [])
        rows = [
            [f"{row.tol:g}", row.rate.format(".1%"), f"{row.rate.count} of {row.rate.total}"]
            + ([format_number(row.nfe, ".1f")] if errors else [])
            + ([format_number(row.mean_l2, ".3f")] if coupled else [])
            for row in table.rows
        ]
        parts.append(f"<h3>{_escape(table.title)}</h3>" + _table(header, rows) + _command(table.command))
    return "".join(parts)


def _certified(report: ModelReport) -> str:
    if not report.certified:
        return ""
    parts = ["<h2>Certified accuracy: randomized smoothing (Cohen et al. 2019)</h2>"]
    for item in report.certified:
        values = item.report
        parts.append(
            f"<p>sigma {values.sigma:g}, the first {values.count} test images, n0 = {values.n0}, n = {values.n}, "
            f"alpha = {values.alpha:g}; the largest radius these samples can certify: {values.max_radius:.2f}.</p>"
        )
        rows = [[f"{point.radius:g}", point.certified_accuracy.format(".0%")] for point in values.curve]
        parts.append(_table(["L2 radius", "certified accuracy"], rows) + _command(item.command))
    return "".join(parts)


def _indicators(values: Any) -> str:
    if not values.indicators:
        return "<p>This report was stored before nodeguard checked its evaluations: rerun the command above.</p>"
    items = []
    for item in values.indicators:
        if item.fired:
            word = indicator_mark(item)
            kind = "unreliable" if item.unreliable else "expected"
            items.append(
                f'<li><span class="{kind}">{word}</span>: {_escape(item.name)} on {_escape(item.about)}: '
                f"{item.count} of {item.total} images. {_escape(item.meaning)}. "
                f"What to do: {_escape(item.action)}.</li>"
            )
    fired_names = {item.name for item in values.indicators if item.fired}
    quiet = sorted({item.name for item in values.indicators} - fired_names)
    if quiet:
        items.append(f'<li><span class="ok">not fired</span>: {_escape(", ".join(quiet))}</li>')
    return "<ul>" + "".join(items) + "</ul>"


def _set_checks(indicators: list[Indicator]) -> str:
    """The checks that fired on an attack set (as its summary.json keeps them), or "none"."""
    fired = [item for item in indicators if item.fired]
    if not indicators:
        return "not checked"
    return (
        ", ".join(
            f"{item.name} {item.count}/{item.total}" + (" UNRELIABLE" if item.unreliable else "") for item in fired
        )
        or "none"
    )


def _attacks(report: ModelReport) -> str:
    if not report.attacks:
        return ""
    rows = []
    for item in report.attacks:
        summary = item.summary
        rows.append(
            [
                summary.attack,
                summary.count,
                summary.success_rate_8bit.format(),
                format_number(summary.mean_l2_8bit, ".3f"),
                format_number(summary.seconds, ".0f"),
                _set_checks(summary.indicators),
                item.command,
            ]
        )
    header = ["attack", "images", "success (8-bit)", "mean L2 (8-bit)", "seconds", "checks fired", "command"]
    return "<h2>Stored attack sets</h2>" + _table(header, rows, code=len(header) - 1)


def report_page(report: ModelReport) -> str:
    """The whole HTML page of a gathered report (one string, pictures embedded).

    Args:
        report: from :func:`nodeguard.stages.report.gather_report`.

    Returns:
        A complete HTML5 document.
    """
    versions = ", ".join(f"{name} {value}" for name, value in report.versions.items())
    missing = "".join(f"<li>{_escape(line)}</li>" for line in report.missing)
    body = [
        f"<h1>nodeguard report: {_escape(report.model)}</h1>",
        "<p>Tolerance randomization (Carrara, Caldelli, Falchi, Amato, ICPR 2021 workshops) on a Neural ODE "
        f"classifier. Rates carry {INTERVAL_LABEL}; L2 is over pixels in [0, 1].</p>",
        f"<p>Written by {_escape(versions)} on {_escape(report.device)}.</p>",
        _training(report),
        _tau_tables(report),
        _roc(report),
        _security(report),
        _certified(report),
        _attacks(report),
        f"<h2>Not stored yet</h2><ul>{missing}</ul>" if missing else "",
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>nodeguard report: {_escape(report.model)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>"
    )
