"""EOT-CW: Carlini–Wagner L2 against tolerance randomization, the attacker who knows the defense.

Expectation over Transformation (Athalye, Carlini & Wagner, "Obfuscated gradients give a
false sense of security", ICML 2018) applied to the solver tolerance. At every step each
image is solved at ``draws`` fresh tolerances drawn log-uniformly in the defense's range
[tol_low, tol_high]; every (image, tolerance) pair is the image's own solve (the
differentiable per-sample dopri5), and all pairs of a batch are solved together. The loss
of an image is

    ||x' - x||_2^2 + c * mean_k max(margin(x', tau_k), -(kappa + slack))

where margin is the true logit minus the best other one. Why this surrogate of the vote:
the defense accepts a wrong class when more than v_min of its V draws agree on it, so the
attacker must flip the prediction at (nearly) every tolerance of the range, not on
average. Each hinged term stops pulling once its draw is past the boundary by the
required margin, so the mean keeps pushing exactly the draws still classified correctly,
and it is zero-gradient (done) only when every draw is fooled: a differentiable stand-in
for "the share of draws fooled", whose steps are the margins themselves. (A mean of raw
margins would let a few deep draws hide many correct ones.)

A candidate counts as found when all of the step's ``draws`` margins are at most
-(kappa + slack), and the smallest such perturbation is kept; the c search is
:class:`CarliniWagnerL2`'s. The attack is then judged by the defense itself, with the
defense's own draws (see :mod:`nodeguard.stages.security`).

The attacker's draws come from a generator seeded by the attack set's seed and batch
number alone: the defense's seed is never read, and its draws (a hash of its seed and
the image's pixels, :func:`nodeguard.defense.randomization.draw_tolerances`) are unknown to it.

Options (defaults): those of CW (steps 100, binary_steps 5, initial_const 1, lr 0.05,
kappa 0), ``draws`` (4 per image and step), ``tol_low``/``tol_high`` (the defense's
range, 1e-5 and 1e-1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from nodeguard.attacks.cw import CarliniWagnerL2, CWOptions
from nodeguard.attacks.pinned import PinnedTolerance, classification_margin
from nodeguard.attacks.spec import ATTACKS, AttackOutcome, AttackSpec, require_at_least
from nodeguard.defense.randomization import DEFAULT_TOL_RANGE, ToleranceRange, log_uniform
from nodeguard.models.networks import ImageClassifier, require_solver

# the attacker's stream of draws is seeded apart from any defense seed of the same value
ATTACKER_STREAM = 0x5EED_A77AC


class ToleranceDraws(nn.Module):
    """Logits (B, draws, classes) of each image solved alone at ``draws`` random tolerances.

    The tolerances are log-uniform in [low, high], drawn anew at every call from
    ``generator``; the downsampling runs once per image. ``last_tolerances`` keeps the
    (B, draws) tolerances of the latest call.
    """

    def __init__(self, model: ImageClassifier, draws: int, low: float, high: float, generator: torch.Generator):
        super().__init__()
        require_solver(model, "an attack that draws solver tolerances")
        self.model = model
        self.draws, self.low, self.high = draws, low, high
        self.generator = generator
        self.last_tolerances = torch.empty(0, draws, dtype=torch.float64)

    def draw(self, count: int) -> torch.Tensor:
        uniform = torch.rand(count, self.draws, generator=self.generator, dtype=torch.float64)
        return log_uniform(uniform, self.low, self.high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tolerances = self.draw(len(x))
        self.last_tolerances = tolerances
        features = self.model.features(x).repeat_interleave(self.draws, dim=0)
        logits, _nfe = self.model.classify_features_per_sample(features, tolerances.reshape(-1).to(x.device))
        return logits.view(len(x), self.draws, -1)


class EOTCarliniWagnerL2(CarliniWagnerL2):
    """CW-L2 whose margin term is averaged over tolerance draws (see the module docstring).

    Expectation over Transformation (Athalye, Carlini & Wagner, ICML 2018) over the solver
    tolerance, on top of :class:`CarliniWagnerL2` (Carlini & Wagner, IEEE S&P 2017).
    Takes :class:`CarliniWagnerL2`'s arguments; ``model`` must return (B, draws, classes)
    logits, as :class:`ToleranceDraws` does (a generator-driven draw per call, log-uniform
    in the defense's [tol_low, tol_high]).
    """

    def margin_objective(self, adversarial: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(term, success) per image over one call's draws.

        Args:
            adversarial: (B, C, H, W) candidate images in [0, 1] (with gradient).
            labels: (B,) int64 true classes.

        Returns:
            (term, success): (B,) float, the mean over draws of max(margin, -(kappa + slack))
            (logit units, differentiable), and (B,) bool, True when every draw's margin is
            at most -(kappa + slack).
        """
        logits = self.get_logits(adversarial)  # (B, draws, classes)
        count, draws = logits.shape[:2]
        margins = classification_margin(logits.flatten(0, 1), labels.repeat_interleave(draws)).view(count, draws)
        term = margins.clamp(min=-self.required_margin).mean(1)
        return term, self.is_success(margins.detach()).all(1)


@dataclass
class EOTCWOptions(CWOptions):
    """Options of ``nodeguard attack eot-cw``: CW's, the draws per step and their range."""

    draws: int = 4
    tol_low: float = DEFAULT_TOL_RANGE.low
    tol_high: float = DEFAULT_TOL_RANGE.high

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least("draws", self.draws, 1)
        ToleranceRange(self.tol_low, self.tol_high)  # the one check of a range


def attacker_generator(seed: int) -> torch.Generator:
    """The attacker's own generator: its attack-set seed (and batch), never the defense's."""
    return torch.Generator().manual_seed(ATTACKER_STREAM + int(seed))


def run_eot_cw(
    model: nn.Module,
    options: EOTCWOptions,
    images: torch.Tensor,
    labels: torch.Tensor,
    seed: int,
    starts: torch.Tensor | None = None,
) -> AttackOutcome:
    """EOT-CW on the model under ``model`` (the stage's tol_attack is replaced by the
    draws), its first search from ``starts`` where given, with its record of incomplete
    optimization (see :class:`CarliniWagnerL2`)."""
    classifier = model.model if isinstance(model, PinnedTolerance) else cast(ImageClassifier, model)
    draws = ToleranceDraws(classifier, options.draws, options.tol_low, options.tol_high, attacker_generator(seed))
    cw_options = {name: getattr(options, name) for name in ("steps", "binary_steps", "initial_const", "lr", "kappa")}
    attack = EOTCarliniWagnerL2(draws.eval(), **cw_options)
    adversarial = attack(images, labels, starts)
    return AttackOutcome(adversarial, attack.still_improving)


ATTACKS.register(
    "eot-cw",
    AttackSpec(
        name="eot-cw",
        version=1,
        options=EOTCWOptions,
        run=run_eot_cw,
        takes_start=True,
        summary="CW-L2 averaged over tolerances drawn from the defense's range (EOT), against the defense",
    ),
)
