"""ROC of tolerance randomization: pristine images positive, adversarials negative.

For each number of votes V the score of an image is v_agree, and an image is accepted
when v_agree > v_min; sweeping v_min from 0 to V traces the ROC curve (TPR: pristine
accepted, FPR: adversarials accepted). The votes are drawn once for the largest V; the
first V of an image's draws are a valid draw of V (see :mod:`nodeguard.defense.randomization`), so
every curve comes from the same pass. Votes are kept in the model's result store per
(images, tolerance range, seed, largest V): :mod:`nodeguard.defense.votes`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nodeguard.defense.randomization import DefenseSettings
from nodeguard.defense.votes import defense_key, stored_votes
from nodeguard.errors import ConfigError, setting_error
from nodeguard.intervals import rate_interval
from nodeguard.models.loading import LoadedModel, load_model
from nodeguard.progress import SILENT, Progress
from nodeguard.stages.attack import make_attack_set
from nodeguard.stages.attack_sets import AttackSettings, intervals_beside_rates
from nodeguard.storage.registry import Registry

ACCEPT_LEVELS = (0.90, 0.95, 1.0)  # shares of pristine images accepted: the operating points reported
DEFENSE_DEFAULTS = DefenseSettings()


@dataclass
class RocSettings:
    """The ROC experiment of the defense (Carrara et al., ICPR 2021 workshops).

    Attributes:
        votes: the numbers of votes V, one curve each (>= 1; sorted, duplicates dropped).
        count: images attacked (the attack set's ``count``).
        tol_low: lower end of the log-uniform tolerance range (> 0).
        tol_high: upper end.
        seed: None for the installation's secret draws, or a public seed.
        batch_size: (image, tolerance) pairs solved together.
        attack: the attack whose successful 8-bit adversarials are the negatives (default
            "cw", Carlini & Wagner 2017; "eot-cw" for EOT, Athalye et al. 2018).
        attack_options: the attack's own options.

    Raises:
        ConfigError: an empty or non-positive ``votes``, a bad range or batch size, an
            unknown attack or option.
    """

    votes: tuple[int, ...] = (5, 10, 15, 20)
    count: int = 200
    tol_low: float = DEFENSE_DEFAULTS.tol_low
    tol_high: float = DEFENSE_DEFAULTS.tol_high
    seed: int | None = DEFENSE_DEFAULTS.seed
    batch_size: int = DEFENSE_DEFAULTS.batch_size
    attack: str = "cw"
    attack_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.votes or min(self.votes) < 1:
            raise setting_error("votes", "takes positive integers, like 5,10,15,20")
        self.votes = tuple(sorted(set(int(v) for v in self.votes)))
        self.defense()  # checks the tolerance range and batch size
        self.attack_settings()  # an unknown attack option fails before anything runs

    def defense(self) -> DefenseSettings:
        """The defense that draws the votes: the largest V, every draw kept.

        Raises:
            ConfigError: a bad range or batch size.
        """
        return DefenseSettings(
            votes=max(self.votes),
            vmin=0,
            tol_low=self.tol_low,
            tol_high=self.tol_high,
            seed=self.seed,
            batch_size=self.batch_size,
        )

    def attack_settings(self) -> AttackSettings:
        """The attack set (at tol_attack = tol_train) whose adversarials are the negatives.

        Raises:
            ConfigError: an unknown attack or option.
        """
        return AttackSettings.with_overrides(attack=self.attack, count=self.count, **self.attack_options)


@dataclass
class RocCurve:
    """The ROC of one V: pristine images positive, adversarials negative, score v_agree.

    Every share comes with its 95% Clopper-Pearson interval ``[low, high]``
    (:func:`nodeguard.intervals.rate_interval`): over the pristine images for what is
    accepted of them, over the adversarials for what is accepted or rejected of them.

    Attributes:
        votes: V.
        auc: area under the ROC curve (scikit-learn), in [0, 1].
        points: one dict per v_min in 0..V: ``vmin``, ``tpr`` (pristine accepted) and
            ``fpr`` (adversarials accepted), in [0, 1]; ``tpr_ci`` and ``fpr_ci``, their
            intervals; ``pristine_accepted`` and ``adversarials_accepted``, the counts they
            are shares of (of the report's ``pristine`` and ``adversarial``).
        rejected_at_90_accept: the largest share of adversarials rejected (1 - fpr) with at
            least 90% of the pristine images accepted (None: unreachable).
        vmin_at_90_accept: the v_min of that point.
        rejected_at_95_accept: the same at 95%.
        vmin_at_95_accept: the v_min of that point.
        rejected_at_90_accept_ci: the interval of ``rejected_at_90_accept`` (None with it).
        rejected_at_95_accept_ci: the interval of ``rejected_at_95_accept``.
        rejected_at_100_accept: the largest share of adversarials rejected with every
            pristine image accepted (v_min = V - 1 when each pristine image gets one class
            at all its tolerances; None: unreachable).
        vmin_at_100_accept: the v_min of that point.
        rejected_at_100_accept_ci: the interval of ``rejected_at_100_accept``.
    """

    votes: int
    auc: float
    points: list[dict[str, Any]]
    rejected_at_90_accept: float | None
    vmin_at_90_accept: int | None
    rejected_at_95_accept: float | None
    vmin_at_95_accept: int | None
    rejected_at_90_accept_ci: list[float] | None = None
    rejected_at_95_accept_ci: list[float] | None = None
    rejected_at_100_accept: float | None = None
    vmin_at_100_accept: int | None = None
    rejected_at_100_accept_ci: list[float] | None = None


def roc_from_scores(pristine: np.ndarray, adversarial: np.ndarray, votes: int) -> RocCurve:
    """ROC and AUC (scikit-learn) of v_agree scores; one point per v_min in 0..V, each share
    with its 95% interval (counted over the pristine images, or over the adversarials)."""
    if len(pristine) == 0 or len(adversarial) == 0:
        raise ConfigError("the ROC needs pristine images and at least one successful adversarial")
    from sklearn.metrics import auc, roc_curve  # here: importing scikit-learn takes half a second

    labels = np.concatenate([np.ones(len(pristine)), np.zeros(len(adversarial))])
    scores = np.concatenate([pristine, adversarial]).astype(float)
    fpr, tpr, _ = roc_curve(labels, scores)
    n_pristine, n_adversarial = len(pristine), len(adversarial)
    points: list[dict[str, Any]] = []
    for vmin in range(votes + 1):
        pristine_accepted = int(np.count_nonzero(pristine > vmin))
        adversarials_accepted = int(np.count_nonzero(adversarial > vmin))
        points.append(
            {
                "vmin": vmin,
                "tpr": float(np.mean(pristine > vmin)),
                "tpr_ci": rate_interval(pristine_accepted, n_pristine),
                "fpr": float(np.mean(adversarial > vmin)),
                "fpr_ci": rate_interval(adversarials_accepted, n_adversarial),
                "pristine_accepted": pristine_accepted,
                "adversarials_accepted": adversarials_accepted,
            }
        )
    found: dict[float, tuple[float | None, int | None, list[float] | None]] = {}
    for level in ACCEPT_LEVELS:
        usable = [p for p in points if p["tpr"] >= level]
        best = max(usable, key=lambda p: (1 - p["fpr"], p["tpr"])) if usable else None
        if best is None:
            found[level] = (None, None, None)
        else:  # rejected: the adversarials not accepted, counted, not 1 - fpr times the count
            rejected = n_adversarial - best["adversarials_accepted"]
            found[level] = (1 - best["fpr"], int(best["vmin"]), rate_interval(rejected, n_adversarial))
    return RocCurve(
        votes=votes,
        auc=float(auc(fpr, tpr)),
        points=points,
        rejected_at_90_accept=found[0.90][0],
        vmin_at_90_accept=found[0.90][1],
        rejected_at_95_accept=found[0.95][0],
        vmin_at_95_accept=found[0.95][1],
        rejected_at_90_accept_ci=found[0.90][2],
        rejected_at_95_accept_ci=found[0.95][2],
        rejected_at_100_accept=found[1.0][0],
        vmin_at_100_accept=found[1.0][1],
        rejected_at_100_accept_ci=found[1.0][2],
    )


@dataclass
class RocReport:
    model: str
    set: str
    pristine: int
    adversarial: int
    tol_range: list[float]
    seed: int | None
    curves: list[RocCurve]
    votes_reused: bool
    adversarials_used: str = ""
    draws: str = ""  # "public seed N" or "secret key ID"
    median_abs_margin_8bit: float | None = None
    p90_abs_margin_8bit: float | None = None
    plot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["curves"] = [intervals_beside_rates(curve) for curve in data["curves"]]
        return data


def run_roc(
    settings: RocSettings,
    model: str | None = None,
    registry: Registry | None = None,
    device: str = "auto",
    progress: Progress = SILENT,
) -> RocReport:
    """ROC curves of the defense for each V on the model's attack set (made if missing).

    Tolerance randomization (Carrara et al., ICPR 2021 workshops): the attack set's clean
    images are the positives, its successful 8-bit adversarials the negatives. Votes are
    drawn once for the largest V and kept in the model's result store.

    Args:
        settings: the V values, the defense's range and seed, and the attack.
        model: a registered ODE model; None means the most recently trained one.
        registry: None means ``Registry()`` at the default cache root.
        device: "auto", "cpu" or "cuda".
        progress: receives log lines and progress.

    Returns:
        A ``RocReport``: one ``RocCurve`` per V, the numbers of pristine and adversarial
        images, the attack set's key, whether the votes were reused.

    Raises:
        ConfigError: the model has no solver (found after the attack set is made), no
            successful adversarial, no image to attack, a bad ``device``, or malformed
            ``RANK``/``WORLD_SIZE``.
        ModelNotFoundError: ``model`` is not registered.
        RegistryError: the attack set or the votes are being computed by another process,
            or the model is unfinished or damaged.
        DataUnavailableError: the data set is not on disk and cannot be downloaded.
    """
    loaded = load_model(model, registry=registry, device=device)
    return roc_of(loaded, settings, progress)


def roc_of(loaded: LoadedModel, settings: RocSettings, progress: Progress = SILENT) -> RocReport:
    """:func:`run_roc` on a loaded model (one from the registry, or one given in memory).

    Raises:
        ConfigError, RegistryError, DataUnavailableError: as :func:`run_roc`.
    """
    if not loaded.model.has_solver:  # before the attack: the defense needs a solver tolerance
        raise ConfigError(f"{loaded.name} has no solver tolerance: tolerance randomization needs an ODE model")
    attack_set, report = make_attack_set(settings.attack_settings(), loaded, progress=progress)
    pristine = attack_set.clean
    adversarial = attack_set.successful_8bit_images()
    defense = settings.defense()
    tallies, found = {}, []
    for name, images in (("pristine", pristine), ("adversarial", adversarial)):
        tallies[name], reused_group = stored_votes(loaded, defense, images, name, progress)
        found.append(reused_group)
    reused = all(found)
    curves = []
    for votes in settings.votes:
        pristine_scores = tallies["pristine"].v_agree(votes).numpy()
        adversarial_scores = tallies["adversarial"].v_agree(votes).numpy()
        curves.append(roc_from_scores(pristine_scores, adversarial_scores, votes))
    result = RocReport(
        model=loaded.name,
        set=report.set,
        pristine=len(pristine),
        adversarial=len(adversarial),
        tol_range=[settings.tol_low, settings.tol_high],
        seed=settings.seed,
        draws=defense.draws_label(defense_key(loaded, defense)),
        curves=curves,
        votes_reused=reused,
        adversarials_used=(
            f"the {len(adversarial)} successful 8-bit adversarials of {report.attack} attack set {report.set} "
            f"(tol_attack {report.tol_attack:g})"
        ),
        median_abs_margin_8bit=report.median_abs_margin_8bit,
        p90_abs_margin_8bit=report.p90_abs_margin_8bit,
    )
    return result
