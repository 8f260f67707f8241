"""The margin-spread diagnostic: how far the defense's tolerance draws move each image's margin.

Tolerance randomization (Carrara et al., ICPR 2021 workshops) rejects an image when its
V votes disagree, and a vote flips only when another tolerance moves the image's margin
(true logit minus best other logit) across zero. So the spread of an image's margin over
the defense's draws tells, image by image, why the defense holds or fails:

- a pristine image whose draws all stay above zero is always accepted with its class;
- an adversarial whose draws straddle zero gets split votes and is likely rejected;
- an adversarial whose every draw stays below zero survives every vote (accepted with a
  wrong class whenever its wrong votes agree).

The rise of an adversarial is the largest margin over the draws minus its margin at
tol_train (what the attacker computed). An attacker who asks for confidence kappa puts
the margin at -kappa; if the draws move it as they moved the minimal (kappa = 0)
adversarial of the same image, it survives every vote exactly when rise < kappa. So the
share of minimal adversarials with rise < kappa predicts the share of kappa-adversarials
that survive every vote, and its quantiles predict the kappa an attacker needs
(:func:`predicted_survival`, :func:`predicted_kappa`). (The security stage measures
kappa from where each row's adversarials actually sit: their median margin at tol_train,
which the 8-bit grid puts a little below -kappa.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nodeguard.intervals import Rate
from nodeguard.models.evaluation import classification_margin


@dataclass
class MarginSpread:
    """Margins of N images over their V draws.

    Attributes:
        margins: (N, V) float32 margins (logit units), image n at the defense's draw v.
        reference: (N,) float32 margins at tol_train (the attacker's view).
    """

    margins: torch.Tensor
    reference: torch.Tensor

    @classmethod
    def from_logits(cls, logits: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor) -> MarginSpread:
        """From (N, V, classes) vote logits, (N,) true labels and (N,) margins at tol_train."""
        count, votes, classes = logits.shape
        flat = classification_margin(logits.reshape(count * votes, classes), labels.repeat_interleave(votes))
        return cls(flat.view(count, votes).float(), reference.float())

    @property
    def low(self) -> torch.Tensor:
        """(N,) the smallest margin over the draws."""
        return self.margins.amin(1)

    @property
    def high(self) -> torch.Tensor:
        """(N,) the largest margin over the draws."""
        return self.margins.amax(1)

    @property
    def width(self) -> torch.Tensor:
        """(N,) high - low: how far the draws spread the margin."""
        return self.high - self.low

    @property
    def rise(self) -> torch.Tensor:
        """(N,) high - reference: how far above its tol_train margin some draw lifts the image."""
        return self.high - self.reference

    @property
    def share_positive(self) -> torch.Tensor:
        """(N,) share of draws with margin > 0 (classified correctly)."""
        return (self.margins > 0).float().mean(1)

    @property
    def share_negative(self) -> torch.Tensor:
        """(N,) share of draws with margin <= 0 (misclassified, ties included)."""
        return 1.0 - self.share_positive

    @property
    def straddles(self) -> torch.Tensor:
        """(N,) bool: draws on both sides of zero."""
        return (self.share_positive > 0) & (self.share_positive < 1)


def _quantile(values: torch.Tensor, q: float) -> float | None:
    return float(torch.quantile(values.double(), q)) if len(values) else None


@dataclass
class SpreadSummary:
    """The distribution of one image set's spreads (rates in [0, 1], margins in logits).

    Attributes:
        label: the images ("pristine", or the attacker's label).
        count: images.
        median_width, p90_width: median and 90th percentile of high - low.
        median_rise, p90_rise: the same of high - margin at tol_train.
        median_low, median_high: medians of the lowest and highest margin over the draws.
        straddling: images with draws on both sides of zero, of the images (a
            :class:`~nodeguard.intervals.Rate`, as the next two).
        all_positive: images with every draw classified correctly.
        all_negative: images with every draw misclassified.
        mean_share_negative: mean over images of the share of draws misclassified.
    """

    label: str
    count: int
    median_width: float | None
    p90_width: float | None
    median_rise: float | None
    p90_rise: float | None
    median_low: float | None
    median_high: float | None
    straddling: Rate
    all_positive: Rate
    all_negative: Rate
    mean_share_negative: float | None


def summarize(label: str, spread: MarginSpread) -> SpreadSummary:
    """The :class:`SpreadSummary` of ``spread``'s images."""
    count = len(spread.reference)
    return SpreadSummary(
        label=label,
        count=count,
        median_width=_quantile(spread.width, 0.5),
        p90_width=_quantile(spread.width, 0.9),
        median_rise=_quantile(spread.rise, 0.5),
        p90_rise=_quantile(spread.rise, 0.9),
        median_low=_quantile(spread.low, 0.5),
        median_high=_quantile(spread.high, 0.5),
        straddling=Rate.of(int(spread.straddles.sum()), count),
        all_positive=Rate.of(int((spread.share_positive == 1).sum()), count),
        all_negative=Rate.of(int((spread.share_positive == 0).sum()), count),
        mean_share_negative=float(spread.share_negative.mean()) if count else None,
    )


def predicted_survival(rises: torch.Tensor, kappa: float) -> float | None:
    """The predicted share of kappa-adversarials that survive every vote: P(rise < kappa).

    Args:
        rises: (N,) rises of minimal (kappa = 0) adversarials (:attr:`MarginSpread.rise`).
        kappa: the attacker's confidence (logit units, >= 0).

    Returns:
        The share in [0, 1], or None without adversarials.
    """
    return float((rises < kappa).float().mean()) if len(rises) else None


def predicted_kappa(rises: torch.Tensor, share: float) -> float | None:
    """The confidence above which ``share`` of the adversarials survive every vote: the
    ``share`` quantile of the minimal adversarials' rises (None without adversarials)."""
    return _quantile(rises, share)
