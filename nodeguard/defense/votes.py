"""Votes of the defense on a group of images, kept in the model's result store.

Votes depend only on the model, each image's pixels, and the defense's tolerance range,
seed and number of votes (:mod:`nodeguard.defense.randomization`), so they are stored under a digest of
exactly those: the same images voted on by ``roc`` and ``security`` are solved once.
The first k of V stored votes are the votes of k, so the largest V serves every smaller one.
"""

from __future__ import annotations

import hashlib

import torch

from nodeguard.defense.randomization import DefenseSettings, ToleranceRandomization, Votes
from nodeguard.models.loading import LoadedModel
from nodeguard.progress import Progress, SilentProgress
from nodeguard.runtime.distributed import all_gather, current_ranks, share
from nodeguard.storage.registry import Registry
from nodeguard.storage.results import ResultStore

VOTES_KIND = "votes"


def images_digest(images: torch.Tensor) -> str:
    """SHA-256 of the images' float32 values and shape (what the votes are computed from)."""
    values = images.detach().to(torch.float32).contiguous().cpu()
    digest = hashlib.sha256(str(tuple(values.shape)).encode())
    digest.update(values.numpy().tobytes())
    return digest.hexdigest()


def stored_votes(
    registry: Registry,
    loaded: LoadedModel,
    defense: DefenseSettings,
    images: torch.Tensor,
    label: str,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, bool]:
    """(N, defense.votes) predictions of ``images``, from the store or computed and saved;
    the flag says whether they were found."""
    progress = progress or SilentProgress()
    identity = {
        "images_sha256": images_digest(images),
        "count": len(images),
        "tol_low": defense.tol_low,
        "tol_high": defense.tol_high,
        "seed": defense.seed,
        "votes": defense.votes,
    }
    # the folder's label holds nothing but the identity, so any stage asking for the votes
    # of the same images finds them; ``label`` only names the images in the log
    stored = ResultStore(registry, loaded.name).result(VOTES_KIND, identity, f"n{len(images)}-v{defense.votes}")
    saved = stored.load_tensors()
    if saved is not None:
        progress.log(f"votes on the {len(images)} {label} images found in the cache; nothing to solve")
        return saved["predictions"], True
    progress.log(f"voting on {len(images)} {label} images with {defense.votes} tolerances each")
    predictions = vote_sharded(ToleranceRandomization(loaded.model, defense), images, progress).predictions
    if current_ranks().is_main:
        stored.save_tensors({"predictions": predictions})
    return predictions, False


def vote_sharded(defense: ToleranceRandomization, images: torch.Tensor, progress: Progress | None = None) -> Votes:
    """The defense's votes on ``images``; under a sharded job each rank votes on its own
    contiguous share and every rank gets all the votes, in order.

    An image's tolerances are drawn from its own pixels and each (image, tolerance) pair
    is solved on its own steps, so the votes do not depend on how the images are split.
    """
    ranks = current_ranks()
    if not ranks.sharded:
        return defense.vote(images, progress=progress)
    mine = share(len(images), ranks)
    votes = defense.vote(images[mine.start : mine.stop], progress=progress)
    parts = all_gather((votes.predictions, votes.tolerances))
    return Votes(
        torch.cat([predictions for predictions, _ in parts]),
        torch.cat([tolerances for _, tolerances in parts]),
        defense.num_classes,
    )
