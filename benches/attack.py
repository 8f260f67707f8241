"""Bench: minimal-norm L2 attacks on one model: nodeguard's FMN and CW against foolbox's FMN and DDN.

All run in this process on the same model, correctly classified digits and tolerance,
through the same attacked function (each image solved alone at tol_attack,
:class:`~nodeguard.attacks.PinnedTolerance`). Every attack's adversarials are then moved
back to the decision boundary by the same refinement the attack stage uses (margin
-1e-4, judged alone at tol_attack), so the L2 compared is that of refined adversarials.

- ``nodeguard_fmn``: Fast Minimum-Norm L2 (Pintor et al., NeurIPS 2021), at each of
  ``--fmn-steps``;
- ``nodeguard_cw``: Carlini-Wagner L2 with c searched per image, at each
  ``STEPSxSEARCHES`` of ``--cw-budgets`` (100x5 is ``nodeguard attack cw``'s default);
- ``foolbox_fmn`` and ``foolbox_ddn``: foolbox 3.3.4's ``L2FMNAttack`` and ``DDNAttack``
  (Rony et al., CVPR 2019) at each of ``--fmn-steps`` (installed from
  benches/requirements.txt when missing; never a dependency of nodeguard);
- with ``--cw-references``, foolbox's ``L2CarliniWagnerAttack`` at CW's default budget
  and the paper's torchattacks CW over c in {0.01, 0.1, 1, 10, 100}.

Reported per run: wall seconds (attack and refinement), success (alone at tol_attack),
median and mean L2 of the refined adversarials, median |margin|, and the ratios of each
FMN run against the default CW.

    python benches/attack.py --model odenet-mnist5k --count 50
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torchattacks

from nodeguard.attacks import CarliniWagnerL2, FastMinimumNormL2, PinnedTolerance
from nodeguard.attacks.boundary import MARGIN_SLACK, refine_floats
from nodeguard.data.datasets import load_dataset
from nodeguard.models.evaluation import classify_alone
from nodeguard.models.loading import load_model

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def foolbox_module():
    from solver import require  # benches/solver.py: installs benches/requirements.txt when missing

    return require("foolbox")


def judged(model, tol, images, labels, adversarial, seconds) -> dict:
    """Refine every adversarial (margin at most the target) to the boundary; success, L2 and
    |margin| judged alone at tol; ``seconds`` includes the refinement."""
    started = time.perf_counter()
    target = -MARGIN_SLACK
    adversarial = adversarial.detach().clamp(0, 1)
    margins = classify_alone(model, adversarial, tol, labels).margins
    rows = (margins <= target).nonzero().squeeze(1)
    adversarial[rows] = refine_floats(model, tol, images[rows], adversarial[rows], labels[rows], target)
    margins = classify_alone(model, adversarial, tol, labels).margins
    success = margins < 0
    seconds += time.perf_counter() - started
    l2 = (adversarial - images).flatten(1).norm(dim=1)[success]
    return {
        "seconds": seconds,
        "success_rate": float(success.float().mean()),
        "median_l2": float(l2.median()) if success.any() else None,
        "mean_l2": float(l2.mean()) if success.any() else None,
        "median_abs_margin": float(margins[success].abs().median()) if success.any() else None,
    }


def timed_attack(attack, images, labels) -> tuple[torch.Tensor, float]:
    started = time.perf_counter()
    adversarial = attack(images, labels)
    return adversarial, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="odenet-mnist5k")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--tol-attack", type=float, default=None)
    parser.add_argument("--fmn-steps", default="10,25,50,100", help="comma-separated step budgets of the FMN runs")
    parser.add_argument("--cw-budgets", default="100x5", help="comma-separated STEPSxSEARCHES of the CW runs")
    parser.add_argument("--skip-foolbox", action="store_true")
    parser.add_argument("--cw-references", action="store_true", help="also foolbox CW and the torchattacks c grid")
    args = parser.parse_args()

    loaded = load_model(args.model, device="cpu")
    model = loaded.model
    tol = args.tol_attack if args.tol_attack is not None else loaded.tol_train
    pinned = PinnedTolerance(model, tol).eval()
    test = load_dataset(loaded.dataset).test
    images, labels = test.float_images(slice(0, 3 * args.count)), test.labels[: 3 * args.count]
    correct = (classify_alone(model, images, tol).predictions == labels).nonzero().squeeze(1)[: args.count]
    images, labels = images[correct], labels[correct]
    fmn_steps = [int(value) for value in args.fmn_steps.split(",") if value]
    cw_budgets = [tuple(int(part) for part in value.split("x")) for value in args.cw_budgets.split(",") if value]
    result: dict = {"model": loaded.name, "tol_attack": tol, "images": len(images), "threads": torch.get_num_threads()}

    def record(name: str, adversarial: torch.Tensor, seconds: float, **settings) -> None:
        result.setdefault(name, []).append({**settings, **judged(model, tol, images, labels, adversarial, seconds)})

    for steps, searches in cw_budgets:
        attack = CarliniWagnerL2(pinned, steps=steps, binary_steps=searches)
        record("nodeguard_cw", *timed_attack(attack, images, labels), steps=steps, binary_steps=searches)
    for steps in fmn_steps:
        record("nodeguard_fmn", *timed_attack(FastMinimumNormL2(pinned, steps=steps), images, labels), steps=steps)

    if not args.skip_foolbox:
        foolbox = foolbox_module()
        foolbox_model = foolbox.PyTorchModel(pinned, bounds=(0, 1))

        def run_foolbox(attack) -> tuple[torch.Tensor, float]:
            started = time.perf_counter()
            _raw, clipped, _success = attack(foolbox_model, images, labels, epsilons=None)
            return clipped, time.perf_counter() - started

        for steps in fmn_steps:
            record("foolbox_fmn", *run_foolbox(foolbox.attacks.L2FMNAttack(steps=steps)), steps=steps)
            record("foolbox_ddn", *run_foolbox(foolbox.attacks.DDNAttack(steps=steps)), steps=steps)
        if args.cw_references:
            attack = foolbox.attacks.L2CarliniWagnerAttack(binary_search_steps=5, steps=100)
            record("foolbox_cw", *run_foolbox(attack), steps=100, binary_steps=5)

    if args.cw_references:
        started = time.perf_counter()
        best_l2 = torch.full((len(images),), float("inf"))
        best = images.clone()
        for const in C_GRID:
            adversarial = torchattacks.CW(pinned, c=const, kappa=0, steps=100, lr=0.05)(images, labels)
            success = classify_alone(model, adversarial, tol).predictions != labels
            l2 = (adversarial - images).flatten(1).norm(dim=1)
            better = success & (l2 < best_l2)
            best_l2 = torch.where(better, l2, best_l2)
            best[better] = adversarial[better]
        record("torchattacks_cw_grid", best, time.perf_counter() - started, c_grid=list(C_GRID))

    reference = next(
        (run for run in result.get("nodeguard_cw", []) if (run["steps"], run["binary_steps"]) == (100, 5)), None
    )
    if reference and reference["median_l2"]:
        result["fmn_against_default_cw"] = [
            {
                "steps": run["steps"],
                "time_ratio": run["seconds"] / reference["seconds"],
                "median_l2_ratio": run["median_l2"] / reference["median_l2"] if run["median_l2"] else None,
            }
            for run in result.get("nodeguard_fmn", [])
        ]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
