"""The ROC stage: the defense's votes on an attack set, kept in the result store, made into ROC curves.

Pristine images are the positives, adversarials the negatives. For each number of votes V
the score of an image is v_agree, and an image is accepted when v_agree > v_min; sweeping
v_min from 0 to V traces the ROC curve (:mod:`nodeguard.experiments.roc`, the pure part).
The votes are drawn once for the largest V; the first V of an image's draws are a valid
draw of V (see :mod:`nodeguard.defense.randomization`), so every curve comes from the same
pass. Votes are kept in the model's result store per (images, tolerance range, seed,
largest V): :mod:`nodeguard.defense.votes`.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any

from nodeguard.defense.randomization import DefenseSettings, ToleranceRange, as_tolerance_range
from nodeguard.defense.votes import defense_key, stored_votes
from nodeguard.errors import setting_error
from nodeguard.experiments.attack_sets import AttackSettings
from nodeguard.experiments.roc import RocCurve, roc_curves
from nodeguard.models.loading import LoadedModel, load_model
from nodeguard.models.networks import require_solver
from nodeguard.plain import to_plain
from nodeguard.progress import SILENT, Progress
from nodeguard.stages.attack import make_attack_set
from nodeguard.storage.registry import Registry

DEFENSE_DEFAULTS = DefenseSettings()


@dataclass
class RocSettings:
    """The ROC experiment of the defense (Carrara et al., ICPR 2021 workshops).

    Attributes:
        votes: the numbers of votes V, one curve each (>= 1; sorted, duplicates dropped).
        count: images attacked (the attack set's ``count``): the first ``count`` test
            images classified correctly, or every one where the split holds fewer. The
            default, 1000, is the whole test split of mnist5k (978 correctly classified
            digits for its ODE-Net); of MNIST and CIFAR-10 it is about the first tenth,
            which a 2-core CPU attacks in minutes with FMN (half an hour with CW) where
            the whole split would take hours. Fewer images move the rejected share by
            several points (docs/results.md).
        tol_range: the defense's log-uniform range of tolerances.
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
    count: int = 1000
    tol_range: ToleranceRange = DEFENSE_DEFAULTS.tol_range
    seed: int | None = DEFENSE_DEFAULTS.seed
    batch_size: int = DEFENSE_DEFAULTS.batch_size
    attack: str = "cw"
    attack_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tol_range = as_tolerance_range(self.tol_range)
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
            tol_range=self.tol_range,
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
        return typing.cast("dict[str, Any]", to_plain(self))


def run_roc(
    settings: RocSettings,
    model: str | None = None,
    registry: Registry | None = None,
    device: str = "auto",
    progress: Progress = SILENT,
    compute_votes: bool = True,
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
        compute_votes: False: use stored votes only (raise ``VotesNotStored`` otherwise).

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
    return roc_of(loaded, settings, progress, compute_votes)


def roc_of(
    loaded: LoadedModel, settings: RocSettings, progress: Progress = SILENT, compute_votes: bool = True
) -> RocReport:
    """:func:`run_roc` on a loaded model (one from the registry, or one given in memory).

    ``compute_votes`` False: only stored votes are used.

    Raises:
        ConfigError, RegistryError, DataUnavailableError: as :func:`run_roc`.
        VotesNotStored: ``compute_votes`` is False and the votes are not stored.
    """
    require_solver(loaded.model, "tolerance randomization", loaded.name)  # before the attack
    attack_set, report = make_attack_set(settings.attack_settings(), loaded, progress=progress)
    pristine = attack_set.clean
    adversarial = attack_set.successful_8bit_images()
    defense = settings.defense()
    tallies, found = {}, []
    for name, images in (("pristine", pristine), ("adversarial", adversarial)):
        tallies[name], reused_group = stored_votes(loaded, defense, images, name, progress, compute=compute_votes)
        found.append(reused_group)
    reused = all(found)
    curves = roc_curves(tallies["pristine"], tallies["adversarial"], settings.votes)
    result = RocReport(
        model=loaded.name,
        set=report.set,
        pristine=len(pristine),
        adversarial=len(adversarial),
        tol_range=settings.tol_range.as_list(),
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
