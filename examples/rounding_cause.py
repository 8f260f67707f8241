"""Why EOT-CW's 8-bit adversarials get fewer digits past the defense than its floats.

    python examples/rounding_cause.py --model odenet-mnist5k --count 100 --seed 0 --votes 15

`examples/rounding_security.py` finds that EOT-CW's float adversarials fool the defended
model on 2 to 6 more of 100 digits than their 8-bit versions, at the same tolerances,
while every other row moves by at most 3 points either way. This script tests one
explanation. The clean digits lie on the 8-bit grid, so rounding each pixel of an
adversarial to the nearest level sets every perturbation component smaller than half a
level (1/510) back to zero: besides moving pixels by up to half a level, it pulls the
image toward the clean one. EOT-CW spreads its perturbation to lower the margin averaged
over the defense's range, and the grid finish (nodeguard.attacks.boundary) checks only
that the rounded image stays misclassified at tol_attack.

On the rows whose float and 8-bit adversarials both succeed at tol_attack, each variant
is judged at the tolerances the defense draws for the 8-bit adversarial (the same V,
v_min and public seed as `security`), so only the image changes:

- ``float``: the float adversarial (for CW, after it was moved back to margin -kappa);
- ``grid_finish``: the 8-bit adversarial `security` judges. For EOT-CW it is the nearest
  rounding of the float (outward rounding where that lost the adversarial at tol_attack);
  for CW it is made from the attack's own result before the move to the margin, so it is
  not a rounding of ``float``;
- ``nearest``: the float rounded to the nearest level;
- ``small_zeroed``: the float with only its components below half a level set to zero (the
  rest kept as floats): the pull toward the clean image alone;
- ``random_sign``: the float plus the nearest rounding's error with a random sign in each
  pixel, ``--samples`` draws: a change of the same size in every pixel, with no pull
  toward the clean image;
- ``stochastic``: the float rounded up or down at random with the probabilities that keep
  its mean (on the grid, unbiased, but moving pixels further than nearest rounding),
  ``--samples`` draws.

If ``small_zeroed`` loses about what ``nearest`` loses and ``random_sign`` does not, the
loss comes from the pull toward the clean image, not from the size of the change. Every
variant is counted against the float on the same rows (lost: the float succeeds and the
variant does not; gained: the reverse); the draws' variants give their mean over draws.
It also counts the rows that succeed at tol_attack only as a float (judged out of these
counts). The rows: EOT-CW, and CW at kappa = 0.05, whose adversarials are not aimed at
the randomized model (CW at kappa = 0, the set EOT-CW starts from, is made but not
judged: the defense rejects nearly all of it). A Markdown table, or ``--json``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from nodeguard.defense.randomization import Votes
from nodeguard.defense.votes import stored_votes
from nodeguard.experiments.attack_sets import AttackSet
from nodeguard.models.evaluation import classify_alone
from nodeguard.models.loading import LoadedModel, load_model
from nodeguard.progress import StderrLogProgress
from nodeguard.stages.security import SecuritySettings, pristine_operating_point, security_attack_sets

HALF_LEVEL = 0.5 / 255
VARIANTS = ("float", "grid_finish", "nearest", "small_zeroed", "random_sign", "stochastic")


def nearest_rounding(images: torch.Tensor) -> torch.Tensor:
    """Each pixel rounded to the nearest 8-bit level (as nodeguard.attacks.boundary rounds).

    Args:
        images: (N, C, H, W) float32 in [0, 1].

    Returns:
        (N, C, H, W) float32 on the 8-bit grid (levels / 255).
    """
    return (images * 255).round().clamp(0, 255) / 255


def stochastic_rounding(adversarial: torch.Tensor, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each pixel rounded to the level below or above with probabilities that keep its mean.

    Args:
        adversarial: (N, C, H, W) float32 in [0, 1].
        clean: (N, C, H, W) float32 in [0, 1], on the 8-bit grid: a pixel the adversarial
            leaves unchanged stays at its level exactly.
        generator: the random generator of the coin flips.

    Returns:
        (N, C, H, W) float32 on the 8-bit grid (levels / 255), whose expectation is ``adversarial``.
    """
    levels = (clean.double() * 255).round() + (adversarial.double() - clean.double()) * 255
    below = levels.floor()
    up = torch.rand(levels.shape, generator=generator, dtype=torch.float64) < (levels - below)
    return ((below + up.double()).clamp(0, 255) / 255).float()


def small_components_zeroed(adversarial: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """``adversarial`` with every component of its perturbation below half a level set to zero.

    Args:
        adversarial: (N, C, H, W) float32 in [0, 1].
        clean: (N, C, H, W) float32 in [0, 1], on the 8-bit grid.

    Returns:
        (N, C, H, W) float32: clean + delta where |delta| >= 1/510, clean elsewhere.
    """
    delta = adversarial - clean
    return clean + torch.where(delta.abs() < HALF_LEVEL, torch.zeros_like(delta), delta)


def random_sign_change(adversarial: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``adversarial`` plus its nearest rounding's change with a random sign in each pixel.

    Every pixel moves by as much as nearest rounding moves it, up or down with equal
    chances, so the change has the rounding's size but no pull toward the clean image.

    Args:
        adversarial: (N, C, H, W) float32 in [0, 1].
        generator: the random generator of the signs.

    Returns:
        (N, C, H, W) float32, clamped to [0, 1].
    """
    change = nearest_rounding(adversarial) - adversarial
    sign = torch.randint(0, 2, adversarial.shape, generator=generator).float() * 2 - 1
    return (adversarial + sign * change).clamp(0.0, 1.0)


def defended_success(loaded: LoadedModel, images: torch.Tensor, labels: torch.Tensor, like: Votes) -> torch.Tensor:
    """(N,) bool: misclassified by the vote and accepted, at ``like``'s tolerances and v_min.

    Args:
        loaded: the model voting.
        images: (N, C, H, W) float32 in [0, 1].
        labels: (N,) int64 true classes.
        like: votes whose (N, V) tolerances and v_min the images are judged at.
    """
    logits = classify_alone(loaded.model, images, like.tolerances).logits
    votes = Votes(logits.argmax(2), like.tolerances, like.num_classes, logits, like.vmin)
    return votes.accepted() & (votes.prediction() != labels)


def against_float(success: torch.Tensor, float_success: torch.Tensor) -> dict[str, float]:
    """Defended successes of a variant, and rows lost and gained against the float's.

    Args:
        success: (K, M) bool, K draws of the variant (K = 1 for a fixed variant) on M rows.
        float_success: (M,) bool, the float adversarials' defended success on those rows.

    Returns:
        ``successes``, ``lost`` (the float succeeds, the variant does not) and ``gained``
        (the reverse), each the mean over the K draws; ``min`` and ``max`` successes over them.
    """
    counts = success.sum(1).double()
    return {
        "successes": float(counts.mean()),
        "lost": float((float_success & ~success).sum(1).double().mean()),
        "gained": float((~float_success & success).sum(1).double().mean()),
        "min": int(counts.min()),
        "max": int(counts.max()),
    }


def analyse(loaded: LoadedModel, attack_set: AttackSet, grid_votes: Votes, samples: int, seed: int) -> dict[str, Any]:
    """Every variant's defended success on the rows whose float and 8-bit adversarials succeed.

    Args:
        loaded: the model voting.
        attack_set: the row's attack set.
        grid_votes: the defense's votes on ``attack_set.successful_8bit_images()`` (at v_min).
        samples: draws of the random variants per image.
        seed: seed of the random variants.

    Returns:
        dict: ``rows`` (images judged), ``float_only`` (rows that succeed at tol_attack only
        as a float), ``outward`` (judged rows whose grid finish rounded outward),
        ``grid_finish_stored`` (defended successes by the votes `security` stored), per
        variant :func:`against_float`, the mean L2 of the float, nearest and grid-finish
        images, and the share of perturbation components below half a level with their
        share of the float's squared L2.
    """
    both = attack_set.success & attack_set.success_8bit
    grid_rows = attack_set.success_8bit.nonzero().squeeze(1)
    keep = both[grid_rows]  # positions among the 8-bit votes
    like = Votes(
        grid_votes.predictions[keep], grid_votes.tolerances[keep], grid_votes.num_classes, None, grid_votes.vmin
    )
    clean, labels = attack_set.clean[both], attack_set.labels[both]
    floats = attack_set.adversarial[both]
    grid = attack_set.adversarial_8bit[both].float() / 255
    nearest = nearest_rounding(floats)
    generator = torch.Generator().manual_seed(seed)

    def judged(images: torch.Tensor) -> torch.Tensor:
        return defended_success(loaded, images, labels, like).unsqueeze(0)

    float_success = judged(floats)[0]
    variants = {
        "float": judged(floats),
        "grid_finish": judged(grid),
        "nearest": judged(nearest),
        "small_zeroed": judged(small_components_zeroed(floats, clean)),
        "random_sign": torch.cat([judged(random_sign_change(floats, generator)) for _ in range(samples)]),
        "stochastic": torch.cat([judged(stochastic_rounding(floats, clean, generator)) for _ in range(samples)]),
    }
    delta = floats - clean
    small = delta.abs() < HALF_LEVEL
    nonzero = delta != 0
    result: dict[str, Any] = {
        "rows": int(both.sum()),
        "float_only": int((attack_set.success & ~attack_set.success_8bit).sum()),
        "outward": int((attack_set.grid_method[both] == 2).sum()),
        "grid_finish_stored": int((like.accepted() & (like.prediction() != labels)).sum()),
        "samples": samples,
        "variants": {name: against_float(success, float_success) for name, success in variants.items()},
        "mean_l2": {
            name: float((images - clean).flatten(1).norm(dim=1).mean())
            for name, images in (("float", floats), ("nearest", nearest), ("grid_finish", grid))
        },
        "small_components": {
            "share_of_nonzero": float((small & nonzero).sum() / nonzero.sum().clamp(min=1)),
            "share_of_squared_l2": float((delta * small).pow(2).sum() / delta.pow(2).sum().clamp(min=1e-12)),
        },
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="odenet-mnist5k")
    parser.add_argument("--count", type=int, default=SecuritySettings.count)
    parser.add_argument("--seed", type=int, default=0, help="public seed of the defense's draws")
    parser.add_argument("--votes", type=int, default=15)
    parser.add_argument("--vmin", type=int, default=None, help="default: chosen as security chooses it")
    parser.add_argument("--samples", type=int, default=2, help="draws of the random variants per image")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the random variants")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args()
    settings = SecuritySettings(
        count=args.count,
        votes=args.votes,
        vmin=args.vmin,
        seed=args.seed,
        kappas=(0.0, 0.05),
        autoattack_eps=(),
        square=False,
        budget_check=0,
    )
    loaded = load_model(args.model)
    attacked = security_attack_sets(settings, loaded, StderrLogProgress())
    first = attacked[0].attack_set
    _, vmin = pristine_operating_point(settings, loaded, first.clean, StderrLogProgress())
    defense = settings.defense(vmin)
    result: dict[str, Any] = {"model": loaded.name, "count": len(first), "votes": settings.votes, "vmin": vmin}
    result["seed"], result["sample_seed"], result["rows"] = settings.seed, args.sample_seed, {}
    result["attack_sets"] = [item.set_key for item in attacked]
    for item in attacked:
        if item.attacker.attack == "cw" and item.attacker.kappa == 0:
            continue  # EOT-CW's start: the defense rejects nearly all of its adversarials
        attack_set = item.attack_set
        grid_votes = stored_votes(
            loaded, defense, attack_set.successful_8bit_images(), f"{item.attacker.attack}-adversarial (8bit)"
        )[0].at(vmin)
        result["rows"][item.attacker.label] = analyse(loaded, attack_set, grid_votes, args.samples, args.sample_seed)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{loaded.name}: {result['count']} test digits, V = {settings.votes}, v_min = {vmin}, seed {settings.seed}")
    print(
        "defended successes at the 8-bit adversarials' draws, on the rows whose float and 8-bit adversarials "
        f"both succeed; (-lost +gained) against the float; random variants: mean of {args.samples} draws\n"
    )
    print("| row | digits | " + " | ".join(VARIANTS) + " | mean L2 float / nearest | components below half a level |")
    print("|---|---|" + "---|" * len(VARIANTS) + "---|---|")
    for label, row in result["rows"].items():
        cells = [str(row["rows"])]
        for name in VARIANTS:
            variant = row["variants"][name]
            text = f"{variant['successes']:.4g}"
            if name != "float":
                text += f" (-{variant['lost']:.3g} +{variant['gained']:.3g})"
            cells.append(text)
        small = row["small_components"]
        cells.append(f"{row['mean_l2']['float']:.3f} / {row['mean_l2']['nearest']:.3f}")
        cells.append(f"{small['share_of_nonzero']:.0%} (of L2^2: {small['share_of_squared_l2']:.1%})")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    for label, row in result["rows"].items():
        print(
            f"{label}: {row['float_only']} rows succeed at tol_attack only as a float (not judged here); "
            f"{row['outward']} judged rows were rounded outward; the grid finish by `security`'s stored votes: "
            f"{row['grid_finish_stored']}"
        )


if __name__ == "__main__":
    main()
