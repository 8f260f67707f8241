"""How the security table moves with the defense's draws, the attacks' seeds, the training seed and the rounding.

    python examples/security_variation_table.py out/figures    # after: bash examples/figures.sh security-variation

Reads the ``nodeguard security --json`` files that examples/figures.sh writes: the
quickstart's model with the defense's public draws 0 to 4 (security-draws*.json, the same
attack sets judged by other draws), with the attackers' seeds 1 and 2
(security-attack*.json: EOT-CW, AutoAttack-rand and Square made again; CW draws nothing),
and the models trained with seeds 1 and 2 (security-model*.json, their own attack sets).
Prints a Markdown table: per attacker, its defended success in each group of runs (the
lowest and highest value), the seed-0 run's own 95% Clopper-Pearson interval (it counts
only which digits were drawn), and the range a rerun should land in: the union of every
run's interval (the digits and the runs together), in whole percent rounded outward.
Every file of those names in the folder counts: remove the ones of an earlier run first.
The same for the robust accuracy of the defended model at each L2 budget, and per run the
chosen v_min and the pristine digits it accepts.

Where the folder holds ``examples/rounding_security.py --json`` files
(security-rounding-*.json, one per model), a column gives what the 8-bit rounding moves:
per row, the float adversarials' defended success at their 8-bit versions' draws minus the
8-bit one, in points, lowest and highest over those models. A rerun rounds as this run
did, so the rounding is a column of its own and not part of the union.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from nodeguard.intervals import Rate, union_of_intervals
from nodeguard.plain import from_plain

GROUPS = (
    ("security-draws", "draws"),
    ("security-attack", "attack seed"),
    ("security-model", "training seed"),
)
ROUNDING_PREFIX = "security-rounding-"


def read_runs(folder: Path) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Group name -> [(run label, the ``security --json`` object)], the seed-0 run first in each."""
    base = folder / "security-draws0.json"
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for prefix, group in GROUPS:
        paths = sorted(folder.glob(f"{prefix}*.json"))
        runs = [(f"{group} {path.stem.removeprefix(prefix)}", json.loads(path.read_text())) for path in paths]
        if prefix != "security-draws":  # the seed-0 run belongs to every group
            runs.insert(0, (f"{group} 0", json.loads(base.read_text())))
        found[group] = runs
    return found


def read_rounding(folder: Path) -> list[dict[str, Any]]:
    """The ``rounding_security.py --json`` objects in the folder (security-rounding-*.json)."""
    return [json.loads(path.read_text()) for path in sorted(folder.glob(f"{ROUNDING_PREFIX}*.json"))]


def rounding_moves(rounding: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Row label (as :func:`row_rates` names it) -> per model, float at the 8-bit draws
    minus 8-bit, in whole points (defended success; robust accuracy for the L2 rows)."""
    moves: dict[str, list[int]] = {}

    def points(pair: dict[str, Any]) -> int:
        grid, floats = rate(pair["8bit"]), rate(pair["float_8bit_draws"])
        return round(100 * (floats.count / floats.total - grid.count / grid.total))

    for result in rounding:
        for row in result["rows"]:
            pair = {name: row[name]["defended_success"] for name in ("8bit", "float_8bit_draws")}
            moves.setdefault(row["label"], []).append(points(pair))
        for point in result["robust_accuracy_defended"]:
            if point["eps"] > 0:
                moves.setdefault(f"robust accuracy, defended, L2 {point['eps']:g}", []).append(points(point))
    return moves


def move_range(moves: list[int]) -> str:
    """'-2 to +6', '0', '+1' (points); 'n/a' for none."""
    if not moves:
        return "n/a"
    low, high = min(moves), max(moves)

    def signed(value: int) -> str:
        return "0" if value == 0 else f"{value:+d}"

    return signed(low) if low == high else f"{signed(low)} to {signed(high)}"


def rate(data: dict[str, Any]) -> Rate:
    """A rate of the JSON as the typed value."""
    return from_plain(Rate, data)


def row_rates(report: dict[str, Any]) -> dict[str, Rate]:
    """Attacker label -> its defended success; "robust accuracy at L2 E" -> the defended one."""
    rates = {point["label"]: rate(point["defended_success"]) for point in report["points"]}
    for point in report["curve"]:
        if point["eps"] > 0:
            rates[f"robust accuracy, defended, L2 {point['eps']:g}"] = rate(point["robust_accuracy_defended"])
    return rates


def value_range(rates: list[Rate]) -> str:
    """The lowest and highest share, in whole percent ("n/a": no rate has a value)."""
    values = [r.value for r in rates if r.value is not None]
    if not values:
        return "n/a"
    low, high = round(min(values) * 100), round(max(values) * 100)
    return f"{low}%" if low == high else f"{low}-{high}%"


def union_range(rates: list[Rate]) -> str:
    """The union of the rates' 95% intervals, in whole percent rounded outward ("n/a": none has one)."""
    union = union_of_intervals(rates)
    if union is None:
        return "n/a"
    return f"{math.floor(union[0] * 100)}-{math.ceil(union[1] * 100)}%"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where examples/figures.sh wrote its files")
    folder = parser.parse_args(argv).folder
    if not (folder / "security-draws0.json").is_file():
        parser.error(f"{folder} holds no security-draws0.json (run: bash examples/figures.sh security-variation)")
    groups = read_runs(folder)
    per_group = {group: [row_rates(report) for _, report in runs] for group, runs in groups.items()}
    seed0 = per_group["draws"][0]
    for group, runs in groups.items():
        if len(runs) == 1:
            print(
                f"warning: no {group} runs of their own in {folder}: that column is the seed-0 run alone",
                file=sys.stderr,
            )
    for label, report in groups["attack seed"][1:]:
        if report.get("attack_seed", None) == 0:  # written since 0.14.0: the run's own attack seed
            print(f"warning: {label} was made with attack seed 0, as the seed-0 run", file=sys.stderr)
    every = [rates for group in per_group.values() for rates in group]
    counts = ", ".join(f"{group}: {len(runs)} run{'s' if len(runs) > 1 else ''}" for group, runs in groups.items())
    print(f"Defended success (robust accuracy for the last rows); {counts} (the seed-0 run in each)\n")
    rounding = read_rounding(folder)
    moves = rounding_moves(rounding)
    rounding_column = [f"8-bit rounding, points ({len(rounding)} model{'s' if len(rounding) > 1 else ''})"]
    columns = [*groups, *(rounding_column if rounding else [])]
    print("| row | " + " | ".join(columns) + " | seed 0, its interval | **a rerun should land in** |")
    print("|---|" + "---|" * (len(columns) + 2))
    for label, first in seed0.items():
        cells = [value_range([rates[label] for rates in group if label in rates]) for group in per_group.values()]
        if rounding:
            cells.append(move_range(moves.get(label, [])))
        own = first.format(".0%")  # as `nodeguard security` prints it
        union = union_range([rates[label] for rates in every if label in rates])
        print(f"| {label} | " + " | ".join(cells) + f" | {own} | {union} |")
    print("\nSuccess against the undefended model and median L2 of the 8-bit adversarials, lowest-highest")
    print("over every run\n")
    print("| attacker | success (undefended) | median L2 |")
    print("|---|---|---|")
    reports = [report for runs in groups.values() for _, report in runs]
    for point in groups["draws"][0][1]["points"]:
        label = point["label"]
        same = [p for report in reports for p in report["points"] if p["label"] == label]
        medians = [p["median_l2"] for p in same if p["median_l2"] is not None]
        l2 = (
            "n/a"
            if not medians
            else f"{min(medians):.3f}" + ("" if min(medians) == max(medians) else f"-{max(medians):.3f}")
        )
        print(f"| {label} | {value_range([rate(p['success_rate']) for p in same])} | {l2} |")
    print()
    for runs in groups.values():
        for label, report in runs:
            accepted = rate(report["pristine_accepted"])
            print(
                f"- {label} ({report['model']}): v_min {report['vmin']}, pristine accepted "
                f"{accepted.count} of {accepted.total}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
