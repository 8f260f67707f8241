"""Bench: forward + backward through the per-sample dopri5 against batched torchdiffeq.

What a gradient attack pays per step: the input gradient of every image's logits. The
reference is today's attack forward, one torchdiffeq call on the whole batch (one step
size for all images). The per-sample solver gives each image its own steps in the same
batch. Both run in this process on the same model, digits and tolerance; the report is
the time of each (median of the repeats), their ratio, and how far the per-sample input
gradients are from torchdiffeq's on each image alone (the quantity the per-sample
solver reproduces; the batched call does not).

    python benches/solver.py --model odenet-mnist5k --count 100 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from nodeguard.data.datasets import load_dataset
from nodeguard.models.loading import load_model
from nodeguard.models.solver import solve_per_sample


def input_gradient(logits_of, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    images = images.detach().clone().requires_grad_(True)
    logits = logits_of(images)
    (gradient,) = torch.autograd.grad(logits.gather(1, labels[:, None]).sum(), images)
    return gradient


def timed(function, repeats: int) -> tuple[float, torch.Tensor]:
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--tol", type=float, default=None, help="default: the model's tol_train")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--alone", type=int, default=10, help="images whose gradient is checked alone")
    args = parser.parse_args()

    loaded = load_model(args.model, device="cpu")
    model = loaded.model
    tol = args.tol if args.tol is not None else loaded.tol_train
    test = load_dataset(loaded.dataset).test
    images, labels = test.float_images(slice(0, args.count)), test.labels[: args.count]

    def batched(chunk_images=images, chunk_labels=labels):
        return input_gradient(lambda x: model(x, tol=tol), chunk_images, chunk_labels)

    def per_sample(chunk_images=images, chunk_labels=labels):
        tols = torch.full((len(chunk_images),), tol, dtype=torch.float64)
        return input_gradient(
            lambda x: model.head(solve_per_sample(model.odeblock.func, model.features(x), tols).y1),
            chunk_images,
            chunk_labels,
        )

    batched()  # warm-up
    batched_seconds, batched_gradient = timed(batched, args.repeats)
    per_sample_seconds, per_sample_gradient = timed(per_sample, args.repeats)

    def relative(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm())

    alone = [batched(images[i : i + 1], labels[i : i + 1]) for i in range(min(args.alone, args.count))]
    result = {
        "model": loaded.name,
        "tol": tol,
        "images": args.count,
        "repeats": args.repeats,
        "batched_torchdiffeq_seconds": batched_seconds,
        "per_sample_seconds": per_sample_seconds,
        "time_ratio_per_sample_over_batched": per_sample_seconds / batched_seconds,
        "max_relative_gradient_difference_to_alone": {
            "per_sample": max(relative(per_sample_gradient[i : i + 1], g) for i, g in enumerate(alone)),
            "batched_torchdiffeq": max(relative(batched_gradient[i : i + 1], g) for i, g in enumerate(alone)),
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
