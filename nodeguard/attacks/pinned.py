"""A model view whose solver runs at one fixed tolerance, each image on its own steps."""

from __future__ import annotations

import torch
from torch import nn

from nodeguard.models.evaluation import classification_margin, logits_alone
from nodeguard.models.networks import ImageClassifier

__all__ = ["PinnedTolerance", "classification_margin"]


class PinnedTolerance(nn.Module):
    """The attacker's view of an ODE-Net: every forward solves each image alone at ``tol``.

    The forward is the per-sample (differentiable) dopri5 of :mod:`nodeguard.models.solver`, so
    the attacked function is exactly the prediction each image is judged by, whatever
    batch it is attacked in. The wrapped model's own ``tol`` is never read or changed
    (``tol`` None means the model's own). Models without a solver run a plain forward.

    Args:
        model: the classifier to attack.
        tol: the solver tolerance (rtol = atol) every forward uses, or None for the model's own.
    """

    def __init__(self, model: ImageClassifier, tol: float | None):
        super().__init__()
        self.model = model
        self.tol = None if tol is None else float(tol)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) float32 of (N, C, H, W) images in [0, 1], each solved alone at ``tol``.

        Differentiable (the per-sample dopri5 of Chen et al. 2018's Neural ODEs, as torchdiffeq steps).

        Raises:
            ConfigError: an ODE-Net whose solver method is not dopri5.
        """
        return logits_alone(self.model, x, self.tol)[0]
