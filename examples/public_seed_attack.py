"""What an attacker who knows the defense's draws can do: check the exact vote before submitting.

With a public seed (``--seed N``) the tolerances an image will be judged at are a hash of
the seed and its pixels, so an attacker can compute the defense's exact verdict on a
candidate image. This script takes a model's saved CW attack set (kappa = 0, the paper's
attacker) and, for each 8-bit adversarial the defense rejects, tries up to ``--tries``
variants that differ from it by one level of one background pixel (each variant has
other draws), and submits the first the defense would accept with a wrong class. Without
the key, an attacker cannot compute the draws: the secret defense accepts such an image
only at its base rate.

    python examples/public_seed_attack.py --model odenet-mnist5k --set cw-tol1e-03-n100-... --tries 20

Prints one JSON object: how many adversarials the public-seed defense accepts with a
wrong class before and after the attacker's checks, the mean number of variants tried,
and the extra L2 they cost (pixels in [0, 1]).
"""

from __future__ import annotations

import argparse
import json

import torch

from nodeguard import DefenseSettings, Registry, ToleranceRandomization, load_attack_set, load_model


def fooled(defense: ToleranceRandomization, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the defense accepts the image with a wrong class."""
    votes = defense.vote(images)
    return votes.accepted() & (votes.prediction() != labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--set", required=True, help="the key of a CW attack set of the model")
    parser.add_argument("--votes", type=int, default=15)
    parser.add_argument("--vmin", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0, help="the public seed the attacker knows")
    parser.add_argument("--tries", type=int, default=20, help="variants per rejected adversarial")
    args = parser.parse_args()

    registry = Registry()
    loaded = load_model(args.model, registry=registry, device="cpu")
    attack_set = load_attack_set(registry, args.model, args.set)
    images = attack_set.successful_8bit_images()
    labels = attack_set.labels[attack_set.success_8bit]
    clean = attack_set.clean[attack_set.success_8bit]
    defense = ToleranceRandomization(loaded.model, DefenseSettings(votes=args.votes, vmin=args.vmin, seed=args.seed))
    before = fooled(defense, images, labels)
    after = before.clone()
    tries, extra_l2 = [], []
    for row in (~before).nonzero().squeeze(1).tolist():
        image = images[row]
        background = (image.flatten() == 0).nonzero().squeeze(1)
        for attempt in range(1, args.tries + 1):
            variant = image.flatten().clone()
            variant[background[attempt % len(background)]] = 1 / 255  # one background pixel, one level up
            variant = variant.view_as(image)
            if bool(fooled(defense, variant[None], labels[row : row + 1])[0]):
                after[row] = True
                tries.append(attempt)
                extra_l2.append(float((variant - clean[row]).norm() - (image - clean[row]).norm()))
                break
    print(
        json.dumps(
            {
                "model": args.model,
                "set": args.set,
                "adversarials": len(images),
                "public_seed": args.seed,
                "votes": args.votes,
                "vmin": args.vmin,
                "accepted_wrong_before": int(before.sum()),
                "accepted_wrong_after_checking": int(after.sum()),
                "tries_allowed": args.tries,
                "mean_tries_of_successes": sum(tries) / len(tries) if tries else None,
                "mean_extra_l2": sum(extra_l2) / len(extra_l2) if extra_l2 else None,
            }
        )
    )


if __name__ == "__main__":
    main()
