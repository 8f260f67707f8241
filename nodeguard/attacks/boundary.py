"""Moving adversarials back to the decision boundary, as floats and on the 8-bit grid.

Carlini and Wagner ask for the smallest perturbation that misclassifies, which sits on
the decision boundary; an optimiser with a coarse schedule ends past it. Tolerance
randomization catches an adversarial when the change of its margin across the drawn
tolerances exceeds |margin|, so how far past the boundary an attack lands decides the
defense. Here each adversarial x' = x + delta of a minimal-perturbation attack is moved
back along the segment from x: the smallest scale s in [0, 1] whose image x + s delta,
classified alone at tol_attack, has a margin of at most -(kappa + MARGIN_SLACK) (a
bisection on s). Then the same on the 8-bit grid that a PNG holds: the smallest s whose
rounded image still has that margin; where even the rounded x' fails, every changed pixel
is rounded away from the original; where that fails too, the image is lost on the grid.
Rounding overshoots the boundary (hundreds of pixels round at once), so each kept 8-bit
adversarial is then tightened: pixels move one level back toward the original, in the
order the margin's gradient suggests, as long as the margin stays at most -(kappa + slack).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

import torch

from nodeguard.models.evaluation import classification_margin, classify_alone, logits_alone
from nodeguard.models.networks import ImageClassifier


class GridMethod(IntEnum):
    """How an adversarial was put on the 8-bit grid (the ``grid_method`` of an attack set)."""

    LOST = 0  # not adversarial on the grid, or not attempted (the attack failed)
    ROUNDED = 1  # rounded at the smallest scale of its perturbation that stays adversarial
    OUTWARD = 2  # every changed pixel rounded away from the original


# Margins are computed with each image solved alone, so they do not depend on the batch
# beyond float rounding: on odenet-mnist5k the logits of 100 digits solved in one batch and
# each alone differed by at most 1e-6. The slack is 100 times that.
MARGIN_SLACK = 1e-4
FLOAT_STEPS = 24  # bisection steps on s: 2^-24 of the perturbation
# on the grid: 1/4096 of the perturbation, 16 times finer than the 1/255 spacing of one
# pixel's levels (pixels change level at scales of their own, so finer can still change one)
GRID_STEPS = 12
# rounds of pixel-by-pixel tightening on the grid (each: one gradient, a bisection on the
# number of pixels moved one level back toward the original)
TIGHTEN_ROUNDS = 3


def smallest_scale(holds: Callable[[torch.Tensor], torch.Tensor], count: int, steps: int) -> torch.Tensor:
    """Per row, the smallest scale in (0, 1] at which ``holds`` is true, by bisection.

    ``holds(scales)`` must be true at 1 and false at 0 for every row; the result is always
    a scale where it was seen to hold (1 when ``steps`` is 0).
    """
    low, high = torch.zeros(count, dtype=torch.float64), torch.ones(count, dtype=torch.float64)
    for _ in range(steps):
        middle = (low + high) / 2
        ok = holds(middle)
        high = torch.where(ok, middle, high)
        low = torch.where(ok, low, middle)
    return high


def _scaled(clean: torch.Tensor, delta: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return clean + scales.to(clean.dtype).view(-1, *([1] * (clean.dim() - 1))) * delta


def _rounded(clean: torch.Tensor, delta: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The 8-bit levels (as floats in 0..255) of clean + scale * delta."""
    return (_scaled(clean, delta, scales) * 255).round().clamp(0, 255)


def refine_floats(
    model: ImageClassifier,
    tol: float,
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    labels: torch.Tensor,
    target: float,
    steps: int = FLOAT_STEPS,
) -> torch.Tensor:
    """Each adversarial moved back to the smallest scale whose margin is at most ``target``.

    Every row must have a margin at most ``target`` at ``adversarial`` and above it at
    ``clean`` (a correctly classified image); rows are refined independently.
    """
    if len(clean) == 0:
        return adversarial
    delta = adversarial - clean

    def holds(scales: torch.Tensor) -> torch.Tensor:
        return classify_alone(model, _scaled(clean, delta, scales), tol, labels).margins <= target

    return _scaled(clean, delta, smallest_scale(holds, len(clean), steps))


def finish_on_8bit_grid(
    model: ImageClassifier,
    tol: float,
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    labels: torch.Tensor,
    success: torch.Tensor,
    target: float,
    steps: int = GRID_STEPS,
    tighten_rounds: int = TIGHTEN_ROUNDS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(uint8 adversarials, success on the grid, how: 0 lost, 1 rounded, 2 rounded outward).

    For the successful rows: the smallest scale of the perturbation whose rounded image has
    a margin of at most ``target`` (``steps`` 0: the rounded adversarial itself), else the
    perturbation rounded away from the original, else lost; then each kept one is tightened
    pixel by pixel toward the boundary (:func:`tighten_on_grid`, ``tighten_rounds`` 0: not).
    Other rows keep the clean image.
    """
    clean_levels = (clean * 255).round()
    method = torch.full((len(clean),), GridMethod.LOST, dtype=torch.long)
    result = clean_levels.clone()
    rows = success.nonzero().squeeze(1)
    if len(rows) == 0:
        return result.to(torch.uint8), method != GridMethod.LOST, method
    row_clean, row_labels = clean[rows], labels[rows]
    delta = adversarial[rows] - row_clean

    def adversarial_levels(levels: torch.Tensor, level_labels: torch.Tensor) -> torch.Tensor:
        return classify_alone(model, levels / 255, tol, level_labels).margins <= target

    full = adversarial_levels(_rounded(row_clean, delta, torch.ones(len(rows))), row_labels)
    if full.any():
        kept = rows[full]
        kept_clean, kept_delta, kept_labels = row_clean[full], delta[full], row_labels[full]
        scales = smallest_scale(
            lambda scales: adversarial_levels(_rounded(kept_clean, kept_delta, scales), kept_labels), len(kept), steps
        )
        result[kept] = _rounded(kept_clean, kept_delta, scales)
        method[kept] = GridMethod.ROUNDED
    retry = rows[~full]
    if len(retry):
        levels_delta = adversarial[retry] * 255 - clean_levels[retry]
        outward = (clean_levels[retry] + levels_delta.sign() * (levels_delta.abs() - 1e-4).clamp(min=0).ceil()).clamp(
            0, 255
        )
        kept_outward = adversarial_levels(outward, labels[retry])
        result[retry[kept_outward]] = outward[kept_outward]
        method[retry[kept_outward]] = GridMethod.OUTWARD
    kept_rows = (method > 0).nonzero().squeeze(1)
    if tighten_rounds > 0 and len(kept_rows):
        result[kept_rows] = tighten_on_grid(
            model, tol, clean_levels[kept_rows], result[kept_rows], labels[kept_rows], target, tighten_rounds
        )
    return result.to(torch.uint8), method != GridMethod.LOST, method


def _margin_gradient(model: ImageClassifier, tol: float, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d margin / d pixel of each image alone at ``tol`` (pixels in [0, 1])."""
    images = images.clone().requires_grad_(True)
    with torch.enable_grad():
        margins = classification_margin(logits_alone(model, images, tol)[0], labels)
        (gradient,) = torch.autograd.grad(margins.sum(), images)
    return gradient


def tighten_on_grid(
    model: ImageClassifier,
    tol: float,
    clean_levels: torch.Tensor,
    levels: torch.Tensor,
    labels: torch.Tensor,
    target: float,
    rounds: int = TIGHTEN_ROUNDS,
) -> torch.Tensor:
    """8-bit adversarials (levels as floats, each with margin <= ``target``) moved closer to
    the boundary, pixel by pixel, without leaving the grid.

    Rounding a boundary point to the grid overshoots it by the rounding of hundreds of
    pixels at once. Each round orders the changed pixels by the margin that moving each one
    level back toward the original is predicted to give (the gradient of the margin, image
    alone at ``tol``): first those predicted to lower it, then the rest from the smallest
    rise up. It then moves back the longest prefix of that order whose image, classified
    alone, still has a margin of at most ``target`` (a bisection on the prefix length, every
    candidate checked exactly). Pixels only move toward the original, so the perturbation
    only shrinks, and every row keeps a margin of at most ``target``.
    """
    if len(levels) == 0:
        return levels
    levels = levels.clone()
    flat_clean = clean_levels.flatten(1)
    for _round in range(rounds):
        flat = levels.flatten(1)
        toward_clean = -torch.sign(flat - flat_clean)  # one level back; 0 where unchanged
        gradient = _margin_gradient(model, tol, levels / 255, labels).flatten(1)
        predicted = gradient * toward_clean / 255
        changed = toward_clean != 0
        # unchanged pixels last (never moved); among changed ones, the predicted rise ascending
        order = torch.where(changed, predicted, torch.full_like(predicted, torch.inf)).argsort(dim=1)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
        low = torch.zeros(len(levels), dtype=torch.long)  # a prefix known to hold (0: as is)
        high = changed.sum(1) + 1  # a prefix known to fail, or one past the last
        while bool((high - low > 1).any()):
            middle = (low + high) // 2
            active = high - low > 1
            candidates = _moved_back(flat, toward_clean, ranks, middle).view_as(levels)
            holds = classify_alone(model, candidates / 255, tol, labels).margins <= target
            low = torch.where(active & holds, middle, low)
            high = torch.where(active & ~holds, middle, high)
        if bool((low == 0).all()):
            break
        levels = _moved_back(flat, toward_clean, ranks, low).view_as(levels)
    return levels


def _moved_back(flat: torch.Tensor, toward_clean: torch.Tensor, ranks: torch.Tensor, prefix: torch.Tensor):
    """Each row's pixels of rank below its ``prefix`` moved one level toward the original."""
    return flat + toward_clean * (ranks < prefix.view(-1, 1))
