"""Bench: tolerance randomization, batched per-sample solver against the plain loop.

Both give every (image, tolerance) pair its own solver steps, so both give the same
votes. The plain loop calls the whole model through torchdiffeq once per pair (one
image at a time: the only way torchdiffeq's shared step size stays per image). The
batched defense runs the downsampling once per image and solves all pairs together.
Also reported, for context only: V whole-batch torchdiffeq calls with one tolerance per
call (fast but not per-image, so its verdicts differ), and how many solves stopping
once the verdict is decided would have skipped.

    python benches/defend.py --model odenet-mnist5k --count 100 --votes 15 --vmin 12
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from nodeguard.data.datasets import load_dataset
from nodeguard.defense.randomization import DefenseSettings, ToleranceRandomization, Votes, draw_tolerances
from nodeguard.models.loading import load_model


def decided_after(predictions: torch.Tensor, vmin: int, num_classes: int) -> torch.Tensor:
    """For each image, the number of votes after which accept/reject could no longer change."""
    count, votes = predictions.shape
    decided = torch.full((count,), votes)
    for k in range(1, votes + 1):
        counts = torch.nn.functional.one_hot(predictions[:, :k], num_classes).sum(1)
        best = counts.max(1).values
        remaining = votes - k
        settled = (best > vmin) | (best + remaining <= vmin)
        decided = torch.where(settled & (decided == votes), torch.full_like(decided, k), decided)
    return decided


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--votes", type=int, default=15)
    parser.add_argument("--vmin", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    loaded = load_model(args.model, device="cpu")
    model = loaded.model
    images = load_dataset(loaded.dataset).test.float_images(slice(0, args.count))
    settings = DefenseSettings(votes=args.votes, vmin=args.vmin, seed=args.seed)
    defense = ToleranceRandomization(model, settings)
    tolerances = draw_tolerances(images, args.votes, settings.tol_range, settings.seed)
    pairs = args.count * args.votes

    started = time.perf_counter()
    batched = defense.vote(images)
    batched_seconds = time.perf_counter() - started

    started = time.perf_counter()
    with torch.no_grad():
        plain = torch.tensor(
            [
                [int(model(image[None], tol=float(tol)).argmax(1)) for tol in row]
                for image, row in zip(images, tolerances, strict=True)
            ]
        )
    plain_seconds = time.perf_counter() - started
    plain_votes = Votes(plain, tolerances, batched.num_classes)

    started = time.perf_counter()
    with torch.no_grad():
        shared = torch.stack([model(images, tol=float(tol)).argmax(1) for tol in tolerances[0]], 1)
    shared_seconds = time.perf_counter() - started
    shared_accepted = Votes(shared, tolerances, batched.num_classes).accepted(args.vmin)

    same_votes = bool(torch.equal(batched.predictions, plain))
    same_verdicts = bool(torch.equal(batched.accepted(args.vmin), plain_votes.accepted(args.vmin)))
    decided = decided_after(batched.predictions, args.vmin, batched.num_classes)
    result = {
        "model": loaded.name,
        "images": args.count,
        "votes": args.votes,
        "vmin": args.vmin,
        "batched_per_sample": {"seconds": batched_seconds, "pairs_per_second": pairs / batched_seconds},
        "plain_loop_torchdiffeq": {"seconds": plain_seconds, "pairs_per_second": pairs / plain_seconds},
        "speedup": plain_seconds / batched_seconds,
        "same_votes": same_votes,
        "same_verdicts": same_verdicts,
        "context_shared_step_batches": {
            "seconds": shared_seconds,
            "pairs_per_second": pairs / shared_seconds,
            "accepted_fraction": float(shared_accepted.float().mean()),
            "note": "one tolerance per whole-batch call (the first image's draws for all): not per image",
        },
        "early_stop": {
            "solves_skippable_fraction": float(1 - decided.float().mean() / args.votes),
            "mean_votes_needed": float(decided.float().mean()),
        },
        "accepted_fraction": float(batched.accepted(args.vmin).float().mean()),
    }
    print(json.dumps(result, indent=2))
    if not same_verdicts:
        raise SystemExit("the batched defense and the plain loop disagree")


if __name__ == "__main__":
    main()
