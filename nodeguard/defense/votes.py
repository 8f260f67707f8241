"""Votes of the defense on a group of images, kept in the model's result store.

Votes depend only on the model, each image's pixels, and the defense's tolerance range,
seed and number of votes (:mod:`nodeguard.defense.randomization`), so they are stored under a digest of
exactly those: the same images voted on by ``roc`` and ``security`` are solved once.
The first k of V stored votes are the votes of k, so the largest V serves every smaller one.
"""

from __future__ import annotations

import hashlib

import torch

from nodeguard.constants import VOTES_KIND
from nodeguard.defense.keys import installation_key
from nodeguard.defense.randomization import (
    DefenseSettings,
    ToleranceRandomization,
    Votes,
    draw_tolerances,
    vote_in_shares,
)
from nodeguard.models.loading import LoadedModel
from nodeguard.progress import SILENT, Progress
from nodeguard.runtime.distributed import current_ranks


def images_digest(images: torch.Tensor) -> str:
    """SHA-256 of the images' float32 values and shape (what the votes are computed from)."""
    values = images.detach().to(torch.float32).contiguous().cpu()
    digest = hashlib.sha256(str(tuple(values.shape)).encode())
    digest.update(values.numpy().tobytes())
    return digest.hexdigest()


def defense_key(loaded: LoadedModel, defense: DefenseSettings) -> bytes | None:
    """The secret key of ``defense``'s draws for ``loaded`` (that of its registry's root), or
    None for public draws (a seed)."""
    return None if defense.seed is not None else installation_key(loaded.registry.root)


def stored_votes(
    loaded: LoadedModel,
    defense: DefenseSettings,
    images: torch.Tensor,
    label: str,
    progress: Progress = SILENT,
    with_logits: bool = False,
) -> tuple[Votes, bool]:
    """The defense's votes on ``images``, from the store or computed (in shares, under a
    sharded job) and saved.

    Args:
        loaded: the model voting (an ODE model).
        defense: its tolerance range, seed and number of votes V.
        images: (N, C, H, W) float images in [0, 1].
        label: what the images are, for the log only ("pristine", "cw-adversarial").
        progress: receives log lines and progress.
        with_logits: the votes' logits are needed (votes stored before 0.8.0 have none:
            they are solved again and saved with them).

    Returns:
        (votes, found): the (N, V) votes, and whether they were found in the store.

    Raises:
        ConfigError: the model has no solver tolerance.
        RegistryError: another process is computing the same votes.
    """
    key = defense_key(loaded, defense)
    identity = {
        "images_sha256": images_digest(images),
        "count": len(images),
        "tol_low": defense.tol_low,
        "tol_high": defense.tol_high,
        "seed": defense.draws_identity(key),
        "votes": defense.votes,
    }
    # the folder's label holds nothing but the identity, so any stage asking for the votes
    # of the same images finds them; ``label`` only names the images in the log
    stored = loaded.results().result(VOTES_KIND, identity, f"n{len(images)}-v{defense.votes}")
    randomization = ToleranceRandomization(loaded.model, defense, key)

    def vote() -> dict[str, torch.Tensor]:
        progress.log(f"voting on {len(images)} {label} images with {defense.votes} tolerances each")
        votes = vote_in_shares(randomization, images, progress)
        assert votes.logits is not None
        return {"predictions": votes.predictions, "logits": votes.logits}

    saved, found = stored.tensors_or_compute(vote)
    if found and with_logits and saved.get("logits") is None:
        # stored by nodeguard before 0.8.0, which kept the predictions only: solved again
        # (the same pairs give the same predictions) and saved with the logits
        progress.log(f"the stored votes on the {len(images)} {label} images lack their logits; solving again")
        with stored.computing(current_ranks().rank):
            saved = vote()
            if current_ranks().is_main:
                stored.save_tensors(saved)
        found = False
    elif found:
        progress.log(f"votes on the {len(images)} {label} images found in the cache; nothing to solve")
    # the tolerances are the image's own draws (reproducible): recomputed, not stored
    tolerances = draw_tolerances(images, defense.votes, defense.tol_low, defense.tol_high, defense.seed, key)
    return Votes(saved["predictions"], tolerances, randomization.num_classes, saved.get("logits")), found
