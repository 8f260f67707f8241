"""The sweep table as the papers lay it out (tau across, metrics down): cells, CSV, Markdown."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from nodeguard.errors import ConfigError
from nodeguard.storage.files import atomic_write_text


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


def table_cells(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) with one column per tau (and the baseline first), one row per metric."""
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
            cells.append(fmt(column.get(key)) if key != "nfe" or "tol" in column else "-")
        body.append(cells)
    return header, body


def to_markdown(report: dict[str, Any]) -> str:
    header, body = table_cells(report)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def to_csv(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    keys = ["model", "tol", "error", "nfe", "success_rate", "mean_l2", "mean_mse"]
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    if report.get("baseline"):
        writer.writerow({**report["baseline"], "tol": ""})
    for row in report["rows"]:
        writer.writerow({"model": report["model"], **row})
    return buffer.getvalue()


def write_table(report: dict[str, Any], path: Path) -> None:
    """Write the report as .csv, .md or .json, chosen by the file's suffix."""
    suffix = path.suffix.lower()
    writers = {".csv": to_csv, ".md": to_markdown, ".json": lambda r: json.dumps(r, indent=2) + "\n"}
    if suffix not in writers:
        raise ConfigError(f"`out` must end in .csv, .md or .json, got {path.name}")
    atomic_write_text(path, writers[suffix](report))


GRID_KEYS = ["model", "tol_train", "tol_attack", "tol_test", "success_rate", "mean_l2"]


def grid_to_markdown(report: dict[str, Any]) -> str:
    from nodeguard.stages.grid import grid_table

    parts = []
    for described in report["models"]:
        header, body = grid_table(report, described["model"])
        lines = [f"{described['model']} (tau_train {described['tol_train']:g}): success / mean L2", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def grid_to_csv(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=GRID_KEYS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(report["grid"])
    return buffer.getvalue()


def write_grid(report: dict[str, Any], path: Path) -> None:
    """Write the decoupling grid as .csv (one line per cell), .md (one table per model) or .json."""
    suffix = path.suffix.lower()
    writers = {".csv": grid_to_csv, ".md": grid_to_markdown, ".json": lambda r: json.dumps(r, indent=2) + "\n"}
    if suffix not in writers:
        raise ConfigError(f"`out` must end in .csv, .md or .json, got {path.name}")
    atomic_write_text(path, writers[suffix](report))
