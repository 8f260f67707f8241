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
from collections import Counter
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


VERDICTS = ("within", "OUTSIDE", "UNREADABLE", "NOT RUN")


def judged(figures: list[dict[str, Any]], folder: Path) -> list[tuple[str, str]]:
    """(verdict, line) per figure; the verdict is one of :data:`VERDICTS`.

    Args:
        figures: the entries of readme-figures.yaml (name, readme, value, range, file,
            field, and optionally complement and range_text).
        folder: where examples/figures.sh wrote its files.
    """
    found = []
    width = max(len(figure["name"]) for figure in figures)
    for figure in figures:
        low, high = figure["range"]
        expected = f"range [{low:g}, {high:g}]  (README: {figure['readme']}; {figure.get('range_text', '')})"
        path = folder / figure["file"]
        if not path.exists():  # a check that ran nothing has not passed
            found.append(
                ("NOT RUN", f"{figure['name']:<{width}}  {'':>9}  {expected}  NOT RUN ({figure['file']} missing)")
            )
            continue
        try:
            value = field_value(json.loads(path.read_text(encoding="utf-8")), figure["field"])
            value = 1.0 - value if figure.get("complement") else value
        except (KeyError, json.JSONDecodeError) as error:
            line = f"{figure['name']:<{width}}  {'':>9}  {expected}  UNREADABLE ({figure['file']}: {error})"
            found.append(("UNREADABLE", line))
            continue
        verdict = "within" if low <= value <= high else "OUTSIDE"
        found.append((verdict, f"{figure['name']:<{width}}  {value:>9.4g}  {expected}  {verdict}"))
    return found


def check(figures: list[dict[str, Any]], folder: Path) -> tuple[list[str], bool]:
    """One line per figure and whether every figure was found and lies in its range.

    Returns:
        (lines, all within): see :func:`judged`.
    """
    found = judged(figures, folder)
    return [line for _, line in found], all(verdict == "within" for verdict, _ in found)


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
    found = judged(figures, args.folder)
    print("\n".join(line for _, line in found))
    counts = Counter(verdict for verdict, _ in found)
    problems = ", ".join(f"{counts[verdict]} {verdict}" for verdict in VERDICTS[1:] if counts[verdict])
    checked = len(found) - counts["NOT RUN"]
    print(f"{checked} of {len(figures)} figures checked: {problems or 'all within'}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
