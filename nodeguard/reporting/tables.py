"""The sweep table as the papers lay it out (tau across, metrics down) and the decoupling
grid (one table per model): cells, CSV, Markdown, JSON.

Every rate is a :class:`~nodeguard.intervals.Rate` and is shown with its 95% interval: in
the sweep table in percent as the row's other numbers (``"93.0 [86, 97]"``), in the grid
``"93% [86%, 97%] / 1.23"``; on one line or (``interval_below``) with the interval on a
line of its own. The CSV files give its count and total, and its interval's ends as
``X_ci_low`` and ``X_ci_high``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from nodeguard.defense.files import DefendReport
from nodeguard.errors import setting_error
from nodeguard.intervals import Rate, format_interval
from nodeguard.plain import to_plain
from nodeguard.stages.grid import GridReport
from nodeguard.stages.sweep import AttackCell, SweepReport, SweepRow
from nodeguard.storage.files import atomic_write_text, json_text


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _number(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _rate_cell(rate: Rate | None, digits: int, below: bool) -> str:
    """A rate and its interval in percent, without the sign (the row says %): "2.2 [1.4, 3.3]"."""
    if rate is None or rate.interval is None:
        return "" if rate is None else _percent(rate.value)
    low, high = (format(100 * end, f".{digits}f") for end in rate.interval)
    separator = "\n" if below else " "
    return f"{_percent(rate.value)}{separator}[{low}, {high}]"


# each metric of the sweep table: its label and its cell of a column (None: not measured)
METRICS: tuple[tuple[str, Callable[[SweepRow, bool], str | None]], ...] = (
    ("error %", lambda row, below: _rate_cell(row.error.rate, 1, below)),
    ("mean NFE", lambda row, below: "-" if row.tol is None else f"{row.error.nfe:.1f}"),
    (
        "attack success %",
        lambda row, below: None if row.attack is None else _rate_cell(row.attack.success_rate, 0, below),
    ),
    ("mean L2", lambda row, below: None if row.attack is None else _number(row.attack.mean_l2, ".3f")),
    (
        "mean MSE (x1e-2)",
        lambda row, below: None if row.attack is None else _number(_scaled(row.attack.mean_mse, 100), ".3f"),
    ),
)


def _success_cell(cell: AttackCell, below: bool) -> str:
    return _rate_cell(cell.success_rate, 0, below)


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _columns(report: SweepReport) -> list[SweepRow]:
    return ([report.baseline] if report.baseline is not None else []) + list(report.rows)


# the decoupled sweep's mean L2 and MSE are over the adversarials still misclassified at
# each tau_test: fewer digits where the success falls, so the label says so
STILL_FOOLED = " (still fooled)"


def table_cells(report: SweepReport, interval_below: bool = False) -> tuple[list[str], list[list[str]]]:
    """(header, rows) with one column per tau (and the baseline first), one row per metric
    measured; a rate shows its interval beside it, or below it with ``interval_below``.
    In the decoupled sweep (``tol_attack`` set) the mean L2 and MSE rows say that they are
    over the adversarials still misclassified at each tau."""
    columns = _columns(report)
    header = ["metric"] + [row.model or "" if row.tol is None else f"tau={row.tol:g}" for row in columns]
    body = []
    for label, cell in METRICS:
        if report.tol_attack is not None and label.startswith("mean ") and label != "mean NFE":
            label += STILL_FOOLED
        cells = [cell(column, interval_below) for column in columns]
        if all(value is None for value in cells):
            continue
        body.append([label] + [value or "" for value in cells])
    return header, body


def markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    """The lines of one Markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(row) + " |" for row in body
    ]


def to_markdown(report: SweepReport) -> str:
    return "\n".join(markdown_table(*table_cells(report))) + "\n"


def csv_text(keys: list[str], rows: Iterable[dict[str, Any]]) -> str:
    """The one CSV writer: a header of ``keys``, then each row's values under them (other
    keys left out, missing ones empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def rate_columns(name: str, rate: Rate | None, count: str, total: str) -> dict[str, Any]:
    """A rate's CSV columns: ``name`` (the share), ``count``, ``total``, ``name_ci_low``, ``name_ci_high``."""
    if rate is None:
        return {}
    low, high = rate.interval if rate.interval is not None else (None, None)
    return {name: rate.value, count: rate.count, total: rate.total, f"{name}_ci_low": low, f"{name}_ci_high": high}


SWEEP_KEYS = ["model", "tol", "error", "nfe", "success_rate", "mean_l2", "mean_mse"]
SWEEP_KEYS += ["error_ci_low", "error_ci_high", "success_rate_ci_low", "success_rate_ci_high"]
SWEEP_KEYS += ["errors", "images", "successes", "attacked"]


def _sweep_line(report: SweepReport, row: SweepRow) -> dict[str, Any]:
    line: dict[str, Any] = {"model": row.model or report.model, "tol": "" if row.tol is None else row.tol}
    line["nfe"] = row.error.nfe
    line.update(rate_columns("error", row.error.rate, "errors", "images"))
    if row.attack is not None:
        line.update(rate_columns("success_rate", row.attack.success_rate, "successes", "attacked"))
        line.update(mean_l2=row.attack.mean_l2, mean_mse=row.attack.mean_mse)
    return line


def to_csv(report: SweepReport) -> str:
    """The sweep as CSV: one line per column of the table (the baseline first)."""
    return csv_text(SWEEP_KEYS, [_sweep_line(report, row) for row in _columns(report)])


DEFEND_KEYS = ["path", "prediction", "v_agree", "votes", "accepted", "error"]


def defend_to_csv(report: DefendReport) -> str:
    """``defend``'s verdicts, one line per file: voted, unreadable (``error``) or skipped."""
    rows = [{**to_plain(image), "votes": report.votes, "error": ""} for image in report.images]
    rows += [{"path": error.path, "error": error.error} for error in report.errors]
    rows += [{"path": item.path, "error": f"skipped: {item.reason}"} for item in report.skipped]
    return csv_text(DEFEND_KEYS, rows)


def _write(report: Any, path: Path, csv_text: Callable[[Any], str], markdown_text: Callable[[Any], str]) -> None:
    """Write ``report`` as .csv, .md or .json, chosen by the file's suffix (atomically)."""
    writers = {".csv": csv_text, ".md": markdown_text, ".json": lambda r: json_text(r.to_dict(), indent=2) + "\n"}
    suffix = path.suffix.lower()
    if suffix not in writers:
        raise setting_error("out", f"must end in .csv, .md or .json, got {path.name}")
    atomic_write_text(path, writers[suffix](report))


def write_table(report: SweepReport, path: Path) -> None:
    """Write the sweep report as .csv (one line per tau), .md (the table) or .json."""
    _write(report, path, to_csv, to_markdown)


GRID_KEYS = ["model", "tol_train", "tol_attack", "tol_test", "success_rate", "mean_l2"]
GRID_KEYS += ["success_rate_ci_low", "success_rate_ci_high", "successes", "attacked"]


def grid_table(report: GridReport, model: str, interval_below: bool = False) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of one model's grid: tau_attack down, tau_test across, "success% / L2"
    cells; a success rate shows its interval beside it ("93% [86%, 97%] / 1.23"), or below
    the cell with ``interval_below``."""
    cells = report.cells_of(model)
    header = ["tau_attack \\ tau_test"] + [f"{tol:g}" for tol in report.tols]
    body = []
    for tol_attack in report.tol_attacks:
        row = [f"{tol_attack:g}"]
        for tol_test in report.tols:
            cell = cells[(tol_attack, tol_test)]
            l2 = "-" if cell.mean_l2 is None else f"{cell.mean_l2:.2f}"
            rate = cell.success_rate
            if interval_below and rate.interval is not None:
                row.append(f"{rate.value:.0%} / {l2}\n{format_interval(rate.interval_list())}")
            else:
                row.append(f"{rate.format('.0%')} / {l2}")
        body.append(row)
    return header, body


def grid_to_markdown(report: GridReport) -> str:
    parts = []
    for described in report.models:
        title = f"{described.model} (tau_train {described.tol_train:g}): success / mean L2{STILL_FOOLED}"
        parts.append("\n".join([title, "", *markdown_table(*grid_table(report, described.model))]))
    return "\n\n".join(parts) + "\n"


def grid_to_csv(report: GridReport) -> str:
    lines = [
        {
            "model": cell.model,
            "tol_train": cell.tol_train,
            "tol_attack": cell.tol_attack,
            "tol_test": cell.tol_test,
            "mean_l2": cell.mean_l2,
            **rate_columns("success_rate", cell.success_rate, "successes", "attacked"),
        }
        for cell in report.grid
    ]
    return csv_text(GRID_KEYS, lines)


def write_grid(report: GridReport, path: Path) -> None:
    """Write the decoupling grid as .csv (one line per cell), .md (one table per model) or .json."""
    _write(report, path, grid_to_csv, grid_to_markdown)
