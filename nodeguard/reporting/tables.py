"""The sweep table as the papers lay it out (tau across, metrics down) and the decoupling
grid (one table per model): cells, CSV, Markdown, JSON.

A rate that carries its 95% interval (``X_ci`` beside ``X``) is shown with it, in the
sweep table in percent as the row's other numbers (``"93.0 [86, 97]"``), in the grid
``"93% [86%, 97%] / 1.23"``; on one line or (``interval_below``) with the interval on a
line of its own. The CSV files give its ends as ``X_ci_low`` and ``X_ci_high``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from nodeguard.errors import setting_error
from nodeguard.intervals import format_interval, format_rate
from nodeguard.storage.files import atomic_write_text, json_text

Formatter = Callable[[dict[str, Any]], str]


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _number(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


METRICS = (
    ("error %", "error", _percent),
    ("mean NFE", "nfe", lambda v: _number(v, ".1f")),
    ("attack success %", "success_rate", _percent),
    ("mean L2", "mean_l2", lambda v: _number(v, ".3f")),
    ("mean MSE (x1e-2)", "mean_mse", lambda v: "" if v is None else f"{100 * v:.3f}"),
)


# the rates that carry intervals, and the decimals of their intervals' ends (in percent)
INTERVAL_DIGITS = {"error": 1, "success_rate": 0}


def _percent_cell(rate: float, interval: list[float], digits: int, below: bool) -> str:
    """A rate and its interval in percent, without the sign (the row says %): "2.2 [1.4, 3.3]"."""
    low, high = (format(100 * end, f".{digits}f") for end in interval)
    separator = "\n" if below else " "
    return f"{_percent(rate)}{separator}[{low}, {high}]"


def _flat_intervals(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with each ``X_ci`` also as ``X_ci_low`` and ``X_ci_high`` (for CSV)."""
    flat = dict(row)
    for key, value in row.items():
        if key.endswith("_ci"):
            flat[f"{key}_low"], flat[f"{key}_high"] = (None, None) if value is None else value
    return flat


def table_cells(report: dict[str, Any], interval_below: bool = False) -> tuple[list[str], list[list[str]]]:
    """(header, rows) with one column per tau (and the baseline first), one row per metric;
    a rate with an interval (``error_ci``, ``success_rate_ci``) shows it beside it, or below
    it with ``interval_below``."""
    columns: list[dict[str, Any]] = []
    header = ["metric"]
    if report.get("baseline"):
        columns.append(report["baseline"])
        header.append(report["baseline"]["model"])
    for row in report["rows"]:
        columns.append(row)
        header.append(f"tau={row['tol']:g}")
    body = []
    for label, key, fmt in METRICS:
        if not any(key in column for column in columns):
            continue
        cells = [label]
        for column in columns:
            rate, interval = column.get(key), column.get(f"{key}_ci")
            if key in INTERVAL_DIGITS and rate is not None and interval is not None:
                cells.append(_percent_cell(rate, interval, INTERVAL_DIGITS[key], interval_below))
            else:
                cells.append(fmt(rate) if key != "nfe" or "tol" in column else "-")
        body.append(cells)
    return header, body


def markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    """The lines of one Markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(row) + " |" for row in body
    ]


def to_markdown(report: dict[str, Any]) -> str:
    return "\n".join(markdown_table(*table_cells(report))) + "\n"


def csv_text(keys: list[str], rows: Iterable[dict[str, Any]]) -> str:
    """The one CSV writer: a header of ``keys``, then each row's values under them (other
    keys left out, missing ones empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_csv(report: dict[str, Any]) -> str:
    keys = ["model", "tol", "error", "nfe", "success_rate", "mean_l2", "mean_mse"]
    keys += ["error_ci_low", "error_ci_high", "success_rate_ci_low", "success_rate_ci_high"]
    baseline = [_flat_intervals({**report["baseline"], "tol": ""})] if report.get("baseline") else []
    return csv_text(keys, baseline + [_flat_intervals({"model": report["model"], **row}) for row in report["rows"]])


DEFEND_KEYS = ["path", "prediction", "v_agree", "votes", "accepted", "error"]


def defend_to_csv(report: dict[str, Any]) -> str:
    """``defend``'s verdicts, one line per file: voted, unreadable (``error``) or skipped."""
    rows = [{**image, "votes": report["votes"], "error": ""} for image in report["images"]]
    rows += [{"path": error["path"], "error": error["error"]} for error in report["errors"]]
    rows += [{"path": item["path"], "error": f"skipped: {item['reason']}"} for item in report["skipped"]]
    return csv_text(DEFEND_KEYS, rows)


def _write(report: dict[str, Any], path: Path, csv_text: Formatter, markdown_text: Formatter) -> None:
    """Write ``report`` as .csv, .md or .json, chosen by the file's suffix (atomically)."""
    writers = {".csv": csv_text, ".md": markdown_text, ".json": lambda r: json_text(r, indent=2) + "\n"}
    suffix = path.suffix.lower()
    if suffix not in writers:
        raise setting_error("out", f"must end in .csv, .md or .json, got {path.name}")
    atomic_write_text(path, writers[suffix](report))


def write_table(report: dict[str, Any], path: Path) -> None:
    """Write the sweep report as .csv (one line per tau), .md (the table) or .json."""
    _write(report, path, to_csv, to_markdown)


GRID_KEYS = ["model", "tol_train", "tol_attack", "tol_test", "success_rate", "mean_l2"]
GRID_KEYS += ["success_rate_ci_low", "success_rate_ci_high"]


def grid_table(report: dict[str, Any], model: str, interval_below: bool = False) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of one model's grid: tau_attack down, tau_test across, "success% / L2"
    cells; a success rate with an interval shows it beside it ("93% [86%, 97%] / 1.23"),
    or below the cell with ``interval_below``."""
    cells = {(cell["tol_attack"], cell["tol_test"]): cell for cell in report["grid"] if cell["model"] == model}
    header = ["tau_attack \\ tau_test"] + [f"{tol:g}" for tol in report["tols"]]
    body = []
    for tol_attack in report["tol_attacks"]:
        row = [f"{tol_attack:g}"]
        for tol_test in report["tols"]:
            cell = cells[(tol_attack, tol_test)]
            l2 = "-" if cell["mean_l2"] is None else f"{cell['mean_l2']:.2f}"
            rate, interval = cell["success_rate"], cell.get("success_rate_ci")
            if interval is None:
                row.append(f"{100 * rate:.0f}% / {l2}")
            elif interval_below:
                row.append(f"{rate:.0%} / {l2}\n{format_interval(interval)}")
            else:
                row.append(f"{format_rate(rate, interval, '.0%')} / {l2}")
        body.append(row)
    return header, body


def grid_to_markdown(report: dict[str, Any]) -> str:
    parts = []
    for described in report["models"]:
        title = f"{described['model']} (tau_train {described['tol_train']:g}): success / mean L2"
        parts.append("\n".join([title, "", *markdown_table(*grid_table(report, described["model"]))]))
    return "\n\n".join(parts) + "\n"


def grid_to_csv(report: dict[str, Any]) -> str:
    return csv_text(GRID_KEYS, [_flat_intervals(cell) for cell in report["grid"]])


def write_grid(report: dict[str, Any], path: Path) -> None:
    """Write the decoupling grid as .csv (one line per cell), .md (one table per model) or .json."""
    _write(report, path, grid_to_csv, grid_to_markdown)
