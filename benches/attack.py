"""Bench: nodeguard's CW (per-sample c search) against torchattacks' CW over a c grid.

The reference is the paper's grid search done with torchattacks: one CW run per c in
{0.01, 0.1, 1, 10, 100}, keeping for each sample the smallest successful perturbation.
Both run in this process on the same model, images, tolerance, steps and learning rate;
success is judged by classifying each adversarial on its own at tol_attack. Reports the
time ratio and the quality of each (success rate, mean L2 over successes).

    python benches/attack.py --model odenet-mnist5k --count 50
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torchattacks

from nodeguard.attack_stage import classify_alone
from nodeguard.attacks import CarliniWagnerL2, PinnedTolerance
from nodeguard.data import load_dataset
from nodeguard.loading import load_model

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--tol-attack", type=float, default=None)
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))

    loaded = load_model(args.model, device="cpu")
    tol = args.tol_attack if args.tol_attack is not None else loaded.tol_train
    pinned = PinnedTolerance(loaded.model, tol).eval()
    test = load_dataset(loaded.dataset).test
    images, labels = test.float_images(slice(0, 3 * args.count)), test.labels[: 3 * args.count]
    correct = (classify_alone(loaded.model, images, tol) == labels).nonzero().squeeze(1)[: args.count]
    images, labels = images[correct], labels[correct]

    started = time.perf_counter()
    ours = CarliniWagnerL2(pinned, binary_steps=len(C_GRID), steps=args.steps, lr=args.lr)(images, labels)
    ours_seconds = time.perf_counter() - started
    ours_success = classify_alone(loaded.model, ours, tol) != labels
    ours_l2 = (ours - images).flatten(1).norm(dim=1)

    started = time.perf_counter()
    best_l2 = torch.full((len(images),), float("inf"))
    for const in C_GRID:
        adversarial = torchattacks.CW(pinned, c=const, kappa=0, steps=args.steps, lr=args.lr)(images, labels)
        success = classify_alone(loaded.model, adversarial, tol) != labels
        l2 = (adversarial - images).flatten(1).norm(dim=1)
        best_l2 = torch.where(success & (l2 < best_l2), l2, best_l2)
    grid_seconds = time.perf_counter() - started
    grid_success = torch.isfinite(best_l2)

    result = {
        "model": loaded.name,
        "tol_attack": tol,
        "images": len(images),
        "steps": args.steps,
        "lr": args.lr,
        "nodeguard_cw": {
            "seconds": ours_seconds,
            "success_rate": float(ours_success.float().mean()),
            "mean_l2": float(ours_l2[ours_success].mean()) if ours_success.any() else None,
        },
        "torchattacks_cw_grid": {
            "seconds": grid_seconds,
            "c_grid": list(C_GRID),
            "success_rate": float(grid_success.float().mean()),
            "mean_l2": float(best_l2[grid_success].mean()) if grid_success.any() else None,
        },
        "time_ratio_grid_over_nodeguard": grid_seconds / ours_seconds,
    }
    both = ours_success & grid_success
    if both.any():
        result["mean_l2_on_common_successes"] = {
            "nodeguard_cw": float(ours_l2[both].mean()),
            "torchattacks_cw_grid": float(best_l2[both].mean()),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
