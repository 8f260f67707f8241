"""Bench: nodeguard's CW against foolbox's and against torchattacks' CW over a c grid.

All run in this process on the same model, digits and tolerance; every adversarial is
judged by classifying it on its own at tol_attack (the per-sample solver), and its margin
(true logit minus the best other) is measured the same way.

- nodeguard: the attack stage's own batch step (CW with c searched per image, refined
  to the decision boundary, then finished on the 8-bit grid);
- foolbox 3.3.4 ``L2CarliniWagnerAttack`` (installed by this bench if missing; it is
  not a dependency of nodeguard) at the same budget (steps x searches), and with
  ``--foolbox-defaults`` at its own defaults (9 searches of 10000 steps: hours on a CPU);
- the paper's grid search done with torchattacks: one CW run per c in
  {0.01, 0.1, 1, 10, 100}, keeping for each image the smallest successful perturbation.

    python benches/attack.py --model odenet-mnist5k --count 50
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time

import torch
import torchattacks

from nodeguard.attacks import PinnedTolerance
from nodeguard.data.datasets import load_dataset
from nodeguard.models.evaluation import margins_alone
from nodeguard.models.loading import load_model
from nodeguard.stages.attack import attack_one_batch, classify_alone
from nodeguard.stages.attack_sets import AttackSettings

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
FOOLBOX = "foolbox==3.3.4"


def foolbox_module():
    """foolbox, installed into this environment first if it is missing."""
    try:
        return importlib.import_module("foolbox")
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", FOOLBOX], check=True)
        return importlib.import_module("foolbox")


def quality(model, tol, images, labels, adversarial, success, seconds) -> dict:
    """Success, L2 and |margin| over successes (judged alone at tol), seconds per image."""
    l2 = (adversarial - images).flatten(1).norm(dim=1)
    margins = margins_alone(model, adversarial, labels, tol)[0]
    return {
        "success_rate": float(success.float().mean()),
        "mean_l2": float(l2[success].mean()) if success.any() else None,
        "median_abs_margin": float(margins[success].abs().median()) if success.any() else None,
        "seconds_per_image": seconds / len(images),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--binary-steps", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--tol-attack", type=float, default=None)
    parser.add_argument("--foolbox-defaults", action="store_true", help="also run foolbox at its own defaults")
    parser.add_argument("--skip-grid", action="store_true", help="leave out the torchattacks c grid")
    args = parser.parse_args()

    loaded = load_model(args.model, device="cpu")
    model = loaded.model
    tol = args.tol_attack if args.tol_attack is not None else loaded.tol_train
    pinned = PinnedTolerance(model, tol).eval()
    test = load_dataset(loaded.dataset).test
    images, labels = test.float_images(slice(0, 3 * args.count)), test.labels[: 3 * args.count]
    correct = (classify_alone(model, images, tol) == labels).nonzero().squeeze(1)[: args.count]
    images, labels = images[correct], labels[correct]
    result: dict = {"model": loaded.name, "tol_attack": tol, "images": len(images), "steps": args.steps}

    settings = AttackSettings.with_overrides(
        count=len(images), steps=args.steps, binary_steps=args.binary_steps, lr=args.lr, tol_attack=tol
    ).resolve(loaded.tol_train)
    started = time.perf_counter()
    ours = attack_one_batch(loaded, settings, images, labels, batch_number=0)
    seconds = time.perf_counter() - started
    result["nodeguard_cw"] = quality(model, tol, images, labels, ours["adversarial"], ours["success"], seconds)
    adversarial_8bit = ours["adversarial_8bit"].float() / 255
    result["nodeguard_cw_8bit"] = quality(model, tol, images, labels, adversarial_8bit, ours["success_8bit"], seconds)

    foolbox = foolbox_module()
    foolbox_model = foolbox.PyTorchModel(pinned, bounds=(0, 1))
    runs = {"foolbox_cw_equal_budget": {"binary_search_steps": args.binary_steps, "steps": args.steps}}
    if args.foolbox_defaults:
        runs["foolbox_cw_defaults"] = {}
    for name, budget in runs.items():
        attack = foolbox.attacks.L2CarliniWagnerAttack(**budget)
        started = time.perf_counter()
        _raw, clipped, _success = attack(foolbox_model, images, labels, epsilons=None)
        seconds = time.perf_counter() - started
        success = classify_alone(model, clipped, tol) != labels
        result[name] = {**quality(model, tol, images, labels, clipped, success, seconds), "budget": budget}

    if not args.skip_grid:
        started = time.perf_counter()
        best_l2 = torch.full((len(images),), float("inf"))
        best = images.clone()
        for const in C_GRID:
            adversarial = torchattacks.CW(pinned, c=const, kappa=0, steps=args.steps, lr=args.lr)(images, labels)
            success = classify_alone(model, adversarial, tol) != labels
            l2 = (adversarial - images).flatten(1).norm(dim=1)
            better = success & (l2 < best_l2)
            best_l2 = torch.where(better, l2, best_l2)
            best[better] = adversarial[better]
        seconds = time.perf_counter() - started
        result["torchattacks_cw_grid"] = {
            **quality(model, tol, images, labels, best, torch.isfinite(best_l2), seconds),
            "c_grid": list(C_GRID),
        }

    fool = result["foolbox_cw_equal_budget"]
    ours_float = result["nodeguard_cw"]
    result["ratios_at_equal_budget"] = {
        "speed_foolbox_over_nodeguard": fool["seconds_per_image"] / ours_float["seconds_per_image"],
        "mean_l2_nodeguard_over_foolbox": (
            ours_float["mean_l2"] / fool["mean_l2"] if fool["mean_l2"] and ours_float["mean_l2"] else None
        ),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
