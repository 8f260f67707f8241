"""Compare a rerun's figures with the README's, against the ranges the docs state.

    python examples/check_figures.py out/figures          # after: bash examples/figures.sh quickstart
    bash examples/figures.sh --check                      # both, on an empty registry

Reads examples/readme-figures.yaml: for each figure of the README, the text the README
prints, the file of examples/figures.sh that gives it again and the field that holds it
(``complement: true``: the figure is 1 minus the field, a rejected share read from an
accepted one), and the range a rerun on another machine should land in (printed in the
README or docs/results.md, which says how each was measured). Prints one line per figure: the rerun's value, the
README's, the range, and "within" or "OUTSIDE" ("NOT RUN" when its file is missing).
Exits 0 only when every figure was found and lies within its range.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

FIGURES_FILE = Path(__file__).with_name("readme-figures.yaml")


def field_value(data: Any, path: str) -> float:
    """The number at a dotted path ("curves.0.auc": a list index where the part is a number).

    Raises:
        KeyError: the path leads nowhere, or not to a number.
    """
    for part in path.split("."):
        if isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            raise KeyError(path)
    if isinstance(data, bool) or not isinstance(data, (int, float)):
        raise KeyError(path)
    return float(data)


def check(figures: list[dict[str, Any]], folder: Path) -> tuple[list[str], bool]:
    """One line per figure and whether every figure was found and lies in its range.

    Args:
        figures: the entries of readme-figures.yaml (name, readme, value, range, file,
            field, and optionally complement).
        folder: where examples/figures.sh wrote its files.

    Returns:
        (lines, all within).
    """
    lines, within_all = [], True
    width = max(len(figure["name"]) for figure in figures)
    for figure in figures:
        low, high = figure["range"]
        expected = f"range [{low:g}, {high:g}]  (README: {figure['readme']}; {figure.get('range_text', '')})"
        path = folder / figure["file"]
        if not path.exists():
            within_all = False  # a check that ran nothing has not passed
            lines.append(f"{figure['name']:<{width}}  {'':>9}  {expected}  NOT RUN ({figure['file']} missing)")
            continue
        try:
            value = field_value(json.loads(path.read_text(encoding="utf-8")), figure["field"])
            value = 1.0 - value if figure.get("complement") else value
        except (KeyError, json.JSONDecodeError) as error:
            within_all = False
            lines.append(f"{figure['name']:<{width}}  {'':>9}  {expected}  UNREADABLE ({figure['file']}: {error})")
            continue
        verdict = "within" if low <= value <= high else "OUTSIDE"
        within_all &= verdict == "within"
        lines.append(f"{figure['name']:<{width}}  {value:>9.4g}  {expected}  {verdict}")
    return lines, within_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where examples/figures.sh wrote its files")
    parser.add_argument("--figures", type=Path, default=FIGURES_FILE, help="the README's figures (YAML)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder (run: bash examples/figures.sh --check)")
    if not args.figures.is_file():
        parser.error(f"{args.figures} does not exist")
    figures = yaml.safe_load(args.figures.read_text(encoding="utf-8"))["figures"]
    lines, within_all = check(figures, args.folder)
    print("\n".join(lines))
    ran = sum(1 for line in lines if "NOT RUN" not in line)
    counts = {
        word: sum(1 for line in lines if line.rstrip().endswith(word) or f"  {word} (" in line)
        for word in ("OUTSIDE", "UNREADABLE", "NOT RUN")
    }
    problems = ", ".join(f"{count} {word}" for word, count in counts.items() if count)
    print(f"{ran} of {len(figures)} figures checked: {'all within' if within_all else problems}")
    return 0 if within_all else 1


if __name__ == "__main__":
    sys.exit(main())
