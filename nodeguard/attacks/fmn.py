"""Fast Minimum-Norm L2 (FMN): a minimal adversarial in a fixed number of steps, no search over c.

M. Pintor, F. Roli, W. Brendel and B. Biggio, "Fast Minimum-norm Adversarial Attacks
through Adaptive Norm Constraints", NeurIPS 2021 (Algorithm 1, L2, untargeted). Each
step, for every image x with label y and current perturbation delta:

1. the loss is l = m + kappa + s, m the margin Z_y(x + delta) - max_{j != y} Z_j(x + delta),
   so that "adversarial" means l <= 0: a margin of at most -(kappa + s), s the slack of
   the attack stage's boundary refinement (1e-4), which then has an adversarial to refine;
   g is the gradient of l with respect to delta;
2. the radius eps moves: while no adversarial has been found, to the boundary's linear
   estimate ||delta|| + l / ||g||, but never less than (1 + gamma) times its last value;
   once one has, down by a factor (1 - gamma) (never above the smallest adversarial norm
   found) when x + delta is adversarial, up by (1 + gamma) when it is not;
3. delta takes a normalised gradient step of length alpha down the margin, is projected
   onto the L2 ball of radius eps and clipped so that x + delta stays in [0, 1].

alpha and gamma decay from ``alpha_init`` and ``gamma_init`` by cosine annealing to
``alpha_final`` (default alpha_init / 100) and ``gamma_final`` over ``steps``. The
smallest adversarial seen over all steps is returned; the attack stage then moves it to
the decision boundary and onto the 8-bit grid exactly as it does CW's. The model is called
as given: wrap an ODE-Net in :class:`PinnedTolerance` to fix its tolerance.

One difference from Algorithm 1, on purpose: before the first adversarial, the paper sets
eps to the linear estimate alone. Where the margin falls faster than linearly along the
gradient (it does on ODE-Nets), that estimate stays short of the boundary step after step
and the image is never attacked: 2 of 50 mnist5k digits on the quickstart's model after
50 steps, both adversarial after one unconstrained gradient step of length 1. Growing eps
by at least (1 + gamma) per step reaches them: 50 of 50 at 25 and at 50 steps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torchattacks.attack import Attack

from nodeguard.attacks.boundary import MARGIN_SLACK
from nodeguard.attacks.pinned import classification_margin
from nodeguard.attacks.spec import (
    ATTACKS,
    AttackOutcome,
    AttackSpec,
    require_at_least,
    still_shrinking,
    window_start,
)
from nodeguard.checks import require_non_negative, require_positive
from nodeguard.errors import setting_error

SMALLEST_GRADIENT_NORM = 1e-12  # a zero gradient (saturated logits) takes no step


def cosine_annealing(initial: float, final: float, step: int, steps: int) -> float:
    """The value at ``step`` of 0..steps-1 decaying from ``initial`` to ``final`` along half a cosine."""
    return final + (initial - final) * (1.0 + math.cos(math.pi * step / steps)) / 2.0


class FastMinimumNormL2(Attack):
    """Untargeted FMN-L2 (Pintor et al., NeurIPS 2021); returns the adversarial images.

    Where no adversarial was found the original image is returned. Call it as
    ``attack(images, labels)``.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, classes) logits; wrap an ODE-Net
            in :class:`~nodeguard.attacks.PinnedTolerance` to fix its tolerance.
        steps: gradient steps (each one forward and one input gradient of every image).
        alpha_init: the first step length (L2 over pixels in [0, 1]).
        alpha_final: the last step length (default ``alpha_init / 100``).
        gamma_init: the first relative change of the radius.
        gamma_final: the last relative change of the radius.
        kappa: confidence: an image is adversarial when its margin is at most
            -(kappa + MARGIN_SLACK) (logit units).
    """

    def __init__(
        self,
        model: nn.Module,
        steps: int = 100,
        alpha_init: float = 1.0,
        alpha_final: float | None = None,
        gamma_init: float = 0.05,
        gamma_final: float = 0.001,
        kappa: float = 0.0,
    ):
        super().__init__("FastMinimumNormL2", model)
        self.steps = int(steps)
        self.alpha_init = float(alpha_init)
        self.alpha_final = self.alpha_init / 100 if alpha_final is None else float(alpha_final)
        self.gamma_init = float(gamma_init)
        self.gamma_final = float(gamma_final)
        self.kappa = float(kappa)
        self.supported_mode = ["default"]
        self.still_improving: torch.Tensor | None = None  # set by each call (see forward)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Run the attack (call the instance instead, as torchattacks does).

        Args:
            images: (N, C, H, W) float32 in [0, 1].
            labels: (N,) int64 true classes.

        Returns:
            (N, C, H, W) float32 in [0, 1] on the model's device: per image the smallest-L2
            adversarial seen (margin <= -(kappa + MARGIN_SLACK); L2 over pixels in [0, 1]),
            else the clean image. The call also sets ``still_improving``, (N,) bool: that
            smallest adversarial still shrank by more than 1% over the last tenth of the
            steps, or was first found there (``spec.still_shrinking``).
        """
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        count = len(images)
        shape = (-1, *([1] * (images.dim() - 1)))
        delta = torch.zeros_like(images)
        radius = torch.zeros(count, device=self.device)
        best_norm = torch.full((count,), float("inf"), device=self.device)
        best_adversarial = images.clone()
        found = torch.zeros(count, dtype=torch.bool, device=self.device)
        window = window_start(self.steps)
        best_at_window = best_norm.clone()
        for step in range(self.steps):
            if step == window:
                best_at_window = best_norm.clone()
            alpha = cosine_annealing(self.alpha_init, self.alpha_final, step, self.steps)
            gamma = cosine_annealing(self.gamma_init, self.gamma_final, step, self.steps)
            delta.requires_grad_(True)
            adversarial = images + delta
            loss = classification_margin(self.get_logits(adversarial), labels) + (self.kappa + MARGIN_SLACK)
            (gradient,) = torch.autograd.grad(loss.sum(), delta)
            with torch.no_grad():
                delta = delta.detach()
                loss = loss.detach()
                is_adversarial = loss <= 0
                norm = delta.flatten(1).norm(dim=1)
                improved = is_adversarial & (norm < best_norm)
                best_norm = torch.where(improved, norm, best_norm)
                best_adversarial[improved] = adversarial.detach()[improved]
                found |= is_adversarial
                gradient_norm = gradient.flatten(1).norm(dim=1).clamp_min(SMALLEST_GRADIENT_NORM)
                boundary_estimate = norm + loss / gradient_norm
                radius = torch.where(
                    is_adversarial,
                    torch.minimum(radius * (1 - gamma), best_norm),
                    torch.where(found, radius * (1 + gamma), torch.maximum(boundary_estimate, radius * (1 + gamma))),
                )
                delta = delta - alpha * gradient / gradient_norm.view(shape)
                delta_norm = delta.flatten(1).norm(dim=1).clamp_min(SMALLEST_GRADIENT_NORM)
                delta = delta * torch.clamp(radius.clamp_min(0) / delta_norm, max=1.0).view(shape)
                delta = (images + delta).clamp(0.0, 1.0) - images
        self.still_improving = still_shrinking(best_at_window, best_norm)
        return best_adversarial.detach()


@dataclass
class FMNOptions:
    """Options of ``nodeguard attack fmn`` (see :class:`FastMinimumNormL2`)."""

    steps: int = 100
    alpha_init: float = 1.0
    gamma_init: float = 0.05
    kappa: float = 0.0

    def __post_init__(self) -> None:
        require_at_least("steps", self.steps, 1)
        self.alpha_init = require_positive("alpha_init", self.alpha_init)
        if not 0 < self.gamma_init < 1:  # NaN fails too
            raise setting_error("gamma_init", f"must be in (0, 1), got {self.gamma_init}")
        self.kappa = require_non_negative("kappa", self.kappa)


def run_fmn(
    model: nn.Module, options: FMNOptions, images: torch.Tensor, labels: torch.Tensor, seed: int
) -> AttackOutcome:
    """FMN (see :class:`FastMinimumNormL2`) with its record of incomplete optimization; it
    draws nothing at random, so ``seed`` is not used."""
    attack = FastMinimumNormL2(model, **asdict(options))
    adversarial = attack(images, labels)
    return AttackOutcome(adversarial, attack.still_improving)


ATTACKS.register(
    "fmn",
    AttackSpec(
        name="fmn",
        version=1,
        options=FMNOptions,
        run=run_fmn,
        summary="Fast Minimum-Norm L2 (Pintor et al. 2021), refined to the decision boundary",
        refine_to_boundary=True,
        per_image=True,
    ),
)
