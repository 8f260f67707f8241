"""Blended attack: toward the nearest image of another class, then back to the boundary.

The decision-based starting point of the Boundary Attack (Brendel, Rauber & Bethge, ICLR
2018) and of HopSkipJump (Chen, Jordan & Wainwright, 2020): for each image x of label y,
the attack takes the other images of its batch that the model (solver pinned to
tol_attack, each image alone) classifies with a margin for y of at most
-(kappa + ``BLEND_CLEARANCE``), and returns the nearest of them in L2. The attack stage then
moves it back along the segment from x to the smallest scale whose margin is at most
-(kappa + slack) (a bisection: :mod:`nodeguard.attacks.boundary`), so the result is the
blend (1 - s) x + s x_target on the decision boundary.

It needs no gradient, and it cannot fail on an image whose batch holds such a target: the
target itself is adversarial, with room to spare, and on the 8-bit grid (the bundled data
sets are 8-bit) it is its own rounding. An image whose batch holds no image of another
class is returned unchanged (not adversarial). Its L2 is an upper bound on the minimal
perturbation (far above CW's): a sanity bound and a gradient-free baseline.

Options (defaults): ``kappa`` (0), the margin the boundary search aims past.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nodeguard.attacks.spec import ATTACKS, AttackSpec
from nodeguard.checks import require_non_negative
from nodeguard.models.evaluation import classification_margin

# A target must be past the boundary by this much more than the stage's slack asks: its
# margin is computed again (in another batch, so with other float rounding) by the stage.
BLEND_CLEARANCE = 1e-2


@dataclass
class BlendOptions:
    """Options of ``nodeguard attack blend``."""

    kappa: float = 0.0

    def __post_init__(self) -> None:
        self.kappa = require_non_negative("kappa", self.kappa)


def blend_targets(
    logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, kappa: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row, the index of the nearest other row that is adversarial for its label.

    Args:
        logits: (N, classes) logits of ``images``, each image classified alone.
        images: (N, C, H, W) float images in [0, 1].
        labels: (N,) int64 true labels.
        kappa: the confidence a target must exceed (margin at most -(kappa + clearance)).

    Returns:
        (targets, found): (N,) int64 row indices and (N,) bool, False where no row of the
        batch is adversarial for that row's label (its target is then itself).
    """
    count = len(images)
    # margins[i, j]: the margin of image j for the label of image i
    margins = torch.stack([classification_margin(logits, labels[i].expand(count)) for i in range(count)])
    usable = margins <= -(kappa + BLEND_CLEARANCE)
    distances = torch.cdist(images.flatten(1).double(), images.flatten(1).double())
    distances = distances.masked_fill(~usable, float("inf"))
    nearest = distances.argmin(1)
    found = usable.any(1)
    return torch.where(found, nearest, torch.arange(count)), found


def run_blend(model: nn.Module, options: BlendOptions, images: torch.Tensor, labels: torch.Tensor, seed: int):
    """The nearest adversarial image of the batch for each image (the stage bisects back)."""
    with torch.no_grad():
        logits = model(images)
    targets, _ = blend_targets(logits.cpu(), images.cpu(), labels.cpu(), options.kappa)
    return images[targets.to(images.device)].clone()


ATTACKS.register(
    "blend",
    AttackSpec(
        name="blend",
        version=1,
        options=BlendOptions,
        run=run_blend,
        summary="decision-based: toward the nearest image of another class, bisected to the boundary",
        refine_to_boundary=True,
    ),
)
