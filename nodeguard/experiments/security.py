"""The security evaluation's judging: attack sets and the defense's votes in, typed rows out.

Tolerance randomization (Carrara et al., ICPR 2021 workshops) judges each attacker's 8-bit
adversarials (what a PNG holds) with its own draws, at one operating point (V, v_min):
CW (Carlini & Wagner 2017) at each confidence kappa, EOT-CW (Athalye et al. 2018),
AutoAttack-rand (Croce & Hein 2020) and Square (Andriushchenko et al. 2020). Rates are in
[0, 1], each a :class:`~nodeguard.intervals.Rate` with its count, total and 95%
Clopper–Pearson interval;
L2 distances are over pixels in [0, 1]; margins (true logit minus the best other) and
kappas are in logits. The margin spread of each image over the draws, and the kappa it
predicts an attacker needs, follow :mod:`nodeguard.defense.spread`.

Nothing here reads the result store: the stage (:mod:`nodeguard.stages.security`) makes
the attack sets and fetches the votes, and passes them in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nodeguard.defense.randomization import DefenseSettings, Votes
from nodeguard.defense.spread import MarginSpread, SpreadSummary, predicted_kappa, predicted_survival, summarize
from nodeguard.errors import ConfigError
from nodeguard.experiments.attack_sets import ATTACK_BATCH_SIZE, AttackSet, AttackSettings
from nodeguard.experiments.indicators import (
    EOT_ATTACKS,
    GRADIENT_ATTACKS,
    MINIMAL_ATTACKS,
    BudgetCheck,
    Indicator,
    Optimality,
    WorstCase,
    incomplete_optimization,
    optimality,
    randomized_model,
    silent_success,
    smallest_per_image,
    square_beats_white_box,
    unconstrained_failure,
    zero_gradient,
)
from nodeguard.intervals import Rate

SURVIVAL_SHARES = (0.5, 0.9)  # the predicted kappa at which these shares survive every vote


@dataclass(frozen=True)
class Attacker:
    """One attacker of the security evaluation: an attack and its options.

    Attributes:
        label: the attacker in reports, e.g. "cw k=0.1" (the key of its spread).
        attack: the registered attack ("cw", "eot-cw", "apgd-rand", "square").
        count: images it attacks.
        options: the attack's own options (its confidence is ``options["kappa"]``, checked
            by the attack's options class: see :attr:`kappa`).
        start: the label of the attacker whose adversarials its search starts from
            (EOT-CW continues from "cw k=0"); None: the clean images.
        seed: its attack's random seed (the attack set's ``seed``: EOT-CW's tolerance
            draws, AutoAttack-rand's and Square's starts and draws; CW draws nothing).
        batch_size: images its attack solves together (the attack set's ``batch_size``).
    """

    label: str
    attack: str
    count: int
    options: dict[str, Any]
    start: str | None = None
    seed: int = 0
    batch_size: int = ATTACK_BATCH_SIZE

    @property
    def kappa(self) -> float:
        """Its confidence (logits), read from its options; 0 for the attacks that take none."""
        return float(self.options.get("kappa", 0.0))

    @property
    def settings(self) -> AttackSettings:
        """The settings of its attack set.

        Raises:
            ConfigError: an unknown attack or option.
        """
        return AttackSettings(
            attack=self.attack, count=self.count, options=dict(self.options), seed=self.seed, batch_size=self.batch_size
        )


@dataclass(frozen=True)
class AttackerSet:
    """One attacker's attack set, and its key (``AttackReport.set``) for the report."""

    attacker: Attacker
    attack_set: AttackSet
    set_key: str


@dataclass
class SecurityRow:
    """One attacker's row of the security table (rates in [0, 1], L2 over pixels in [0, 1]).

    Attributes:
        attack: the attack ("cw", "eot-cw", "apgd-rand").
        label: the attacker, e.g. "cw k=0.1".
        kappa: its confidence (logit units; 0 for apgd-rand).
        set: its attack set's key.
        attacked: images attacked.
        mean_l2: mean L2 of its successful 8-bit adversarials (None: none).
        median_l2: their median L2.
        success_rate: attacked images fooled undefended (8-bit, alone at tol_train), of
            the attacked images (a :class:`~nodeguard.intervals.Rate`, as the next two).
        rejected: those adversarials the defense rejects (v_agree <= v_min), of the
            successful adversarials.
        defended_success: attacked images whose adversarial the vote misclassifies and
            accepts, of the attacked images.
        median_abs_margin_8bit: median |margin| of the successful 8-bit adversarials (logit units).
        attack_seconds: the time its attack set took to make (s; summed over batches and
            ranks, measured when it was made: a reused set keeps it; None in rows stored
            before 0.10.0).
    """

    attack: str
    label: str
    kappa: float
    set: str
    attacked: int
    mean_l2: float | None
    median_l2: float | None
    success_rate: Rate
    rejected: Rate
    defended_success: Rate
    median_abs_margin_8bit: float | None
    attack_seconds: float | None = None


@dataclass
class RobustAccuracy:
    """One point of the robust-accuracy curve: the images no attacker broke within ``eps``,
    of the attacked images."""

    eps: float  # the L2 budget (pixels in [0, 1])
    robust_accuracy_defended: Rate  # accepted with the right class and not fooled within eps
    robust_accuracy_undefended: Rate  # not misclassified by any adversarial within eps


@dataclass
class RangeRow:
    """One attacker judged by the defense over one tolerance range (rates in [0, 1]).

    Attributes:
        label: the attacker.
        rejected: its successful 8-bit adversarials rejected, of them.
        defended_success: attacked images fooled through the vote, of the attacked images.
        all_negative: its adversarials misclassified at every draw, of them.
    """

    label: str
    rejected: Rate
    defended_success: Rate
    all_negative: Rate


@dataclass
class RangeReport:
    """The same attack sets judged by the defense over one tolerance range, at the same V and v_min."""

    tol_range: list[float]
    pristine_accepted: Rate
    rows: list[RangeRow]
    spreads: list[SpreadSummary]
    predicted_kappa: dict[str, float | None]


@dataclass
class KappaCheck:
    """A CW row's outcome beside what the margin spread of the minimal adversarials predicts.

    Attributes:
        kappa: the CW attacker's confidence.
        predicted_survival: share of minimal adversarials whose rise is below kappa.
        survived_every_vote: this row's adversarials misclassified at every draw, of them.
        defended_success: this row's end-to-end success against the defended model.
    """

    kappa: float
    predicted_survival: float | None
    survived_every_vote: Rate
    defended_success: Rate


FIXED_BUDGET_ATTACKS = ("apgd-rand", "square", "pgd")  # their adversarials lie within an L2 budget eps


@dataclass
class JudgedAttack:
    """One attacker's adversarials judged by the defense, one entry per attacked image."""

    row: SecurityRow
    l2: torch.Tensor  # (count,) L2 of the adversarial judged, 8-bit or float (inf where the attack failed)
    fooled_undefended: torch.Tensor  # (count,) bool
    fooled_defended: torch.Tensor  # (count,) bool: misclassified by the vote and accepted
    budget: float | None = None  # a fixed-budget attacker's eps (None: a minimal-perturbation one)

    def within(self, eps: float) -> torch.Tensor:
        """(count,) bool: the image's adversarial counts within L2 budget ``eps``: its L2 is at
        most eps, or its attacker's own budget is (rounding to the 8-bit grid can move a
        budgeted adversarial a thousandth past its budget; it was found within it)."""
        inside = self.l2 <= eps
        if self.budget is not None and self.budget <= eps:
            inside |= torch.isfinite(self.l2)
        return inside


@dataclass
class JudgedRange:
    """The attack sets judged by one defense (one tolerance range, at V and v_min).

    Attributes:
        defense: the defense that judged: its range, V, v_min and seed.
        pristine_accepted: (N,) bool, each pristine image accepted (v_agree > v_min).
        pristine_ok: (N,) bool, accepted with its true class.
        judged: one ``JudgedAttack`` per attacker, in the attackers' order.
        adversarial_spreads: the margin spread of each attacker's successful 8-bit
            adversarials, in the same order.
        spreads: label -> margin spread: "pristine" first, then each attacker's label.
        minimal_label: the CW row whose rises make the predictions (None: no CW row).
        predicted_kappa: survival share ("0.5", "0.9") -> the kappa (logits) predicted to
            let that share of adversarials survive every vote.
        kappa_checks: each CW row's outcome beside the prediction.
    """

    defense: DefenseSettings
    pristine_accepted: torch.Tensor
    pristine_ok: torch.Tensor
    judged: list[JudgedAttack]
    adversarial_spreads: list[MarginSpread]
    spreads: dict[str, MarginSpread]
    minimal_label: str | None
    predicted_kappa: dict[str, float | None]
    kappa_checks: list[KappaCheck]


def choose_vmin(pristine_v_agree: torch.Tensor, votes: int, accept_level: float) -> int:
    """The largest v_min that still accepts at least ``accept_level`` of the pristine images.

    Tolerance randomization (Carrara et al., ICPR 2021 workshops) accepts an image when
    v_agree > v_min.

    Args:
        pristine_v_agree: (N,) int64 v_agree of each pristine image, in 0..V.
        votes: V.
        accept_level: the share of pristine images to accept, in (0, 1].

    Returns:
        v_min in [0, V - 1].

    Raises:
        ConfigError: no v_min in [0, V - 1] accepts that share.
    """
    count = len(pristine_v_agree)
    usable = [vmin for vmin in range(votes) if int((pristine_v_agree > vmin).sum()) / count >= accept_level]
    if not usable:
        raise ConfigError(f"no v_min accepts {accept_level:.0%} of the pristine images at V = {votes}")
    return max(usable)


def judge(
    attacker: Attacker,
    attack_set: AttackSet,
    set_key: str,
    tally: Votes,
    on_8bit_grid: bool = True,
) -> JudgedAttack:
    """One attacker's row: its adversarials (8-bit, or float) against the undefended and the defended model.

    Tolerance randomization (Carrara et al., ICPR 2021 workshops) at the votes' operating point.

    Args:
        attacker: the attacker (its label, attack and kappa go into the row).
        attack_set: its attack set of N images.
        set_key: the attack set's key, for the row.
        tally: the defense's votes on its M successful adversarials, in row order
            (``attack_set.successful_8bit_images()``; with ``on_8bit_grid`` False,
            ``attack_set.adversarial[attack_set.success]``): (M, V) predictions, at the
            defense's operating point (``tally.vmin``).
        on_8bit_grid: True (what ``security`` reports): the adversarials as saved, on the
            8-bit grid. False: the attack's float adversarials before rounding, to
            measure what the rounding moves (``examples/rounding_security.py``); the
            row's L2 and margins (``median_abs_margin_8bit`` included) are then the floats'.

    Returns:
        A ``JudgedAttack``: the ``SecurityRow`` (rates in [0, 1], L2 over pixels in
        [0, 1], margins in logits) and, per attacked image, (N,) float32 L2 of its
        adversarial (8-bit, or float with ``on_8bit_grid`` False; inf where the attack
        failed), (N,) bool fooled undefended and (N,) bool fooled through the vote
        (misclassified and accepted).

    Raises:
        ValueError: ``tally`` holds another number of images than the successful adversarials.
    """
    success = attack_set.success_8bit if on_8bit_grid else attack_set.success
    if len(tally.predictions) != int(success.sum()):
        raise ValueError(f"{len(tally.predictions)} votes for {int(success.sum())} successful adversarials")
    count = len(attack_set)
    l2 = attack_set.l2_8bit() if on_8bit_grid else attack_set.l2
    accepted = tally.accepted()
    wrong = tally.prediction() != attack_set.labels[success]
    fooled_defended = torch.zeros(count, dtype=torch.bool)
    fooled_defended[success.nonzero().squeeze(1)] = wrong & accepted
    successful_l2 = l2[success]
    margins = (attack_set.margin_8bit if on_8bit_grid else attack_set.margin)[success].abs()
    row = SecurityRow(
        attack=attacker.attack,
        label=attacker.label,
        kappa=attacker.kappa,
        set=set_key,
        attacked=count,
        mean_l2=float(successful_l2.mean()) if len(successful_l2) else None,
        median_l2=float(successful_l2.median()) if len(successful_l2) else None,
        success_rate=Rate.of(int(success.sum()), count),
        rejected=Rate.of(int((~accepted).sum()), len(accepted)),
        defended_success=Rate.of(int(fooled_defended.sum()), count),
        median_abs_margin_8bit=float(margins.median()) if len(margins) else None,
        attack_seconds=attack_set.seconds,
    )
    budget = float(attacker.options["eps"]) if attacker.attack in FIXED_BUDGET_ATTACKS else None
    return JudgedAttack(row, torch.where(success, l2, torch.inf), success.clone(), fooled_defended, budget)


def robust_accuracy_curve(
    judged: list[JudgedAttack], pristine_ok: torch.Tensor, eps_grid: tuple[float, ...]
) -> list[RobustAccuracy]:
    """Robust accuracy, defended and undefended, at each L2 budget, best attacker per image.

    Defended (tolerance randomization, Carrara et al., ICPR 2021 workshops): the pristine
    image is accepted with its true class and no adversarial within eps is accepted with a
    wrong class. Undefended: no adversarial within eps is misclassified.

    Args:
        judged: the attackers' judged adversarials, each over the same N images.
        pristine_ok: (N,) bool, each pristine image accepted with its true class.
        eps_grid: L2 budgets (pixels in [0, 1]), one point each, in this order.

    Returns:
        One ``RobustAccuracy`` per budget: shares of the N images in [0, 1] with their
        95% Clopper–Pearson intervals.
    """
    curve = []
    for eps in eps_grid:
        broken_defended = torch.zeros_like(pristine_ok)
        broken_undefended = torch.zeros_like(pristine_ok)
        for attack in judged:
            within = attack.within(eps)
            broken_defended |= within & attack.fooled_defended
            broken_undefended |= within & attack.fooled_undefended
        robust_defended = int((pristine_ok & ~broken_defended).sum())
        robust_undefended = int((~broken_undefended).sum())
        count = len(pristine_ok)
        curve.append(
            RobustAccuracy(
                eps=eps,
                robust_accuracy_defended=Rate.of(robust_defended, count),
                robust_accuracy_undefended=Rate.of(robust_undefended, count),
            )
        )
    return curve


def vote_logits(votes: Votes, images: str) -> torch.Tensor:
    if votes.logits is None:
        raise ConfigError(f"the votes on the {images} images lack their logits: the margin spread needs them")
    return votes.logits


def adversarial_spread(attack_set: AttackSet, tally: Votes) -> MarginSpread:
    """The margin spread of an attacker's successful 8-bit adversarials over the defense's draws.

    Args:
        attack_set: the attacker's attack set (true labels and 8-bit margins at tol_attack).
        tally: the defense's votes on its M successful 8-bit adversarials, with their
            (M, V, classes) float32 logits.

    Returns:
        The ``MarginSpread`` (:mod:`nodeguard.defense.spread`): margins in logits, per
        adversarial and draw, beside each one's margin at tol_attack.

    Raises:
        ConfigError: the votes have no logits (votes stored before nodeguard 0.8.0).
    """
    success = attack_set.success_8bit
    logits = vote_logits(tally, "adversarial")
    return MarginSpread.from_logits(logits, attack_set.labels[success], attack_set.margin_8bit[success])


def minimal_attacker(judged: list[JudgedAttack]) -> JudgedAttack | None:
    """The CW row (Carlini & Wagner 2017) of the smallest confidence kappa, the minimal
    adversarials; None without a CW row."""
    rows = [item for item in judged if item.row.attack == "cw"]
    return min(rows, key=lambda item: item.row.kappa) if rows else None


def kappa_predictions(
    judged: list[JudgedAttack], spreads: dict[str, MarginSpread]
) -> tuple[str | None, dict[str, float | None], list[KappaCheck]]:
    """The kappa an attacker needs, predicted from the minimal CW adversarials' rises.

    :mod:`nodeguard.defense.spread`: a CW adversarial at confidence kappa (Carlini & Wagner
    2017) survives every vote of tolerance randomization when its rise over the defense's
    draws is below kappa.

    Args:
        judged: the attackers' judged adversarials.
        spreads: label -> margin spread, with an entry for every CW attacker in ``judged``.

    Returns:
        (minimal_label, predicted, checks): the label of the minimal CW row (None: no CW
        row, and then ``{}`` and ``[]``); survival share ("0.5", "0.9") -> the predicted
        kappa in logits (None: unreachable); one ``KappaCheck`` per CW row, in order.

    Raises:
        KeyError: a CW attacker without its spread.
    """
    minimal = minimal_attacker(judged)
    if minimal is None:
        return None, {}, []
    rises = spreads[minimal.row.label].rise
    predicted = {f"{share:g}": predicted_kappa(rises, share) for share in SURVIVAL_SHARES}
    checks = []
    for item in judged:
        if item.row.attack != "cw":
            continue
        spread = spreads[item.row.label]
        survived = int((spread.share_positive == 0).sum())
        # where this row's adversarials sit at tol_train: -(kappa + slack), a little lower on
        # the 8-bit grid; the minimal rows' rises are measured from where they sit
        depth = float(-spread.reference.median()) if len(spread.reference) else item.row.kappa
        offset = float(-spreads[minimal.row.label].reference.median()) if len(rises) else 0.0
        checks.append(
            KappaCheck(
                kappa=item.row.kappa,
                predicted_survival=predicted_survival(rises, depth - offset),
                survived_every_vote=Rate.of(survived, len(spread.reference)),
                defended_success=item.row.defended_success,
            )
        )
    return minimal.row.label, predicted, checks


def spread_lists(spread: MarginSpread) -> dict[str, list[float]]:
    """Per-image ``low``, ``high`` and ``reference`` margins (logits) of a spread, as lists
    for the report and the picture."""
    return {
        "low": [float(v) for v in spread.low],
        "high": [float(v) for v in spread.high],
        "reference": [float(v) for v in spread.reference],
    }


def check_same_images(attacked: Sequence[AttackerSet]) -> None:
    """Raise unless every attack set attacked the first one's images (their clean pixels equal).

    Args:
        attacked: the attackers and their attack sets, in order.

    Raises:
        ConfigError: an attacker attacked other images than the first attacker's.
        ValueError: no attacker.
    """
    if not attacked:
        raise ValueError("no attacker to judge")
    pristine = attacked[0].attack_set.clean
    for item in attacked[1:]:
        if not torch.equal(item.attack_set.clean, pristine):
            label = item.attacker.label
            raise ConfigError(f"the attack set of {label} attacked other images than the first attacker's")


def judge_attackers(
    attacked: Sequence[AttackerSet],
    defense: DefenseSettings,
    pristine_votes: Votes,
    adversarial_votes: Sequence[Votes],
    labels: torch.Tensor,
    pristine_reference: torch.Tensor,
) -> JudgedRange:
    """Every attacker's adversarials judged by one defense: rows, margin spreads, kappa predictions.

    Tolerance randomization (Carrara et al., ICPR 2021 workshops) at (V, v_min) over one
    tolerance range; the margin spread and kappa predictions of :mod:`nodeguard.defense.spread`.
    Every attack set attacked the same N pristine images.

    Args:
        attacked: the attackers and their attack sets, in order.
        defense: the defense's range, V, v_min and seed (``vmin`` is read here; the votes
            were drawn with the rest).
        pristine_votes: the defense's votes on the N pristine images, with logits:
            (N, V) predictions, (N, V, classes) float32 logits.
        adversarial_votes: per attacker, in the same order, its votes on its M successful
            8-bit adversarials, with logits.
        labels: (N,) int64 true classes of the pristine images.
        pristine_reference: (N,) float32 margins (logits) of the pristine images alone at
            tol_train.

    Returns:
        A ``JudgedRange``: the pristine images accepted (with their class), one
        ``JudgedAttack`` and one margin spread per attacker, the spreads by label
        ("pristine" first), and the kappa predictions and checks of the CW rows.

    Raises:
        ConfigError: attack sets of different images, or votes without logits (stored
            before nodeguard 0.8.0).
        ValueError: no attacker, or ``adversarial_votes`` and ``attacked`` differ in length.
    """
    check_same_images(attacked)
    if len(adversarial_votes) != len(attacked):
        raise ValueError(f"{len(attacked)} attackers but {len(adversarial_votes)} sets of adversarial votes")
    pristine_votes = pristine_votes.at(defense.vmin)
    pristine_accepted = pristine_votes.accepted()
    pristine_ok = pristine_accepted & (pristine_votes.prediction() == labels)
    pristine_logits = vote_logits(pristine_votes, "pristine")
    spreads = {"pristine": MarginSpread.from_logits(pristine_logits, labels, pristine_reference)}
    judged, adversarial_spreads = [], []
    for item, votes in zip(attacked, adversarial_votes, strict=True):
        judged.append(judge(item.attacker, item.attack_set, item.set_key, votes.at(defense.vmin)))
        spread = adversarial_spread(item.attack_set, votes)
        adversarial_spreads.append(spread)
        spreads[item.attacker.label] = spread
    minimal_label, predicted, checks = kappa_predictions(judged, spreads)
    return JudgedRange(
        defense=defense,
        pristine_accepted=pristine_accepted,
        pristine_ok=pristine_ok,
        judged=judged,
        adversarial_spreads=adversarial_spreads,
        spreads=spreads,
        minimal_label=minimal_label,
        predicted_kappa=predicted,
        kappa_checks=checks,
    )


def range_report(judged: JudgedRange) -> RangeReport:
    """The summary of one other tolerance range: per attacker, what the defense rejects,
    what fools it, and what survives every vote.

    Args:
        judged: the attack sets judged by the defense over that range
            (:func:`judge_attackers`).

    Returns:
        A ``RangeReport``: the range, the share of pristine images accepted, one
        ``RangeRow`` per attacker (rates in [0, 1] with their intervals), the spreads'
        summaries and the predicted kappas (logits).
    """
    rows = []
    for item, spread in zip(judged.judged, judged.adversarial_spreads, strict=True):
        survived = int((spread.share_positive == 0).sum())
        rows.append(
            RangeRow(
                label=item.row.label,
                rejected=item.row.rejected,
                defended_success=item.row.defended_success,
                all_negative=Rate.of(survived, len(spread.reference)),
            )
        )
    accepted = judged.pristine_accepted
    return RangeReport(
        tol_range=judged.defense.tol_range.as_list(),
        pristine_accepted=Rate.of(int(accepted.sum()), len(accepted)),
        rows=rows,
        spreads=[summarize(label, spread) for label, spread in judged.spreads.items()],
        predicted_kappa=judged.predicted_kappa,
    )


@dataclass
class EvaluationCheck:
    """The security evaluation's checks of itself (:mod:`nodeguard.experiments.indicators`).

    Attributes:
        indicators: every check, fired or not, in a fixed order.
        optimality: per minimal-perturbation attacker (CW, EOT-CW), AttackBench's
            optimality against the worst case over every attacker.
        worst_case: per image, the smallest adversarial of any attacker, and whose.
        verdict: one paragraph: robust or not at each budget, against whom, and whether
            an indicator makes the evaluation unreliable.
        budget_check: the strongest fixed-budget attacker rerun with more steps (None: not run).
    """

    indicators: list[Indicator]
    optimality: list[Optimality]
    worst_case: WorstCase
    verdict: str
    budget_check: BudgetCheck | None = None


def check_evaluation(
    attacked: Sequence[AttackerSet],
    judged: JudgedRange,
    pristine_logits: torch.Tensor,
    gradient_norms: dict[str, torch.Tensor],
    budgets: Sequence[float],
    max_eps: float,
    budget: tuple[BudgetCheck, Indicator] | None = None,
    reduced: str = "",
    unbounded: Sequence[Indicator] = (),
) -> EvaluationCheck:
    """The indicators, optimality, worst case per image and verdict of one judged evaluation.

    Args:
        attacked: the attackers and their attack sets, in order.
        judged: the same judged by the defense (:func:`judge_attackers`).
        pristine_logits: (N, V, classes) float32, the defense's logits on the pristine images.
        gradient_norms: target ("model at tol_train", "randomized model") -> (N,) float32
            input-gradient norms of the margin at the pristine images
            (:func:`~nodeguard.experiments.indicators.margin_gradient_norms`).
        budgets: the L2 budgets the verdict speaks of (AutoAttack-rand's, else the curve's).
        max_eps: the end E of the optimality integral (L2, pixels in [0, 1]).
        budget: the budget check and its ``not-converged`` indicator
            (:func:`~nodeguard.experiments.indicators.budget_check`), or None where none ran.
        reduced: one clause on a fixed-budget attacker run below its original budget
            (e.g. "AutoAttack-rand ran 20 steps with 5 EOT samples, of the original 100 and
            20"), or "".
        unbounded: ``unconstrained-failure`` of each fixed-budget attack rerun with no
            norm bound on the first images.

    Returns:
        The ``EvaluationCheck``.
    """
    rows = judged.judged
    pairs = list(zip(attacked, rows, strict=True))
    indicators = [zero_gradient(norms, target) for target, norms in gradient_norms.items()]
    for item, row in pairs:
        if item.attacker.attack in MINIMAL_ATTACKS:
            indicators.append(unconstrained_failure(item.attacker.label, row.fooled_undefended))
    indicators.extend(unbounded)
    incomplete_at = len(indicators)  # incomplete optimization goes here, once the worst case is known
    for item in attacked:
        indicators.append(silent_success(item.attacker.label, item.attack_set.success, item.attack_set.success_8bit))
    white_box = [row for item, row in pairs if item.attacker.attack in GRADIENT_ATTACKS]
    for item, row in pairs:
        if item.attacker.attack == "square" and item.attacker.options.get("draws", 0) == 0:
            eps = float(item.attacker.options["eps"])
            found = [other.within(eps) & other.fooled_undefended for other in white_box]
            indicators.append(square_beats_white_box(eps, row.within(eps) & row.fooled_undefended, found))
    averaging = [
        item.attacker.label
        for item in attacked
        if item.attacker.attack in EOT_ATTACKS or item.attacker.options.get("draws", 0) > 0
    ]
    indicators.append(randomized_model(pristine_logits, averaging))
    if budget is not None:
        indicators.append(budget[1])

    undefended = {item.attacker.label: row.l2 for item, row in pairs}
    defended = {item.attacker.label: torch.where(row.fooled_defended, row.l2, torch.inf) for item, row in pairs}
    worst_undefended, by_undefended = smallest_per_image(undefended)
    worst_defended, by_defended = smallest_per_image(defended)
    # scored: the minimal-perturbation attackers; a fixed-budget one (AutoAttack-rand,
    # Square) finds no adversarial past its budget, so its area is bounded by it
    minimal = [item.attacker.label for item in attacked if item.attacker.attack in MINIMAL_ATTACKS]
    scores = [
        Optimality(
            label=label,
            undefended=optimality(undefended[label], worst_undefended, max_eps),
            defended=optimality(defended[label], worst_defended, max_eps),
            max_eps=max_eps,
        )
        for label in minimal
    ]
    worst = WorstCase(
        undefended_l2=[float(value) if torch.isfinite(value) else None for value in worst_undefended],
        undefended_by=by_undefended,
        defended_l2=[float(value) if torch.isfinite(value) else None for value in worst_defended],
        defended_by=by_defended,
    )
    # an unfinished L2 moves the curve only where it is the image's smallest adversarial
    incomplete = [
        incomplete_optimization(
            item.attacker.label,
            item.attack_set.still_improving,
            torch.tensor([label == item.attacker.label for label in by_undefended])
            | torch.tensor([label == item.attacker.label for label in by_defended]),
        )
        for item in attacked
        if item.attack_set.still_improving is not None
    ]
    indicators[incomplete_at:incomplete_at] = incomplete
    unchecked = ["transfer failure (no transfer attack ran)"]
    old_sets = [
        item.attacker.label
        for item in attacked
        if item.attacker.attack in MINIMAL_ATTACKS and item.attack_set.still_improving is None
    ]
    if old_sets:
        unchecked.append(f"incomplete optimization of {', '.join(old_sets)} (attack sets saved before 0.12.0)")
    if any(item.attacker.attack not in MINIMAL_ATTACKS for item in attacked):
        unchecked.append("incomplete optimization inside AutoAttack-rand and Square (their iterates are not kept)")
        if budget is None and not unbounded:
            unchecked.append("the budget check and the unbounded reruns of the budgeted attacks (--budget-check 0)")
    text = verdict(rows, judged.pristine_ok, budgets, indicators, budget[0] if budget else None, reduced, unchecked)
    return EvaluationCheck(
        indicators=indicators,
        optimality=scores,
        worst_case=worst,
        verdict=text,
        budget_check=budget[0] if budget else None,
    )


def verdict(
    rows: Sequence[JudgedAttack],
    pristine_ok: torch.Tensor,
    budgets: Sequence[float],
    indicators: Sequence[Indicator],
    budget: BudgetCheck | None = None,
    reduced: str = "",
    unchecked: Sequence[str] = ("transfer failure (no transfer attack ran)",),
) -> str:
    """One paragraph: at each budget, robust (no adversarial within eps is accepted with a
    wrong class) or not and against whom; then whether any indicator makes it unreliable.

    Args:
        rows: the judged attackers, each over the same N images.
        pristine_ok: (N,) bool, each pristine image accepted with its true class.
        budgets: L2 budgets (pixels in [0, 1]).
        indicators: the checks of the evaluation.
        budget: the budget check, where it ran.
        reduced: a clause on a fixed-budget attacker run below its original budget, or "".
        unchecked: what the evaluation did not check, one clause each.
    """
    count = len(pristine_ok)
    sentences = []
    for point in robust_accuracy_curve(list(rows), pristine_ok, tuple(budgets)):
        eps = point.eps
        by_attacker = [
            (int(fooled.sum()), row.row.label)
            for row in rows
            for fooled in [row.within(eps) & row.fooled_defended]
            if fooled.any()
        ]
        kept = point.robust_accuracy_defended
        share = f"{kept.count} of {kept.total} images kept ({kept.format('.0%')})"
        if not by_attacker:
            sentences.append(
                f"At L2 {eps:g}: robust against these attackers (none was accepted with a wrong class); {share}."
            )
        else:
            fooled_most, label = max(by_attacker)
            sentences.append(
                f"At L2 {eps:g}: not robust: {label} is accepted with a wrong class on {fooled_most} of {count} "
                f"images; {share} against the worst case over attackers."
            )
    if budget is not None:
        outcome = "within its interval" if budget.converged else "above its interval: not converged"
        samples = f" (EOT samples unchanged: {budget.eot_iter})" if budget.eot_iter else ""
        sentences.append(
            f"{reduced + '; rerun' if reduced else 'Rerun'} with {budget.steps_more} steps{samples} on the first "
            f"{budget.count} images, {budget.label} fools the undefended model on {budget.fooled_more.count} of them "
            f"against {budget.fooled.count} ({len(budget.images)} gained, {len(budget.lost)} lost): {outcome}."
        )
    elif reduced:
        sentences.append(f"{reduced}, and no budget check reran it with more steps.")
    unreliable = [item for item in indicators if item.unreliable]
    if unreliable:
        named = "; ".join(f"{item.name} on {item.about} ({item.count} of {item.total} images)" for item in unreliable)
        sentences.append(f"The evaluation may be unreliable: {named}.")
    else:
        checked = sorted({item.name for item in indicators})
        sentences.append(f"No indicator makes the evaluation unreliable (checked: {', '.join(checked)}).")
    if unchecked:
        sentences.append(f"Not checked: {'; '.join(unchecked)}.")
    return " ".join(sentences)
