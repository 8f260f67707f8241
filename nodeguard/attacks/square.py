"""Square Attack (L2): a score-based, gradient-free attack, the check for masked gradients.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020; the gradient-free member of
AutoAttack. It never differentiates the model: at each query it proposes a change of the
perturbation on a random square window (L2 version: a pair of windows whose mass is
moved between them, the perturbation kept on the sphere of radius ``eps``), and keeps
it when the margin loss (true logit minus best other) falls. If it fools images that
the gradient attackers at the same budget do not, their gradients were masked (Carlini
et al. 2019, "On evaluating adversarial robustness", §5.5; Croce et al. 2022).

Why Square and not SPSA: Square is the gradient-free attack of AutoAttack, the reference
the security table already runs (AutoAttack-rand), and at equal queries it is reported
stronger than SPSA's finite-difference estimates (Andriushchenko et al. 2020, Tables
2-3); it needs only the scores, which a randomized model gives at every query.

Built on torchattacks 3.5.1's ``Square`` (norm "L2", margin loss), with two changes:

- its ``perturb`` keeps an adversarial only where one final forward pass misclassifies
  it, and returns the clean image elsewhere: with a randomized model that is a coin
  flip. Here ``attack_single_run`` is called directly, which returns, for every image,
  the iterate with the lowest (best) margin; the defense's verdict comes later;
- it seeds torch's global generator: the run is wrapped in ``fork_rng`` with the attack
  set's seed, so it is reproducible and the caller's random state is left as it was.

Two targets, by ``draws``:

- ``draws`` = 0: the model at tol_attack (each image solved alone), as the undefended
  model sees it;
- ``draws`` = k > 0: the randomized model, each query's scores being the logits averaged
  over k tolerances drawn log-uniformly in [tol_low, tol_high] from the attacker's own
  generator (it never reads the defense's seed).

Options (defaults): ``eps`` (L2 budget, pixels in [0, 1], 1.5), ``queries`` (1000 per
image; the paper's 5000 or 10000 are options), ``draws`` (0), ``tol_low``/``tol_high``
(the defense's range); from Python also ``p_init`` (0.8, the paper's initial window
share). Every returned image is within ``eps`` of its clean image in L2 (up to float
rounding) and in [0, 1]; the 8-bit grid the attack stage finishes it on may move its L2
by a few thousandths either way.

Known limit against the randomized model: torchattacks stops attacking an image as soon
as one query's averaged margin is at most zero, so with few draws a lucky query can end
the search on a weak point; the defense's own draws judge it afterwards, so this can
only understate Square.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torchattacks import Square

from nodeguard.attacks.eot_cw import ToleranceDraws, attacker_generator
from nodeguard.attacks.pinned import PinnedTolerance
from nodeguard.attacks.spec import ATTACKS, AttackSpec, require_at_least
from nodeguard.checks import require_positive, require_range
from nodeguard.defense.randomization import DEFAULT_TOL_RANGE, ToleranceRange
from nodeguard.models.networks import ImageClassifier


@dataclass
class SquareOptions:
    """Options of ``nodeguard attack square`` (see the module docstring)."""

    eps: float = 1.5
    queries: int = 1000
    p_init: float = 0.8
    draws: int = 0
    tol_low: float = DEFAULT_TOL_RANGE.low
    tol_high: float = DEFAULT_TOL_RANGE.high

    def __post_init__(self) -> None:
        require_at_least("queries", self.queries, 1)
        require_at_least("draws", self.draws, 0)
        self.eps = require_positive("eps", self.eps)
        self.p_init = require_range("p_init", self.p_init, 0.0, 1.0, low_open=True)
        ToleranceRange(self.tol_low, self.tol_high)  # the one check of a range


class AveragedDraws(nn.Module):
    """Logits (B, classes) averaged over ``draws`` fresh random tolerances per image and call."""

    def __init__(self, draws: ToleranceDraws):
        super().__init__()
        self.draws = draws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.draws(x).mean(1)


def square_target(model: nn.Module, options: SquareOptions, seed: int) -> nn.Module:
    """The model Square queries: ``model`` itself (draws 0), or the randomized model whose
    logits (B, classes) are averaged over ``options.draws`` tolerances drawn from the
    attacker's generator for ``seed``.

    Raises:
        ConfigError: draws > 0 on a model without a solver.
    """
    if options.draws == 0:
        return model
    classifier = model.model if isinstance(model, PinnedTolerance) else cast(ImageClassifier, model)
    draws = ToleranceDraws(classifier, options.draws, options.tol_low, options.tol_high, attacker_generator(seed))
    return AveragedDraws(draws).eval()


@torch.no_grad()
def run_square(
    model: nn.Module, options: SquareOptions, images: torch.Tensor, labels: torch.Tensor, seed: int
) -> torch.Tensor:
    """Square L2 (Andriushchenko et al. 2020) against ``model`` or its randomized version.

    Args:
        model: the classifier pinned to tol_attack (:class:`PinnedTolerance`).
        options: eps, queries, p_init, draws and the tolerance range.
        images: (N, C, H, W) float32 in [0, 1].
        labels: (N,) int64 true classes.
        seed: seeds the windows (torch's default generator, restored afterwards) and the
            attacker's tolerance draws.

    Returns:
        (N, C, H, W) float32 in [0, 1], each within ``options.eps`` (L2) of its image: the
        iterate with the lowest margin found (the clean image's neighbourhood where none
        was better).

    Raises:
        ConfigError: draws > 0 on a model without a solver.
        SolverError: the per-sample solver cannot classify a query.
    """
    target = square_target(model, options, seed)
    attack = Square(target, norm="L2", eps=options.eps, n_queries=options.queries, p_init=options.p_init, seed=seed)
    images, labels = images.to(attack.device), labels.to(attack.device)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)  # its windows and signs come from it (CPU only)
        attack.init_hyperparam(images)
        _queries, adversarial = attack.attack_single_run(images, labels)
    return adversarial.detach().clamp(0.0, 1.0)


ATTACKS.register(
    "square",
    AttackSpec(
        name="square",
        version=1,
        options=SquareOptions,
        run=run_square,
        summary="Square Attack, L2: gradient-free random search on the scores (optionally over random tolerances)",
    ),
)
