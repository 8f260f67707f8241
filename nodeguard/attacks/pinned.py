"""A model view whose solver runs at one fixed tolerance, whatever the model holds."""

from __future__ import annotations

import torch
from torch import nn


class PinnedTolerance(nn.Module):
    """Calls ``model(x, tol=tol)`` on every forward: the attacker's view of an ODE-Net.

    The wrapped model's own ``tol`` is never read or changed. Models without a solver
    (the ResNet) accept and ignore ``tol``.
    """

    def __init__(self, model: nn.Module, tol: float | None):
        super().__init__()
        self.model = model
        self.tol = None if tol is None else float(tol)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, tol=self.tol)

    @property
    def last_nfe(self) -> int:
        return int(getattr(self.model, "last_nfe", 0))


def classification_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Z_y - max_{j != y} Z_j per sample: negative exactly when the sample is misclassified.

    The other logits are masked with -inf, not multiplied by zero, so the margin is right
    when they are negative (torchattacks' CW takes ``max((1 - onehot) * logits)``, which
    returns 0 instead of the largest other logit when all the others are negative).
    """
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, labels[:, None], True)
    other_best = logits.masked_fill(mask, float("-inf")).amax(1)
    return true_logit - other_best
