"""AutoAttack-rand (L2): APGD-CE and APGD-DLR with EOT against the randomized-tolerance model.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020: the ``rand`` version, the field's standard check of
randomized defenses, runs APGD with the cross-entropy and with the DLR loss, averaging
each gradient over ``eot_iter`` forward passes (EOT). The model attacked draws a fresh
tolerance per image at every forward, log-uniformly in the defense's range, from the
attacker's own generator (:class:`RandomTolerance`); the defense's seed is never read.

Built on torchattacks 3.5.1's ``APGD``, adapted where it does not fit a stochastic model:

- torchattacks' ``AutoAttack(version="rand")`` builds APGD with ``steps=10``; the
  original (fra31/auto-attack) runs 100 iterations with ``eot_iter=20``. Both are options
  here, with the original's values as defaults.
- ``APGD.forward`` keeps an adversarial only where one forward pass of the model
  misclassified it, and returns the clean image elsewhere: with a random model that is a
  coin flip, not a verdict. Here ``perturb(best_loss=True)`` is used instead, which
  returns, for every image, the iterate with the highest EOT-averaged loss.
- Of the CE and DLR candidates, each image keeps the one that more of ``judge_draws``
  attacker-drawn tolerances misclassify (ties: CE). The final verdict is the defense's.
- APGD draws its random start from torch's global generator (and ``perturb`` may reseed
  it): it runs inside ``fork_rng``, seeded by the attack set's seed, so the start is
  reproducible and the caller's random state is left as it was.

Options (defaults): ``eps`` (L2 budget, 1.5), ``steps`` (100), ``eot_iter`` (20),
``judge_draws`` (8), ``tol_low``/``tol_high`` (the defense's range).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torchattacks import APGD

from nodeguard.attacks.eot_cw import ToleranceDraws, attacker_generator
from nodeguard.attacks.pinned import PinnedTolerance
from nodeguard.attacks.spec import ATTACKS, AttackSpec, require_at_least
from nodeguard.checks import require_positive
from nodeguard.defense.randomization import DEFAULT_TOL_RANGE, ToleranceRange
from nodeguard.models.networks import ImageClassifier


class RandomTolerance(ToleranceDraws):
    """The randomized classifier: every forward solves each image alone at one fresh
    log-uniform tolerance in [low, high] drawn from ``generator``."""

    def __init__(self, model: ImageClassifier, low: float, high: float, generator: torch.Generator):
        super().__init__(model, 1, low, high, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[:, 0]


@dataclass
class APGDRandOptions:
    """Options of ``nodeguard attack apgd-rand``."""

    eps: float = 1.5
    steps: int = 100
    eot_iter: int = 20
    judge_draws: int = 8
    tol_low: float = DEFAULT_TOL_RANGE.low
    tol_high: float = DEFAULT_TOL_RANGE.high

    def __post_init__(self) -> None:
        require_at_least("steps", self.steps, 1)
        require_at_least("eot_iter", self.eot_iter, 1)
        require_at_least("judge_draws", self.judge_draws, 1)
        self.eps = require_positive("eps", self.eps)
        ToleranceRange(self.tol_low, self.tol_high)  # the one check of a range


@torch.no_grad()
def wrong_votes(model: RandomTolerance, images: torch.Tensor, labels: torch.Tensor, draws: int) -> torch.Tensor:
    """How many of ``draws`` random tolerances misclassify each image (the attacker's own estimate)."""
    return sum((model(images).argmax(1) != labels).long() for _ in range(draws))


def run_apgd_rand(model: nn.Module, options: APGDRandOptions, images: torch.Tensor, labels: torch.Tensor, seed: int):
    classifier = model.model if isinstance(model, PinnedTolerance) else cast(ImageClassifier, model)
    randomized = RandomTolerance(classifier, options.tol_low, options.tol_high, attacker_generator(seed)).eval()
    candidates = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # APGD's random start comes from the global generator
        for loss in ("ce", "dlr"):
            attack = APGD(
                randomized,
                norm="L2",
                eps=options.eps,
                steps=options.steps,
                eot_iter=options.eot_iter,
                loss=loss,
                seed=seed,
                n_restarts=1,
            )
            _loss, adversarial = attack.perturb(images.to(attack.device), labels.to(attack.device), best_loss=True)
            candidates.append(adversarial.detach())
    scores = [wrong_votes(randomized, candidate, labels, options.judge_draws) for candidate in candidates]
    use_dlr = (scores[1] > scores[0]).view(-1, *([1] * (images.dim() - 1)))
    return torch.where(use_dlr, candidates[1], candidates[0])


ATTACKS.register(
    "apgd-rand",
    AttackSpec(
        name="apgd-rand",
        version=1,
        options=APGDRandOptions,
        run=run_apgd_rand,
        summary="AutoAttack-rand, L2: APGD-CE and APGD-DLR with EOT over random tolerances",
    ),
)
