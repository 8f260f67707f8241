"""The tau table's cells (Carrara et al., WIFS 2019): the test error and an attack judged at a tolerance.

Each image is classified alone (per-sample dopri5) at the tolerance tau, so a cell is what
one image gets whatever the batch. Model and tensors in, typed cells out: the stage
(:mod:`nodeguard.stages.sweep`) keeps each cell in the result store, in the plain form of
:meth:`ErrorCell.stored` and :meth:`AttackCell.stored`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nodeguard.experiments.attack_sets import AttackSet, perturbation_stats
from nodeguard.intervals import Rate
from nodeguard.models.evaluation import classify_alone
from nodeguard.models.networks import ImageClassifier


@dataclass
class ErrorCell:
    """The test error at one tolerance: images misclassified alone, of the test images (a
    :class:`~nodeguard.intervals.Rate`), and the mean function evaluations per image."""

    rate: Rate
    nfe: float

    def stored(self) -> dict[str, Any]:
        """The cell as the result store keeps it."""
        return {"error": self.rate.value, "nfe": self.nfe, "images": self.rate.total, "errors": self.rate.count}

    @classmethod
    def from_stored(cls, values: dict[str, Any]) -> ErrorCell:
        """The cell from :meth:`stored`."""
        return cls(Rate.of(int(values["errors"]), int(values["images"])), float(values["nfe"]))


@dataclass
class AttackCell:
    """An attack judged at one tolerance: the attacked images whose adversarial is
    misclassified there, of the attacked images, and the mean L2 (pixels in [0, 1]) and
    MSE of those adversarials (None: none)."""

    success_rate: Rate
    mean_l2: float | None
    mean_mse: float | None
    set: str  # the attack set's key

    def stored(self) -> dict[str, Any]:
        """The cell as the result store keeps it (the set's key is the cell's own key)."""
        rate = self.success_rate
        values = {"success_rate": rate.value, "mean_l2": self.mean_l2, "mean_mse": self.mean_mse}
        return {**values, "successes": rate.count, "attacked": rate.total}

    @classmethod
    def from_stored(cls, values: dict[str, Any], set_key: str) -> AttackCell:
        """The cell from :meth:`stored` and its attack set's key."""
        rate = Rate.of(int(values["successes"]), int(values["attacked"]))
        return cls(rate, values["mean_l2"], values["mean_mse"], set_key)


def error_at(
    model: ImageClassifier, images: torch.Tensor, labels: torch.Tensor, tol: float | None, sharded: bool = False
) -> ErrorCell:
    """The test error of ``model`` at ``tol``, each image classified alone.

    Args:
        model: the classifier.
        images: (N, C, H, W) float32 test images in [0, 1].
        labels: (N,) int64 true classes.
        tol: the solver tolerance (rtol = atol); None: the model's own (no solver).
        sharded: split the images over the job's ranks (each gets every answer).

    Returns:
        The ``ErrorCell``: misclassified images of the N, mean NFE per image.
    """
    classified = classify_alone(model, images, tol, sharded=sharded)
    wrong = classified.predictions != labels
    return ErrorCell(Rate.of(int(wrong.sum()), len(labels)), float(classified.nfe.float().mean()))


def judged_at(
    model: ImageClassifier, attack_set: AttackSet, set_key: str, tol: float, sharded: bool = False
) -> AttackCell:
    """An attack set's adversarials (made at its tol_attack) judged alone at ``tol``.

    Args:
        model: the attacked model.
        attack_set: the attack set of N images.
        set_key: its key, for the cell.
        tol: the tolerance tau_test each adversarial is classified at.
        sharded: split the images over the job's ranks.

    Returns:
        The ``AttackCell``: the images whose (float) adversarial succeeded at tol_attack and
        is still misclassified at ``tol``, of the N; mean L2 and MSE over those adversarials.
    """
    predictions = classify_alone(model, attack_set.adversarial, tol, sharded=sharded).predictions
    fooled = attack_set.success & (predictions != attack_set.labels)
    stats = perturbation_stats(attack_set.l2, fooled, attack_set.dims)
    return AttackCell(Rate.of(int(fooled.sum()), len(attack_set)), stats["mean_l2"], stats["mean_mse"], set_key)
