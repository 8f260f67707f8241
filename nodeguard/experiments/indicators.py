"""Checks of the evaluation itself: attack-failure indicators, optimality, the worst case, a verdict.

A security table is only as good as its attacks. Following the Indicators of Attack
Failure (Pintor et al., "Indicators of Attack Failure: Debugging and Improving
Optimization of Adversarial Examples", NeurIPS 2022) and AutoAttack's checks (Croce &
Hein 2020, ``autoattack/checks.py``), each check below looks at what the attacks left
behind and fires, per image, where the evaluation itself may have failed:

- ``zero-gradient``: the input gradient of the margin (true logit minus the best other)
  is zero or not finite at a pristine image, on the target a gradient attacker
  differentiates (the model at tol_train for CW; the randomized model, logits averaged
  over the attacker's own tolerance draws, for EOT-CW and AutoAttack-rand). Gradient
  attacks cannot move there: masked gradients.
- ``unconstrained-failure``: a minimal-perturbation attacker (CW, EOT-CW, FMN: no norm bound)
  failed on an image the model classifies correctly. With no bound every such image has
  an adversarial, so the attack, not the model, failed there. The security evaluation
  also reruns each fixed-budget attack (AutoAttack-rand, Square) with no norm bound on its
  first images and applies the same check ("apgd-rand unbounded").
- ``silent-success``: the attack found an adversarial (a float point misclassified alone
  at tol_train) but the 8-bit image it returned is not one: lost on the 8-bit grid.
- ``square-beats-white-box``: at an AutoAttack-rand budget eps, Square (gradient-free, on
  the model) fools an image that no gradient attacker fools within eps. At equal budget
  a gradient-free attack should not win: gradients are likely masked.
- ``randomized-model``: the logits of a pristine image change across the defense's own
  draws. Expected for tolerance randomization; the evaluation then needs an attacker
  that averages over the randomness (EOT-CW, AutoAttack-rand, Square on the randomized
  model): it fires as unreliable only when none was run.

- ``not-converged`` (the budget check): the strongest fixed-budget attacker (AutoAttack-rand,
  at its middle budget) rerun with 5x its steps on the first attacked images fools images
  it did not; unreliable when the rerun's share lies above the interval of its own.
- ``incomplete-optimization``: a minimal-perturbation attacker (CW, EOT-CW, FMN) stopped
  while its smallest adversarial was still shrinking: by more than 1% over the last tenth
  of its steps (of its last search over c for CW), or first found there. The attacks
  record it as they run (:class:`nodeguard.attacks.spec.AttackOutcome`).

Not computed: Pintor et al.'s transfer failure (nodeguard runs no transfer attack), and
incomplete optimization of the fixed-budget attackers (AutoAttack-rand's iterations run
inside torchattacks; the security evaluation's budget check reruns it with 5x the steps
instead).

Optimality follows AttackBench (Cinà et al., "AttackBench: Evaluating Gradient-based
Attacks for Adversarial Examples", AAAI 2025): with ``r_A(eps)`` an attacker's robust
accuracy curve (share of images it does not fool within L2 eps) and ``r*(eps)`` the worst
case over every attacker per image, an attacker's optimality over [0, E] is
``integral r* / integral r_A``, in (0, 1], 1 when it found the smallest adversarial of
every image. Since ``integral_0^E r(eps) d eps = mean_i min(eps_i, E)`` over the
per-image smallest L2 ``eps_i`` (inf where none was found), it is computed from those.

Nothing here reads the result store; :mod:`nodeguard.stages.security` passes the judged
rows in. L2 is over pixels in [0, 1]; margins are in logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from nodeguard.attacks.pinned import classification_margin
from nodeguard.intervals import Rate

GRADIENT_FLOOR = 1e-12  # an input gradient whose L2 norm is at most this counts as zero
LOGIT_CHANGE = 1e-6  # logits that move by more than this across the draws: a randomized model
GRADIENT_ATTACKS = ("cw", "eot-cw", "apgd-rand", "fmn", "pgd")
MINIMAL_ATTACKS = ("cw", "eot-cw", "fmn")  # no norm bound: every correctly classified image has an adversarial
EOT_ATTACKS = ("eot-cw", "apgd-rand")  # average over the randomness (and Square with draws)


@dataclass
class Indicator:
    """One check of the evaluation, on one attacker (or the model), over the attacked images.

    Attributes:
        name: the check ("zero-gradient", "unconstrained-failure", "incomplete-optimization",
            "silent-success", "square-beats-white-box", "randomized-model", "not-converged").
        about: what it looked at: an attacker's label, or a target ("model at tol_train",
            "randomized model").
        fired: it found at least one image.
        unreliable: fired, and makes the evaluation unreliable (``randomized-model`` fires
            as expected, and is unreliable only when no EOT attacker ran).
        rate: the images it fired on, of the images it looked at (a
            :class:`~nodeguard.intervals.Rate`; ``count`` and ``total`` read it).
        images: rows (positions among the attacked images) it fired on.
        meaning: one line: what it means.
        action: one line: what to do.
    """

    name: str
    about: str
    fired: bool
    unreliable: bool
    rate: Rate
    images: list[int]
    meaning: str
    action: str

    @property
    def count(self) -> int:
        """The images it fired on."""
        return self.rate.count

    @property
    def total(self) -> int:
        """The images it looked at."""
        return self.rate.total


def _indicator(
    name: str, about: str, mask: torch.Tensor, meaning: str, action: str, unreliable: bool | None = None
) -> Indicator:
    count, total = int(mask.sum()), len(mask)
    fired = count > 0
    return Indicator(
        name=name,
        about=about,
        fired=fired,
        unreliable=fired if unreliable is None else unreliable,
        rate=Rate.of(count, total),
        images=[int(row) for row in mask.nonzero().flatten()],
        meaning=meaning,
        action=action,
    )


FLAG_NAMES = {  # the short name (8 letters at most: 80 columns) of each check a row can carry
    "unconstrained-failure": "unconstr",
    "incomplete-optimization": "incompl",
    "silent-success": "silent",
    "square-beats-white-box": "sq>grad",
}


def indicator_mark(item: Indicator) -> str:
    """How a fired check reads: "UNRELIABLE", "expected" (the randomized model), or "note"."""
    if item.unreliable:
        return "UNRELIABLE"
    return "expected" if item.name == "randomized-model" else "note"


def row_flags(indicators: Sequence[Indicator]) -> dict[str, str]:
    """Per attacker label, the fired checks about its row with their counts ("silent 2, ...").

    The checks about a target (``zero-gradient``) or the model (``randomized-model``) are
    not a row's: they are printed on their own lines.
    """
    flags: dict[str, list[str]] = {}
    for item in indicators:
        if item.fired and item.name in FLAG_NAMES:
            flags.setdefault(item.about, []).append(f"{FLAG_NAMES[item.name]} {item.count}")
    return {label: ", ".join(names) for label, names in flags.items()}


def batched_gradient_norms(
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device | str = "cpu",
    batch: int = 100,
) -> torch.Tensor:
    """:func:`margin_gradient_norms` over batches of ``batch`` images (one graph each), on ``device``.

    Returns:
        (N,) float32 on the CPU.
    """
    chunks = [
        margin_gradient_norms(
            logits_of, images[start : start + batch].to(device), labels[start : start + batch].to(device)
        )
        for start in range(0, len(images), batch)
    ]
    return torch.cat([chunk.cpu() for chunk in chunks]) if chunks else torch.zeros(0)


def margin_gradient_norms(
    logits_of: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """The L2 norm of each image's input gradient of its margin (true logit minus the best other).

    Args:
        logits_of: maps (N, C, H, W) images in [0, 1] to (N, classes) logits, differentiably
            (e.g. a pinned ODE-Net, or the mean over tolerance draws).
        images: (N, C, H, W) float32 in [0, 1].
        labels: (N,) int64 true classes.

    Returns:
        (N,) float32 norms (over pixels); NaN or inf where the gradient is not finite.
    """
    inputs = images.detach().clone().requires_grad_(True)
    margins = classification_margin(logits_of(inputs), labels)
    (gradient,) = torch.autograd.grad(margins.sum(), inputs, allow_unused=True)
    if gradient is None:  # the logits do not depend on the input at all
        return torch.zeros(len(images))
    norms = gradient.detach().flatten(1).norm(dim=1)
    finite = torch.isfinite(gradient.detach().flatten(1)).all(1)
    return torch.where(finite, norms, torch.full_like(norms, float("nan")))


def zero_gradient(norms: torch.Tensor, about: str) -> Indicator:
    """Fires where an input gradient is zero (norm <= GRADIENT_FLOOR) or not finite.

    Args:
        norms: (N,) float32 from :func:`margin_gradient_norms`.
        about: the target the gradient was taken through.
    """
    broken = ~torch.isfinite(norms) | (norms <= GRADIENT_FLOOR)
    return _indicator(
        "zero-gradient",
        about,
        broken,
        "the input gradient is zero or not finite there: a gradient attack cannot move (masked gradients)",
        "trust the gradient-free rows (Square) there; attack a differentiable surrogate (BPDA) of the model",
    )


def unconstrained_failure(
    label: str, fooled: torch.Tensor, fooled_elsewhere: torch.Tensor | None = None, minimal: bool = True
) -> Indicator:
    """Fires where an attack with no norm bound failed on a correctly classified image.

    Args:
        label: the attacker (a minimal-perturbation one, or a budgeted one rerun unbounded).
        fooled: (N,) bool, its 8-bit adversarial fools the model (every attacked image is
            classified correctly alone at tol_train).
        fooled_elsewhere: (N,) bool, the same attack fooled the image at a bound: the
            failure then changes no figure, and is unreliable only on the other images.
            None: unreliable wherever it fires.
        minimal: a minimal-perturbation attack (CW, EOT-CW, FMN); else a budgeted one
            (AutoAttack-rand, Square) rerun unbounded: the advice differs.
    """
    failed = ~fooled
    unreliable = None if fooled_elsewhere is None else bool((failed & ~fooled_elsewhere).any())
    action = (
        "raise its steps and searches over c, or check the gradients (zero-gradient)"
        if minimal
        else "check its settings (steps, queries) and the gradients (zero-gradient): unbounded, it should fool all"
    )
    return _indicator(
        "unconstrained-failure",
        label,
        failed,
        "with no norm bound every such image has an adversarial: the attack failed, not the model",
        action,
        unreliable=unreliable,
    )


def incomplete_optimization(
    label: str, still_improving: torch.Tensor, holds_worst_case: torch.Tensor | None = None
) -> Indicator:
    """Fires where a minimal-perturbation attacker's smallest adversarial was still shrinking
    as it stopped (Pintor et al.'s incomplete optimization).

    Window and threshold: the last tenth of its steps (of its last search over c for CW and
    EOT-CW, whose searches may also stop early when the loss stalls, which counts as
    converged), and an L2 shrinking by more than 1% over them or first found inside them
    (:data:`nodeguard.attacks.spec.INCOMPLETE_WINDOW`, ``INCOMPLETE_SHRINK``).

    Args:
        label: the attacker.
        still_improving: (N,) bool, recorded by the attack
            (:class:`~nodeguard.attacks.spec.AttackOutcome`).
        holds_worst_case: (N,) bool, this attacker found the image's smallest adversarial
            (undefended or defended), so an unfinished L2 there moves the robust-accuracy
            curve: the check is unreliable only on such an image. None (one attack alone):
            unreliable wherever it fires.
    """
    unreliable = None if holds_worst_case is None else bool((still_improving & holds_worst_case).any())
    return _indicator(
        "incomplete-optimization",
        label,
        still_improving,
        "the attack stopped while its smallest adversarial was still shrinking: its L2 there is an over-estimate",
        "raise its steps (and for CW its searches over c; in security, --warm-searches for EOT-CW continued from "
        "k=0) until this stops firing",
        unreliable=unreliable,
    )


def silent_success(label: str, success_float: torch.Tensor, success_8bit: torch.Tensor) -> Indicator:
    """Fires where the attack found a float adversarial whose returned 8-bit image is not one.

    Args:
        label: the attacker.
        success_float: (N,) bool, the float adversarial is misclassified alone at tol_train.
        success_8bit: (N,) bool, its 8-bit image is.
    """
    return _indicator(
        "silent-success",
        label,
        success_float & ~success_8bit,
        "the attack found an adversarial but the 8-bit image it returned is not one (lost on the grid)",
        "count it as a failure of the attack, not as robustness; raise kappa so adversarials survive rounding",
    )


def square_beats_white_box(
    eps: float, square_fooled: torch.Tensor, white_box_fooled: Sequence[torch.Tensor]
) -> Indicator:
    """AutoAttack's check at budget eps: Square fools an image no gradient attacker fools within eps.

    Args:
        eps: the L2 budget (pixels in [0, 1]).
        square_fooled: (N,) bool, Square's adversarial on the model at that budget fools it.
        white_box_fooled: per gradient attacker, (N,) bool, its adversarial within eps fools
            the model (:meth:`nodeguard.experiments.security.JudgedAttack.within`).
    """
    white = torch.zeros(len(square_fooled), dtype=torch.bool)
    for fooled in white_box_fooled:
        white |= fooled
    return _indicator(
        "square-beats-white-box",
        f"square e={eps:g}",
        square_fooled & ~white,
        "a gradient-free attack fools images the gradient attackers do not at the same budget: masked gradients",
        "read the robust accuracy from the worst case over every attacker (it includes Square); check zero-gradient",
    )


def randomized_model(pristine_logits: torch.Tensor, eot_attackers: Sequence[str]) -> Indicator:
    """Fires where a pristine image's logits change across the defense's draws; unreliable only
    when no attacker averaged over the randomness.

    Args:
        pristine_logits: (N, V, classes) float32 logits of the defense's V draws per image.
        eot_attackers: labels of the attackers run that average over the draws.
    """
    spread = (pristine_logits.amax(1) - pristine_logits.amin(1)).amax(1)
    moving = spread > LOGIT_CHANGE
    who = ", ".join(eot_attackers) if eot_attackers else "none"
    return _indicator(
        "randomized-model",
        "randomized model",
        moving,
        f"the defense's draws change the logits (expected here): only attackers that average over them count; "
        f"run: {who}",
        "keep an EOT attacker in the evaluation (EOT-CW, AutoAttack-rand, Square with --square-draws)",
        unreliable=bool(moving.any()) and not eot_attackers,
    )


BUDGET_FACTOR = 5  # the budget check reruns the strongest fixed-budget attacker with 5x its steps


@dataclass
class BudgetCheck:
    """The strongest fixed-budget attacker rerun with ``BUDGET_FACTOR`` times its steps on the
    first attacked images (AttackBench's and AutoAttack's question: has the attack converged?).

    Attributes:
        label: the attacker rerun, e.g. "apgd-rand e=1.5".
        eps: its L2 budget (pixels in [0, 1]).
        count: images rerun (the first ``count`` of the attacked images).
        steps: its steps in the evaluation.
        steps_more: its steps in the rerun.
        fooled: images its 8-bit adversarial fools (alone at tol_train), of ``count`` (a
            :class:`~nodeguard.intervals.Rate`).
        fooled_more: the same with ``steps_more``.
        images: rows only the rerun fools (gained).
        converged: the share ``fooled_more`` lies within the interval of ``fooled`` (the
            issue's rule; on 20 images it flags only large rises: from 13 of 20 the rerun
            must fool 17).
        set_key: the rerun's attack set.
        eot_iter: EOT samples per gradient, the same in both runs (0: not recorded).
        lost: rows only the attacker's own run fools (its randomness, not its steps).

    "Fools" is the undefended model's verdict: the 8-bit adversarial misclassified alone at
    tol_train.
    """

    label: str
    eps: float
    count: int
    steps: int
    steps_more: int
    fooled: Rate
    fooled_more: Rate
    images: list[int]
    converged: bool
    set_key: str = ""
    eot_iter: int = 0
    lost: list[int] = field(default_factory=list)


def budget_check(
    label: str,
    eps: float,
    steps: tuple[int, int],
    fooled: torch.Tensor,
    fooled_more: torch.Tensor,
    set_key: str = "",
    eot_iter: int = 0,
) -> tuple[BudgetCheck, Indicator]:
    """The budget check and its indicator ``not-converged``.

    The indicator fires on the images only the longer run fools; it makes the evaluation
    unreliable when the longer run's share lies above the interval of the attacker's own.

    Args:
        label: the attacker rerun.
        eps: its budget.
        steps: (its steps, the rerun's steps).
        fooled: (n,) bool, its own 8-bit adversarials fool the model, on the first n images.
        fooled_more: (n,) bool, the rerun's do.
        set_key: the rerun's attack set.
        eot_iter: EOT samples per gradient of both runs.
    """
    count = len(fooled)
    own, more = int(fooled.sum()), int(fooled_more.sum())
    own_rate = Rate.of(own, count)
    converged = own_rate.interval is None or more / count <= own_rate.interval[1] + 1e-12
    check = BudgetCheck(
        label=label,
        eps=eps,
        count=count,
        steps=steps[0],
        steps_more=steps[1],
        fooled=own_rate,
        fooled_more=Rate.of(more, count),
        images=[int(row) for row in (fooled_more & ~fooled).nonzero().flatten()],
        converged=converged,
        set_key=set_key,
        eot_iter=eot_iter,
        lost=[int(row) for row in (fooled & ~fooled_more).nonzero().flatten()],
    )
    indicator = _indicator(
        "not-converged",
        label,
        fooled_more & ~fooled,
        f"with {steps[1]} steps instead of {steps[0]} it fools the undefended model on {more} of the first "
        f"{count} images, against {own}" + ("" if converged else ", above its interval: the attack has not converged"),
        "raise its steps (--aa-steps) until the rerun fools no more images",
        unreliable=not converged,
    )
    return check, indicator


@dataclass
class Optimality:
    """One attacker's optimality (AttackBench, Cinà et al. 2025) over [0, E] (see the module docstring).

    Attributes:
        label: the attacker.
        undefended: integral of the worst-case robust accuracy over its own, against the
            undefended model, in (0, 1] (None: the attacker fooled no image and the
            worst case none either).
        defended: the same with adversarials that fool the vote (misclassified and accepted).
        max_eps: E, the end of the integral (L2, pixels in [0, 1]).
    """

    label: str
    undefended: float | None
    defended: float | None
    max_eps: float


def optimality(own_l2: torch.Tensor, worst_l2: torch.Tensor, max_eps: float) -> float | None:
    """``mean min(worst_l2, E) / mean min(own_l2, E)``: AttackBench's optimality of one attacker.

    Args:
        own_l2: (N,) float32, the attacker's L2 per image (inf where it failed).
        worst_l2: (N,) float32, the smallest L2 per image over every attacker (inf: none).
        max_eps: E > 0.

    Returns:
        In (0, 1]; None when no attacker found anything below E (both integrals are N * E:
        nothing to compare).
    """
    own = own_l2.clamp(max=max_eps).mean()
    worst = worst_l2.clamp(max=max_eps).mean()
    if float(worst) >= max_eps:
        return None
    return float(worst / own)


@dataclass
class WorstCase:
    """Per attacked image, the smallest adversarial any attacker found, and whose.

    Attributes:
        undefended_l2: per image, the smallest L2 of an adversarial that fools the model
            alone at tol_train (None: none found).
        undefended_by: the attacker that found it (None: none).
        defended_l2: the smallest L2 of an adversarial misclassified and accepted by the vote.
        defended_by: its attacker.
    """

    undefended_l2: list[float | None] = field(default_factory=list)
    undefended_by: list[str | None] = field(default_factory=list)
    defended_l2: list[float | None] = field(default_factory=list)
    defended_by: list[str | None] = field(default_factory=list)


def smallest_per_image(l2_by_attacker: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[str | None]]:
    """Per image, the smallest L2 over attackers and the attacker that has it.

    Args:
        l2_by_attacker: label -> (N,) float32 L2 (inf where that attacker failed).

    Returns:
        ((N,) float32 smallest L2, inf where none; the label per image, None where none).
    """
    labels = list(l2_by_attacker)
    stacked = torch.stack([l2_by_attacker[label] for label in labels])
    smallest, which = stacked.min(0)
    pairs = zip(smallest, which, strict=True)
    owners = [labels[int(index)] if torch.isfinite(value) else None for value, index in pairs]
    return smallest, owners
