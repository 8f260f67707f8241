"""How far a trained ODE-Net's output moves with the solver tolerance (the tau story's measured cause).

For each tau, every test image is solved alone (the per-sample solver) and compared with
a reference solve at a tight tolerance: the relative error of the ODE block's output
h(1), the largest logit change, the share of predictions that differ from the
reference, and the share of images whose margin is smaller than that logit change.

    python examples/tau_drift.py --model odenet-mnist5k [--count 1000] [--reference 1e-6]
"""

from __future__ import annotations

import argparse

import torch

from nodeguard.data.datasets import load_dataset
from nodeguard.models.loading import load_model
from nodeguard.models.solver import solve_per_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--reference", type=float, default=1e-6)
    parser.add_argument("--tols", default="1e-4,1e-3,1e-2,1e-1,1")
    args = parser.parse_args()
    loaded = load_model(args.model, device="cpu")
    model = loaded.model
    test = load_dataset(loaded.dataset).test.subset(args.count)
    images, labels = test.float_images(), test.labels

    @torch.no_grad()
    def solve(tol: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs, logits, nfes = [], [], []
        for start in range(0, len(images), 250):
            h0 = model.features(images[start : start + 250])
            tols = torch.full((len(h0),), tol, dtype=torch.float64)
            solution = solve_per_sample(model.odeblock.func, h0, tols)
            outputs.append(solution.y1)
            logits.append(model.head(solution.y1))
            nfes.append(solution.nfe)
        return torch.cat(outputs), torch.cat(logits), torch.cat(nfes).float()

    reference_h, reference_logits, reference_nfe = solve(args.reference)
    true = reference_logits.gather(1, labels[:, None]).squeeze(1)
    others = reference_logits.clone()
    others.scatter_(1, labels[:, None], float("-inf"))
    margin = true - others.max(1).values
    reference = f"reference tau {args.reference:g} (NFE {reference_nfe.mean():.1f})"
    print(f"{loaded.name}: {len(images)} test images, {reference}")
    print(f"median |margin| at the reference: {margin.abs().median():.3f}")
    print("tau      NFE   rel. error of h(1)   max |logit change| (median)   predictions changed   |margin| < change")
    for tol in (float(t) for t in args.tols.split(",")):
        h, logits, nfe = solve(tol)
        relative = ((h - reference_h).flatten(1).norm(dim=1) / reference_h.flatten(1).norm(dim=1)).median()
        change = (logits - reference_logits).abs().max(1).values
        changed = (logits.argmax(1) != reference_logits.argmax(1)).float().mean()
        fragile = (margin.abs() < change).float().mean()
        print(
            f"{tol:<8g} {nfe.mean():5.1f}   {relative:18.2e}   {change.max():10.4f} ({change.median():.2e})"
            f"   {changed:19.1%}   {fragile:16.1%}"
        )


if __name__ == "__main__":
    main()
