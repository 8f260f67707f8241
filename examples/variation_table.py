"""How the headline ROC moves with the defense's draws and the training seed: one table.

    python examples/variation_table.py out/figures     # after: bash examples/figures.sh variation

Reads the `nodeguard roc --json` files that examples/figures.sh writes (the quickstart's,
quickstart-roc-fmn.json; other public draws, variation-roc-draws*.json; other training
seeds, variation-roc-model*.json) and prints a Markdown table: per run, AUC and the
share of adversarials rejected with every pristine digit accepted, at each V, and per
source of variation the range of these figures over its runs, the quickstart's included.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def runs(folder: Path) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The ROC reports per source of variation: {"draws": [(label, report)], "training": [...]}."""
    quickstart = folder / "quickstart-roc-fmn.json"
    base = [("training seed 0, draws seed 0 (the quickstart)", json.loads(quickstart.read_text()))]
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {"draws": list(base), "training": list(base)}
    for path in sorted(folder.glob("variation-roc-draws*.json")):
        seed = path.stem.removeprefix("variation-roc-draws")
        found["draws"].append((f"training seed 0, draws seed {seed}", json.loads(path.read_text())))
    for path in sorted(folder.glob("variation-roc-model*.json")):
        seed = path.stem.removeprefix("variation-roc-model")
        found["training"].append((f"training seed {seed}, draws seed 0", json.loads(path.read_text())))
    return found


def row(label: str, report: dict[str, Any]) -> str:
    cells = [f"{curve['auc']:.3f} / {curve['rejected_at_100_accept']:.1%}" for curve in report["curves"]]
    return f"| {label} ({report['adversarial']} digits) | " + " | ".join(cells) + " |"


def spread(reports: list[dict[str, Any]]) -> str:
    cells = []
    for position in range(len(reports[0]["curves"])):
        aucs = [report["curves"][position]["auc"] for report in reports]
        rejected = [report["curves"][position]["rejected_at_100_accept"] for report in reports]
        cells.append(f"{min(aucs):.3f}-{max(aucs):.3f} / {min(rejected):.1%}-{max(rejected):.1%}")
    return " | ".join(cells)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    found = runs(Path(argv[0]))
    votes = [curve["votes"] for curve in found["draws"][0][1]["curves"]]
    print("AUC / rejected with every pristine digit accepted (vmin = V - 1)\n")
    print("| run | " + " | ".join(f"V = {v}" for v in votes) + " |")
    print("|---|" + "---|" * len(votes))
    seen = set()
    for source in ("draws", "training"):
        for label, report in found[source]:
            if label not in seen:
                seen.add(label)
                print(row(label, report))
    for source, what in (("draws", "the defense's draws"), ("training", "the training seed")):
        reports = [report for _, report in found[source]]
        print(f"| **range over {what}** ({len(reports)} runs) | {spread(reports)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
