"""What the 8-bit rounding does to the security table: each row's adversarials as floats and on the grid.

    python examples/rounding_security.py --model odenet-mnist5k --count 100 --seed 0 --votes 15 \\
        --aa-steps 20 --aa-eot-iter 5 --square-queries 500 --square-draws 2

`nodeguard security` judges every attacker's adversarials as they would be saved, on the
8-bit grid (nodeguard.attacks.boundary rounds each one and keeps it adversarial where it
can). This script takes the same attack sets (the registry's, made if missing) and judges
their float adversarials, before rounding, with the same defense: the same draws, V and
v_min (chosen from the pristine votes as `security` chooses it, or --vmin). It prints
a Markdown table, per row the attack's success, the defended success (95% Clopper-Pearson
intervals) and the share rejected, 8-bit beside float, then the robust accuracy (defended)
at each L2 budget; `--json` prints the same as one JSON object instead. The 8-bit column
is `security`'s own rows (the same library function, the same votes).

The defense's public-seed draws come from an image's 8-bit levels, so a float adversarial
may draw other tolerances than its 8-bit version: the "float" column moves by the
rounding and by those draws. The "float, 8-bit draws" column solves each float
adversarial at its 8-bit version's tolerances: it moves by the rounding alone.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from nodeguard.defense.randomization import Votes
from nodeguard.defense.votes import stored_votes
from nodeguard.experiments.attack_sets import AttackSet
from nodeguard.experiments.security import JudgedAttack, judge, robust_accuracy_curve
from nodeguard.intervals import Rate, format_number
from nodeguard.models.evaluation import classify_alone
from nodeguard.models.loading import LoadedModel, load_model
from nodeguard.progress import StderrLogProgress
from nodeguard.stages.security import SecuritySettings, pristine_operating_point, security_attack_sets

GRIDS = (("8bit", True), ("float", False), ("float_8bit_draws", False))


def tolerances_at_8bit_draws(
    float_tolerances: torch.Tensor, grid_tolerances: torch.Tensor, success: torch.Tensor, success_8bit: torch.Tensor
) -> torch.Tensor:
    """The tolerances to solve the float adversarials at: their 8-bit versions' draws.

    Args:
        float_tolerances: (M, V) float64, the draws of the M float adversarials
            (``attack_set.adversarial[success]``, in row order).
        grid_tolerances: (K, V) float64, the draws of the K 8-bit adversarials
            (``attack_set.successful_8bit_images()``, in row order).
        success: (N,) bool, the rows whose float adversarial succeeds (M of them).
        success_8bit: (N,) bool, the rows whose 8-bit adversarial succeeds (K of them).

    Returns:
        (M, V) float64: row by row the 8-bit version's draws, or the float's own where
        only the float succeeds.
    """
    tolerances = float_tolerances.clone()
    grid_position = {int(row): position for position, row in enumerate(success_8bit.nonzero().squeeze(1).tolist())}
    for position, row in enumerate(success.nonzero().squeeze(1).tolist()):
        if row in grid_position:
            tolerances[position] = grid_tolerances[grid_position[row]]
    return tolerances


def votes_at_8bit_draws(loaded: LoadedModel, float_votes: Votes, grid_votes: Votes, attack_set: AttackSet) -> Votes:
    """The float adversarials' votes at the tolerances drawn for their 8-bit versions.

    The public seed's draws come from an image's 8-bit levels (``round(x * 255)``), so a
    float adversarial whose grid finish is not plain rounding draws other tolerances than
    its 8-bit version; at the same draws the two differ by the rounding alone.

    Args:
        loaded: the model voting.
        float_votes: the defense's votes on ``attack_set.adversarial[attack_set.success]``.
        grid_votes: its votes on ``attack_set.successful_8bit_images()``.
        attack_set: the attack set both come from.

    Returns:
        ``Votes`` (with logits) on the float adversarials, in row order, at
        :func:`tolerances_at_8bit_draws`, at ``float_votes``' operating point.
    """
    tolerances = tolerances_at_8bit_draws(
        float_votes.tolerances, grid_votes.tolerances, attack_set.success, attack_set.success_8bit
    )
    images = attack_set.adversarial[attack_set.success]
    logits = classify_alone(loaded.model, images, tolerances).logits
    return Votes(logits.argmax(2), tolerances, float_votes.num_classes, logits, float_votes.vmin)


def rate_text(rate: Rate) -> str:
    """'84% [75%, 91%]': the share and its 95% Clopper-Pearson interval."""
    return rate.format(".0%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="odenet-mnist5k")
    parser.add_argument("--count", type=int, default=SecuritySettings.count)
    parser.add_argument("--seed", type=int, default=0, help="public seed of the defense's draws")
    parser.add_argument("--votes", type=int, default=15)
    parser.add_argument("--vmin", type=int, default=None, help="default: chosen as security chooses it")
    parser.add_argument("--aa-steps", type=int, default=SecuritySettings.autoattack_steps)
    parser.add_argument("--aa-eot-iter", type=int, default=SecuritySettings.autoattack_eot_iter)
    parser.add_argument("--square-queries", type=int, default=SecuritySettings.square_queries)
    parser.add_argument("--square-draws", type=int, default=SecuritySettings.square_draws)
    parser.add_argument("--attack-seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args()
    settings = SecuritySettings(
        count=args.count,
        votes=args.votes,
        vmin=args.vmin,
        seed=args.seed,
        autoattack_steps=args.aa_steps,
        autoattack_eot_iter=args.aa_eot_iter,
        square_queries=args.square_queries,
        square_draws=args.square_draws,
        attack_seed=args.attack_seed,
    )
    loaded = load_model(args.model)
    attacked = security_attack_sets(settings, loaded, StderrLogProgress())
    first = attacked[0].attack_set
    pristine_votes, vmin = pristine_operating_point(settings, loaded, first.clean, StderrLogProgress())
    defense = settings.defense(vmin)
    pristine_votes = pristine_votes.at(vmin)
    pristine_ok = pristine_votes.accepted() & (pristine_votes.prediction() == first.labels)
    judged: dict[str, list[JudgedAttack]] = {name: [] for name, _ in GRIDS}
    one_way: list[int] = []  # per row, images that succeed only as a float or only on the grid
    for item in attacked:
        attack_set, attack = item.attack_set, item.attacker.attack
        images = {
            "8bit": attack_set.successful_8bit_images(),
            "float": attack_set.adversarial[attack_set.success],
        }
        votes = {
            name: stored_votes(loaded, defense, images[name], f"{attack}-adversarial ({name})")[0].at(vmin)
            for name in images
        }
        votes["float_8bit_draws"] = votes_at_8bit_draws(loaded, votes["float"], votes["8bit"], attack_set)
        for name, on_grid in GRIDS:
            judged[name].append(judge(item.attacker, attack_set, item.set_key, votes[name], on_8bit_grid=on_grid))
        one_way.append(int((attack_set.success != attack_set.success_8bit).sum()))
    curves = {name: robust_accuracy_curve(judged[name], pristine_ok, settings.eps) for name, _ in GRIDS}
    result: dict[str, Any] = {
        "model": loaded.name,
        "count": len(first),
        "votes": settings.votes,
        "vmin": vmin,
        "seed": settings.seed,
        "attack_seed": settings.attack_seed,
        "attack_sets": [item.set_key for item in attacked],
        "rows": [
            {
                "label": judged["8bit"][i].row.label,
                "success_one_way_only": one_way[i],
                **{
                    name: {
                        "success": judged[name][i].row.success_rate.to_dict(),
                        "rejected": judged[name][i].row.rejected.to_dict(),
                        "defended_success": judged[name][i].row.defended_success.to_dict(),
                        "median_l2": judged[name][i].row.median_l2,
                        "median_abs_margin": judged[name][i].row.median_abs_margin_8bit,
                    }
                    for name, _ in GRIDS
                },
            }
            for i in range(len(attacked))
        ],
        "robust_accuracy_defended": [
            {"eps": point.eps, **{name: curves[name][j].robust_accuracy_defended.to_dict() for name, _ in GRIDS}}
            for j, point in enumerate(curves["8bit"])
        ],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{loaded.name}: {len(first)} test digits, V = {settings.votes}, v_min = {vmin}, seed {settings.seed}\n")
    print(
        "| row | success, 8-bit / float | defended success, 8-bit | float | float, 8-bit draws "
        "| rejected, 8-bit / float / float at 8-bit draws | median abs margin, 8-bit / float |"
    )
    print("|---|---|---|---|---|---|---|")
    for i, item in enumerate(attacked):
        grid, floats, same = (judged[name][i].row for name, _ in GRIDS)
        cells = [
            f"{grid.success_rate.value:.0%} / {floats.success_rate.value:.0%}",
            rate_text(grid.defended_success),
            rate_text(floats.defended_success),
            rate_text(same.defended_success),
            " / ".join(format_number(row.rejected.value, ".0%") for row in (grid, floats, same)),
            " / ".join(format_number(row.median_abs_margin_8bit, ".3g") for row in (grid, floats)),
        ]
        print(f"| {item.attacker.label} | " + " | ".join(cells) + " |")
    print(f"\nImages that succeed only as a float or only on the grid, over every row: {sum(one_way)}")
    print("\n| L2 budget | robust accuracy, defended, 8-bit | float | float, 8-bit draws |")
    print("|---|---|---|---|")
    for j, point in enumerate(curves["8bit"]):
        rates = [rate_text(curves[name][j].robust_accuracy_defended) for name, _ in GRIDS]
        print(f"| {point.eps:g} | " + " | ".join(rates) + " |")


if __name__ == "__main__":
    main()
