"""ROC of tolerance randomization (Carrara et al., ICPR 2021 workshops) from the defense's votes.

Pristine images are the positives, adversarials the negatives; the score of an image is
v_agree, the votes of its most voted class, and an image is accepted when v_agree > v_min.
Sweeping v_min from 0 to V traces the curve (TPR: pristine accepted, FPR: adversarials
accepted). The first V of an image's draws are a valid draw of V
(:mod:`nodeguard.defense.randomization`), so votes drawn once for the largest V give every
curve.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import numpy as np

from nodeguard.defense.randomization import Votes
from nodeguard.errors import ConfigError
from nodeguard.intervals import Rate

ACCEPT_LEVELS = (0.90, 0.95, 1.0)  # shares of pristine images accepted: the operating points reported


@dataclass
class RocPoint:
    """One operating point of the defense: accept when v_agree > ``vmin``.

    Attributes:
        vmin: the threshold, in 0..V.
        tpr: pristine images accepted, of the pristine images (a :class:`Rate`).
        fpr: adversarials accepted, of the adversarials.
    """

    vmin: int
    tpr: Rate
    fpr: Rate


@dataclass
class RocCurve:
    """The ROC of one V: pristine images positive, adversarials negative, score v_agree.

    Every share is a :class:`~nodeguard.intervals.Rate` (count, total and 95%
    Clopper-Pearson interval): over the pristine images for what is accepted of them, over
    the adversarials for what is accepted or rejected of them.

    Attributes:
        votes: V.
        auc: area under the ROC curve (scikit-learn), in [0, 1].
        points: one :class:`RocPoint` per v_min in 0..V.
        rejected_at_90_accept: the largest share of adversarials rejected (1 - fpr) with at
            least 90% of the pristine images accepted (None: unreachable).
        vmin_at_90_accept: the v_min of that point.
        rejected_at_95_accept: the same at 95%.
        vmin_at_95_accept: the v_min of that point.
        rejected_at_100_accept: the largest share of adversarials rejected with every
            pristine image accepted (v_min = V - 1 when each pristine image gets one class
            at all its tolerances; None: unreachable).
        vmin_at_100_accept: the v_min of that point.
    """

    votes: int
    auc: float
    points: list[RocPoint]
    rejected_at_90_accept: Rate | None
    vmin_at_90_accept: int | None
    rejected_at_95_accept: Rate | None
    vmin_at_95_accept: int | None
    rejected_at_100_accept: Rate | None = None
    vmin_at_100_accept: int | None = None

    def rejected_at(self, vmin: int) -> Rate:
        """The adversarials rejected at operating point ``vmin`` (the complement of ``fpr``).

        Raises:
            ValueError: ``vmin`` is not in 0..V.
        """
        point = next((item for item in self.points if item.vmin == vmin), None)
        if point is None:
            raise ValueError(f"v_min {vmin} is not an operating point of V = {self.votes}")
        return point.fpr.complement()

    def rejected_at_accept(self, level: int) -> Rate | None:
        """``rejected_at_{level}_accept`` for a level of 90, 95 or 100 (percent of the
        pristine images accepted).

        Raises:
            ValueError: another level.
        """
        if level not in (90, 95, 100):
            raise ValueError(f"the operating points are at 90, 95 and 100% accepted, not {level}")
        return typing.cast("Rate | None", getattr(self, f"rejected_at_{level}_accept"))


def roc_from_scores(pristine: np.ndarray, adversarial: np.ndarray, votes: int) -> RocCurve:
    """The ROC of one V from v_agree scores (Carrara et al., ICPR 2021 workshops).

    Args:
        pristine: (P,) integer v_agree of each pristine image, in 0..V (the positives).
        adversarial: (A,) integer v_agree of each adversarial, in 0..V (the negatives).
        votes: V, the votes the scores are counted over.

    Returns:
        A ``RocCurve``: the AUC (scikit-learn), one point per v_min in 0..V (rates with
        their 95% Clopper-Pearson intervals, counted over the pristine images or over the
        adversarials), and the operating points of ``ACCEPT_LEVELS``.

    Raises:
        ConfigError: no pristine image or no adversarial.
    """
    if len(pristine) == 0 or len(adversarial) == 0:
        raise ConfigError("the ROC needs pristine images and at least one successful adversarial")
    from sklearn.metrics import auc, roc_curve  # here: importing scikit-learn takes half a second

    labels = np.concatenate([np.ones(len(pristine)), np.zeros(len(adversarial))])
    scores = np.concatenate([pristine, adversarial]).astype(float)
    fpr, tpr, _ = roc_curve(labels, scores)
    n_pristine, n_adversarial = len(pristine), len(adversarial)
    points = [
        RocPoint(
            vmin=vmin,
            tpr=Rate.of(int(np.count_nonzero(pristine > vmin)), n_pristine),
            fpr=Rate.of(int(np.count_nonzero(adversarial > vmin)), n_adversarial),
        )
        for vmin in range(votes + 1)
    ]
    found: dict[float, tuple[Rate | None, int | None]] = {}
    for level in ACCEPT_LEVELS:
        usable = [p for p in points if typing.cast(float, p.tpr.value) >= level]
        best = max(usable, key=lambda p: (-p.fpr.count, p.tpr.count)) if usable else None
        found[level] = (None, None) if best is None else (best.fpr.complement(), best.vmin)
    return RocCurve(
        votes=votes,
        auc=float(auc(fpr, tpr)),
        points=points,
        rejected_at_90_accept=found[0.90][0],
        vmin_at_90_accept=found[0.90][1],
        rejected_at_95_accept=found[0.95][0],
        vmin_at_95_accept=found[0.95][1],
        rejected_at_100_accept=found[1.0][0],
        vmin_at_100_accept=found[1.0][1],
    )


def roc_curves(pristine: Votes, adversarial: Votes, votes: tuple[int, ...]) -> list[RocCurve]:
    """The ROC of each V from one draw of the defense's votes (Carrara et al., ICPR 2021 workshops).

    Args:
        pristine: the votes on the pristine images (the positives): (P, V_max) predictions.
        adversarial: the votes on the adversarials (the negatives): (A, V_max) predictions,
            drawn with the same tolerance range and seed.
        votes: the numbers of votes V, one curve each, in this order; each at most V_max
            (a curve of V uses the first V draws of every image).

    Returns:
        One ``RocCurve`` per V, in the order of ``votes``.

    Raises:
        ConfigError: no pristine image or no adversarial, or a V outside 1..V_max.
    """
    curves = []
    for count in votes:
        pristine_scores = pristine.v_agree(count).numpy()
        adversarial_scores = adversarial.v_agree(count).numpy()
        curves.append(roc_from_scores(pristine_scores, adversarial_scores, count))
    return curves
