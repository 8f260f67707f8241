"""How the headline ROC moves with the defense's draws and the training seed: one table.

    python examples/variation_table.py out/figures     # after: bash examples/figures.sh variation

Reads the `nodeguard roc --json` files that examples/figures.sh writes (the quickstart's,
quickstart-roc-fmn.json; other public draws, variation-roc-draws*.json; other training
seeds, variation-roc-model*.json) and prints a Markdown table: per run, the AUC and the
share of adversarials rejected at vmin = V - 1, at each V; then the range a rerun should
land in: for the rejected share, the union of the runs' 95% Clopper-Pearson intervals
(the digits and the runs together), for the AUC the runs' range widened by 0.01. Below
it, the same for the quickstart's `defend` operating point (V = 15, vmin = 12: `roc`
draws the first 15 of its 20 tolerances per image as `defend --votes 15` does, so its
point is `defend`'s verdict), and per run the pristine digits accepted at vmin = V - 1
and `roc`'s "rejected at 100%" (the largest vmin that accepts every pristine digit).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from nodeguard.experiments.roc import RocCurve
from nodeguard.intervals import Rate, union_of_intervals
from nodeguard.plain import from_plain
from nodeguard.stages.roc import RocReport

AUC_WIDENING = 0.01
DEFEND_VOTES, DEFEND_VMIN = 15, 12


def read_report(path: Path) -> RocReport:
    """A ``nodeguard roc --json`` file as the typed report."""
    return from_plain(RocReport, json.loads(path.read_text()))


def runs(folder: Path) -> list[tuple[str, RocReport]]:
    """(label, ROC report) of every run: the quickstart, other draws, other training seeds."""
    found = [("training seed 0, draws 0 (the quickstart)", read_report(folder / "quickstart-roc-fmn.json"))]
    for path in sorted(folder.glob("variation-roc-draws*.json")):
        seed = path.stem.removeprefix("variation-roc-draws")
        found.append((f"training seed 0, draws {seed}", read_report(path)))
    for path in sorted(folder.glob("variation-roc-model*.json")):
        seed = path.stem.removeprefix("variation-roc-model")
        found.append((f"training seed {seed}, draws 0", read_report(path)))
    return found


def curve_of(report: RocReport, votes: int) -> RocCurve:
    """The ROC curve of ``votes``."""
    (curve,) = [curve for curve in report.curves if curve.votes == votes]
    return curve


def format_share(rate: Rate | None) -> str:
    """A share in percent with one decimal; "n/a" for none."""
    return "n/a" if rate is None or rate.value is None else f"{rate.value:.1%}"


def percent_range(low: float, high: float) -> str:
    """A share range in whole percent, rounded outward."""
    return f"{math.floor(low * 100)}-{math.ceil(high * 100)}%"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where examples/figures.sh wrote its files")
    folder = parser.parse_args(argv).folder
    if not (folder / "quickstart-roc-fmn.json").is_file():
        parser.error(f"{folder} holds no quickstart-roc-fmn.json (run: bash examples/figures.sh variation)")
    found = runs(folder)
    votes = [curve.votes for curve in found[0][1].curves]
    print("AUC / rejected at vmin = V - 1\n")
    print("| run | " + " | ".join(f"V = {v}" for v in votes) + " |")
    print("|---|" + "---|" * len(votes))
    for label, report in found:
        cells = [f"{curve.auc:.3f} / {curve.rejected_at(curve.votes - 1).value:.1%}" for curve in report.curves]
        print(f"| {label} ({report.adversarial} digits) | " + " | ".join(cells) + " |")
    cells = []
    for v in votes:
        aucs = [curve_of(report, v).auc for _, report in found]
        union = union_of_intervals([curve_of(report, v).rejected_at(v - 1) for _, report in found])
        assert union is not None, "every run has adversarials"
        low, high = union
        auc_low = math.floor((min(aucs) - AUC_WIDENING) * 100) / 100
        auc_high = math.ceil((max(aucs) + AUC_WIDENING) * 100) / 100
        cells.append(f"{auc_low:.2f}-{auc_high:.2f} / {percent_range(low, high)}")
    print(f"| **the range a rerun should land in** ({len(found)} runs) | " + " | ".join(cells) + " |")

    print(f"\nThe defend step (V = {DEFEND_VOTES}, vmin = {DEFEND_VMIN}), per run, and each run's pristine digits:\n")
    defended = []
    for label, report in found:
        rejected = curve_of(report, DEFEND_VOTES).rejected_at(DEFEND_VMIN)
        defended.append(rejected)
        accepted = [curve_of(report, v).points[v - 1].tpr.count for v in votes]
        at_100 = [format_share(curve.rejected_at_100_accept) for curve in report.curves]
        print(
            f"- {label}: defend rejects {rejected.count} of {rejected.total} ({rejected.value:.1%}); pristine "
            f"accepted at vmin = V - 1: {', '.join(str(a) for a in accepted)} of {report.pristine}; rejected at "
            f"100%: {', '.join(at_100)}"
        )
    union = union_of_intervals(defended)
    assert union is not None, "every run has adversarials"
    low, high = union
    print(f"- the range a rerun should land in: {percent_range(low, high)} ({low:.3f}-{high:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
