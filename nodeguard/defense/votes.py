"""Votes of the defense on a group of images, kept in the model's result store.

Votes depend only on the model, each image's pixels, and the defense's tolerance range,
seed and number of votes (:mod:`nodeguard.defense.randomization`), so they are stored under a digest of
exactly those: the same images voted on by ``roc`` and ``security`` are solved once.
The first k of V stored votes are the votes of k, so the largest V serves every smaller one.
"""

from __future__ import annotations

import hashlib

import torch

from nodeguard.constants import DEFENSE_KEY_FILE, VOTES_KIND
from nodeguard.defense.keys import installation_key
from nodeguard.defense.randomization import (
    DefenseSettings,
    ToleranceRandomization,
    Votes,
    draw_tolerances,
    vote_in_shares,
)
from nodeguard.errors import RegistryError, StorageError
from nodeguard.models.loading import LoadedModel
from nodeguard.pipeline.remember import remember_tensors
from nodeguard.progress import SILENT, Progress
from nodeguard.storage.files import display_path


def images_digest(images: torch.Tensor) -> str:
    """SHA-256 of the images' float32 values and shape (what the votes are computed from)."""
    values = images.detach().to(torch.float32).contiguous().cpu()
    digest = hashlib.sha256(str(tuple(values.shape)).encode())
    digest.update(values.numpy().tobytes())
    return digest.hexdigest()


def defense_key(loaded: LoadedModel, defense: DefenseSettings) -> bytes | None:
    """The secret key of ``defense``'s draws for ``loaded`` (that of its registry's root, or
    the key of a model held in memory), or None for public draws (a seed).

    Raises:
        RegistryError: the key cannot be read or made (a registry shared read-only by
            another user); public draws need none.
    """
    if defense.seed is not None:
        return None
    if loaded.registry is None:
        return loaded.memory_key
    try:
        return installation_key(loaded.registry.root)
    except (OSError, StorageError) as exc:
        # a registry shared read-only: its key is its owner's (readable by them only)
        key_path = loaded.registry.root / DEFENSE_KEY_FILE
        if isinstance(exc, OSError):
            problem = f"{display_path(key_path)} cannot be read ({exc.strerror or exc})"
        else:
            problem = f"there is none yet ({display_path(key_path)}) and it cannot be made there"
        raise RegistryError(
            f"the secret draws need the defense key of the registry {display_path(loaded.registry.root)}: "
            f"{problem}; in a registry shared read-only the key is its owner's: give a public {{seed}} to draw "
            "with draws anyone can recompute",
            settings="seed",
        ) from None


class VotesNotStored(LookupError):
    """Votes asked for from the store only (``compute=False``) are not there."""


def stored_votes(
    loaded: LoadedModel,
    defense: DefenseSettings,
    images: torch.Tensor,
    label: str,
    progress: Progress = SILENT,
    need_logits: bool = False,
    compute: bool = True,
) -> tuple[Votes, bool]:
    """The defense's votes on ``images``, from the store or computed (in shares, under a
    sharded job) and saved.

    Args:
        loaded: the model voting (an ODE model).
        defense: its tolerance range, seed and number of votes V.
        images: (N, C, H, W) float images in [0, 1].
        label: what the images are, for the log only ("pristine", "cw-adversarial").
        progress: receives log lines and progress.
        need_logits: the caller reads the votes' logits: votes stored without them (by
            0.7.0 and earlier) are solved again and replaced; other callers reuse them.
        compute: False: only votes already stored are returned (nothing is solved).

    Returns:
        (votes, found): the (N, V) votes at the defense's operating point
        (``defense.vmin``), and whether they were found in the store.

    Raises:
        ConfigError: the model has no solver tolerance.
        RegistryError: another process is computing the same votes.
        VotesNotStored: ``compute`` is False and the votes are not stored.
    """
    key = defense_key(loaded, defense)
    identity = {
        "images_sha256": images_digest(images),
        "count": len(images),
        "tol_low": defense.tol_range.low,
        "tol_high": defense.tol_range.high,
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

    def has_logits(payload: dict[str, torch.Tensor]) -> bool:
        return payload.get("logits") is not None

    if not compute:
        payload = stored.load_tensors()
        if payload is None or (need_logits and not has_logits(payload)):
            raise VotesNotStored(f"the defense's votes on these {len(images)} {label} images are not stored")

    saved, found = remember_tensors(stored, vote, complete=has_logits if need_logits else None)
    if found:
        progress.log(f"votes on the {len(images)} {label} images found in the cache; nothing to solve")
    # the tolerances are the image's own draws (reproducible): recomputed, not stored
    tolerances = draw_tolerances(images, defense.votes, defense.tol_range, defense.seed, key)
    votes = Votes(saved["predictions"], tolerances, randomization.num_classes, saved.get("logits"), defense.vmin)
    return votes, found
