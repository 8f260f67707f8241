"""What the 8-bit rounding does to the defense's ROC: the same adversarials as floats and on the grid.

    python examples/rounding_roc.py --model odenet-mnist5k --count 1000 --attack fmn --seed 0

`nodeguard roc` judges the adversarials as they would be saved, on the 8-bit grid
(nodeguard.attacks.boundary rounds each and keeps it adversarial). This script judges the
attack set's float adversarials (before rounding, at margin about -1e-4) with the same
defense, draws and pristine digits, and prints one JSON object: per V the AUC and the
share rejected at vmin = V - 1, floats beside 8-bit, and the median |margin| of each.
The attack set and the votes are the registry's (made if missing).
"""

from __future__ import annotations

import argparse
import json

from nodeguard.defense.votes import stored_votes
from nodeguard.experiments.roc import roc_curves
from nodeguard.models.loading import load_model
from nodeguard.stages.attack import make_attack_set
from nodeguard.stages.roc import RocSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="odenet-mnist5k")
    parser.add_argument("--count", type=int, default=RocSettings.count)
    parser.add_argument("--attack", default="fmn")
    parser.add_argument("--votes", default="5,10,15,20")
    parser.add_argument("--seed", type=int, default=0, help="public seed of the defense's draws")
    args = parser.parse_args()
    settings = RocSettings(
        votes=tuple(int(v) for v in args.votes.split(",")), count=args.count, seed=args.seed, attack=args.attack
    )
    loaded = load_model(args.model)
    attack_set, report = make_attack_set(settings.attack_settings(), loaded)
    defense = settings.defense()
    pristine, _ = stored_votes(loaded, defense, attack_set.clean, "pristine")
    both = attack_set.success & attack_set.success_8bit  # the same images in both rows
    result = {"model": loaded.name, "set": report.set, "pristine": len(attack_set), "adversarial": int(both.sum())}
    for name, images, margins in (
        ("float", attack_set.adversarial[both], attack_set.margin[both]),
        ("8bit", attack_set.adversarial_8bit[both].float() / 255, attack_set.margin_8bit[both]),
    ):
        votes, _ = stored_votes(loaded, defense, images, f"{name} adversarial")
        curves = roc_curves(pristine, votes, settings.votes)
        result[name] = {
            "median_abs_margin": float(margins.abs().median()),
            "auc": {curve.votes: curve.auc for curve in curves},
            "rejected_at_vmin_v_minus_1": {curve.votes: curve.rejected_at(curve.votes - 1).value for curve in curves},
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
