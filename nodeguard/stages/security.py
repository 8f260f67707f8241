"""The security evaluation: tolerance randomization against attackers of growing knowledge.

Attackers: CW at each confidence kappa (zero knowledge of the defense, refined to margin
-kappa at tol_train), EOT-CW and AutoAttack-rand (APGD-CE/DLR with EOT) at each L2 budget;
the last two know the defense's tolerance range, not its seed. Each
attacker's 8-bit adversarials (what a PNG holds) are judged by the defense with its own
draws, at one operating point (V, v_min); v_min defaults to the largest that accepts at
least ``accept_level`` of the pristine images. One row per attacker:

- mean and median L2 of its successful 8-bit adversarials;
- success against the undefended model (misclassified, each image alone at tol_train);
- the share of those adversarials the defense rejects (v_agree <= v_min);
- end-to-end success against the defended model: the share of attacked images whose
  adversarial is misclassified by the vote and accepted. It only counts images whose
  attack succeeded on the undefended model, so it never exceeds the undefended success.

Robust accuracy at budget eps, over the attacked images (the first ``count`` test images
the model classifies correctly alone at tol_train), with the best attacker per image
within eps (an adversarial counts when its L2 is at most eps):
- defended: the pristine image is accepted with its true class, and no adversarial within
  eps is accepted with a wrong class (a rejected adversarial is a detected attack; a
  rejected pristine image is a loss of service, so it counts against the defense);
- undefended (at tol_train): no adversarial within eps is misclassified.
Both can only fall as eps grows: a larger budget admits more adversarials.

Attack sets and votes come from the result store (made when missing); the report itself
is stored under all of its settings, so the same request again computes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nodeguard.attacks import ATTACKS, APGDRandOptions
from nodeguard.checks import require_non_negative, require_positive, require_range
from nodeguard.constants import SECURITY_KIND
from nodeguard.defense.randomization import DefenseSettings, Votes
from nodeguard.defense.votes import defense_key, stored_votes
from nodeguard.errors import ConfigError
from nodeguard.models.loading import LoadedModel, load_model
from nodeguard.progress import SILENT, Progress
from nodeguard.runtime.distributed import current_ranks
from nodeguard.stages.attack import make_attack_set
from nodeguard.stages.attack_sets import AttackSet, AttackSettings
from nodeguard.storage.registry import Registry

DEFENSE_DEFAULTS = DefenseSettings()
DEFAULT_KAPPAS = (0.0, 0.05, 0.1, 0.2, 0.5)
DEFAULT_AUTOATTACK_EPS = (1.0, 1.5, 2.0)
APGD_DEFAULTS = APGDRandOptions()
DEFAULT_EPS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)


@dataclass
class SecuritySettings:
    """The security evaluation's attackers, defense and budgets (see the module docstring).

    Attributes:
        count: images attacked by every attacker (the first test images classified
            correctly alone at tol_train).
        kappas: one CW attacker (Carlini & Wagner 2017) per confidence kappa (logit units, >= 0).
        eot: add the EOT-CW attacker (Athalye et al. 2018), who knows the tolerance range.
        eot_draws: its tolerance draws per image and step.
        eot_kappa: its confidence.
        autoattack_eps: one AutoAttack-rand attacker (APGD-CE/DLR with EOT, Croce & Hein
            2020) per L2 budget (pixels in [0, 1]).
        autoattack_steps: its APGD iterations.
        autoattack_eot_iter: its EOT forward passes per gradient.
        votes: the defense's V.
        vmin: the defense's v_min; None picks the largest that accepts at least
            ``accept_level`` of the pristine images.
        accept_level: share of pristine images v_min must accept, in (0, 1].
        tol_low: lower end of the defense's log-uniform range (> 0).
        tol_high: upper end.
        seed: the defense's seed (no attacker reads it).
        batch_size: (image, tolerance) pairs solved together.
        eps: L2 budgets (>= 0) of the robust-accuracy curve.
        attack_options: options for cw and eot-cw (``steps``, ``binary_steps``).

    Raises:
        ConfigError: no attacker, a value out of range (count, kappas, eps, accept level,
            votes, v_min, range, batch size), or an option an attack refuses.
    """

    count: int = 100
    kappas: tuple[float, ...] = DEFAULT_KAPPAS
    eot: bool = True
    eot_draws: int = 4
    eot_kappa: float = 0.0
    autoattack_eps: tuple[float, ...] = DEFAULT_AUTOATTACK_EPS
    autoattack_steps: int = APGD_DEFAULTS.steps
    autoattack_eot_iter: int = APGD_DEFAULTS.eot_iter
    votes: int = DEFENSE_DEFAULTS.votes
    vmin: int | None = None
    accept_level: float = 0.90
    tol_low: float = DEFENSE_DEFAULTS.tol_low
    tol_high: float = DEFENSE_DEFAULTS.tol_high
    seed: int | None = DEFENSE_DEFAULTS.seed  # None: secret draws; no attacker reads either
    batch_size: int = DEFENSE_DEFAULTS.batch_size
    eps: tuple[float, ...] = DEFAULT_EPS
    attack_options: dict[str, Any] = field(default_factory=dict)  # steps, binary_steps of cw and eot-cw

    def __post_init__(self) -> None:
        self.kappas = tuple(require_non_negative("kappas", kappa) for kappa in self.kappas)
        self.autoattack_eps = tuple(require_positive("autoattack_eps", eps) for eps in self.autoattack_eps)
        self.eps = tuple(sorted(require_non_negative("eps", eps) for eps in self.eps))
        if self.count < 1:
            raise ConfigError(f"`count` must be at least 1, got {self.count}")
        if not self.kappas and not self.eot and not self.autoattack_eps:
            raise ConfigError("no attacker: give `kappas` or `autoattack_eps`, or keep `eot`")
        if not self.eps:
            raise ConfigError("`eps` takes non-negative L2 budgets, like 0.5,1,2")
        self.accept_level = require_range("accept_level", self.accept_level, 0.0, 1.0, low_open=True)
        self.attack_options = {k: v for k, v in self.attack_options.items() if v is not None}
        self.defense(self.vmin or 0)  # checks votes, v_min and the range
        for attack in self.attackers():
            attack.settings  # noqa: B018  (unknown or bad options fail before anything runs)

    def defense(self, vmin: int) -> DefenseSettings:
        """The defense at operating point (``votes``, ``vmin``).

        Raises:
            ConfigError: ``vmin`` not in [0, votes - 1], or a bad range or batch size.
        """
        return DefenseSettings(
            votes=self.votes,
            vmin=vmin,
            tol_low=self.tol_low,
            tol_high=self.tol_high,
            seed=self.seed,
            batch_size=self.batch_size,
        )

    def attackers(self) -> list[Attacker]:
        """The attackers in order: CW per kappa, EOT-CW (if ``eot``), AutoAttack-rand per eps."""
        chosen = [
            Attacker(f"cw k={kappa:g}", "cw", kappa, self.count, {**self.attack_options, "kappa": kappa})
            for kappa in self.kappas
        ]
        if self.eot:
            options = {
                **self.attack_options,
                "kappa": self.eot_kappa,
                "draws": self.eot_draws,
                "tol_low": self.tol_low,
                "tol_high": self.tol_high,
            }
            chosen.append(Attacker(f"eot-cw d={self.eot_draws}", "eot-cw", self.eot_kappa, self.count, options))
        for eps in self.autoattack_eps:
            options = {
                "eps": eps,
                "steps": self.autoattack_steps,
                "eot_iter": self.autoattack_eot_iter,
                "tol_low": self.tol_low,
                "tol_high": self.tol_high,
            }
            chosen.append(Attacker(f"apgd-rand e={eps:g}", "apgd-rand", 0.0, self.count, options))
        return chosen

    def identity(self) -> dict[str, Any]:
        """What the stored report is keyed by: the settings and each attack's algorithm version."""
        versions = {attacker.attack: ATTACKS.get(attacker.attack).version for attacker in self.attackers()}
        return {**asdict(self), "attack_versions": versions}


@dataclass(frozen=True)
class Attacker:
    label: str
    attack: str
    kappa: float
    count: int
    options: dict[str, Any]

    @property
    def settings(self) -> AttackSettings:
        return AttackSettings(attack=self.attack, count=self.count, options=dict(self.options))


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
        success_rate: share of attacked images fooled undefended (8-bit, alone at tol_train).
        rejected: share of those adversarials the defense rejects (v_agree <= v_min).
        defended_success: share of attacked images whose adversarial the vote misclassifies
            and accepts.
        median_abs_margin_8bit: median |margin| of the successful 8-bit adversarials (logit units).
    """

    attack: str
    label: str
    kappa: float
    set: str
    attacked: int
    mean_l2: float | None
    median_l2: float | None
    success_rate: float
    rejected: float | None
    defended_success: float
    median_abs_margin_8bit: float | None


@dataclass
class RobustAccuracy:
    """One point of the robust-accuracy curve: the share of images no attacker broke within ``eps``."""

    eps: float  # the L2 budget (pixels in [0, 1])
    robust_accuracy_defended: float  # accepted with the right class and not fooled within eps
    robust_accuracy_undefended: float  # not misclassified by any adversarial within eps


@dataclass
class SecurityReport:
    model: str
    count: int
    votes: int
    vmin: int
    vmin_chosen: bool
    pristine_accepted: float
    pristine_accepted_correct: float
    tol_range: list[float]
    seed: int | None
    points: list[SecurityRow]
    curve: list[RobustAccuracy]
    draws: str = ""  # "public seed N" or "secret key ID"
    reused: bool = False
    plot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SecurityReport:
        """The report from its :meth:`to_dict` (as saved in the result store)."""
        rows = [SecurityRow(**row) for row in values["points"]]
        curve = [RobustAccuracy(**point) for point in values["curve"]]
        return cls(**{**values, "points": rows, "curve": curve})


def choose_vmin(pristine_v_agree: torch.Tensor, votes: int, accept_level: float) -> int:
    """The largest v_min that still accepts at least ``accept_level`` of the pristine images."""
    count = len(pristine_v_agree)
    usable = [vmin for vmin in range(votes) if int((pristine_v_agree > vmin).sum()) / count >= accept_level]
    if not usable:
        raise ConfigError(f"no v_min accepts {accept_level:.0%} of the pristine images at V = {votes}")
    return max(usable)


@dataclass
class JudgedAttack:
    """One attacker's adversarials judged by the defense, one entry per attacked image."""

    row: SecurityRow
    l2: torch.Tensor  # (count,) L2 of the 8-bit adversarial (inf where the attack failed)
    fooled_undefended: torch.Tensor  # (count,) bool
    fooled_defended: torch.Tensor  # (count,) bool: misclassified by the vote and accepted


def judge(
    attacker: Attacker,
    attack_set: AttackSet,
    set_key: str,
    tally: Votes,
    defense: DefenseSettings,
) -> JudgedAttack:
    """Rows of one attacker: ``tally`` holds the defense's votes on its successful 8-bit adversarials."""
    success = attack_set.success_8bit
    count = len(attack_set)
    l2_8bit = attack_set.l2_8bit()
    accepted = tally.accepted(defense.vmin)
    wrong = tally.prediction() != attack_set.labels[success]
    fooled_defended = torch.zeros(count, dtype=torch.bool)
    fooled_defended[success.nonzero().squeeze(1)] = wrong & accepted
    successful_l2 = l2_8bit[success]
    margins = attack_set.margin_8bit[success].abs()
    row = SecurityRow(
        attack=attacker.attack,
        label=attacker.label,
        kappa=attacker.kappa,
        set=set_key,
        attacked=count,
        mean_l2=float(successful_l2.mean()) if len(successful_l2) else None,
        median_l2=float(successful_l2.median()) if len(successful_l2) else None,
        success_rate=float(success.float().mean()),
        rejected=float((~accepted).float().mean()) if len(accepted) else None,
        defended_success=float(fooled_defended.float().mean()),
        median_abs_margin_8bit=float(margins.median()) if len(margins) else None,
    )
    return JudgedAttack(row, torch.where(success, l2_8bit, torch.inf), success.clone(), fooled_defended)


def robust_accuracy_curve(
    judged: list[JudgedAttack], pristine_ok: torch.Tensor, eps_grid: tuple[float, ...]
) -> list[RobustAccuracy]:
    """Robust accuracy (defended and undefended) at each budget, best attacker per image."""
    curve = []
    for eps in eps_grid:
        broken_defended = torch.zeros_like(pristine_ok)
        broken_undefended = torch.zeros_like(pristine_ok)
        for attack in judged:
            within = attack.l2 <= eps
            broken_defended |= within & attack.fooled_defended
            broken_undefended |= within & attack.fooled_undefended
        curve.append(
            RobustAccuracy(
                eps=eps,
                robust_accuracy_defended=float((pristine_ok & ~broken_defended).float().mean()),
                robust_accuracy_undefended=float((~broken_undefended).float().mean()),
            )
        )
    return curve


def compute_security(settings: SecuritySettings, loaded: LoadedModel, progress: Progress) -> SecurityReport:
    attackers = settings.attackers()
    made = []
    for attacker in attackers:
        progress.log(f"attacker: {attacker.label}")
        attack_set, report = make_attack_set(attacker.settings, loaded, progress=progress)
        made.append((attacker, attack_set, report.set))
    pristine = made[0][1].clean
    labels = made[0][1].labels
    for attacker, attack_set, _key in made[1:]:
        if not torch.equal(attack_set.clean, pristine):
            raise ConfigError(f"the attack set of {attacker.label} attacked other images than the first attacker's")
    pristine_tally, _ = stored_votes(loaded, settings.defense(0), pristine, "pristine", progress)
    vmin = (
        settings.vmin
        if settings.vmin is not None
        else choose_vmin(pristine_tally.v_agree(), settings.votes, settings.accept_level)
    )
    defense = settings.defense(vmin)
    pristine_accepted = pristine_tally.accepted(vmin)
    pristine_ok = pristine_accepted & (pristine_tally.prediction() == labels)
    judged = []
    for attacker, attack_set, key in made:
        adversarial = attack_set.successful_8bit_images()
        votes, _ = stored_votes(loaded, defense, adversarial, f"{attacker.attack}-adversarial", progress)
        judged.append(judge(attacker, attack_set, key, votes, defense))
    return SecurityReport(
        model=loaded.name,
        count=len(pristine),
        votes=settings.votes,
        vmin=vmin,
        vmin_chosen=settings.vmin is None,
        pristine_accepted=float(pristine_accepted.float().mean()),
        pristine_accepted_correct=float(pristine_ok.float().mean()),
        tol_range=[settings.tol_low, settings.tol_high],
        seed=settings.seed,
        draws=defense.draws_label(defense_key(loaded, defense)),
        points=[item.row for item in judged],
        curve=robust_accuracy_curve(judged, pristine_ok, settings.eps),
    )


def run_security(
    settings: SecuritySettings,
    model: str | None = None,
    registry: Registry | None = None,
    device: str = "auto",
    plot: str | Path | None = None,
    progress: Progress = SILENT,
) -> SecurityReport:
    """The security table and robust-accuracy curve of the model (attack sets made if missing).

    Tolerance randomization (Carrara et al., ICPR 2021 workshops) against CW (Carlini &
    Wagner 2017), EOT-CW (Athalye et al. 2018) and AutoAttack-rand (Croce & Hein 2020);
    the report is kept in the model's result store under all of its settings.

    Args:
        settings: the attackers, the defense and the budgets.
        model: a registered ODE model; None means the most recently trained one.
        registry: None means ``Registry()`` at the default cache root.
        device: "auto", "cpu" or "cuda".
        plot: if given, save the robust-accuracy plot there (rank 0).
        progress: receives log lines and progress.

    Returns:
        A ``SecurityReport``: the operating point (V, v_min, whether v_min was chosen),
        the share of pristine images accepted (and accepted correctly), one
        ``SecurityRow`` per attacker and the robust accuracy, defended and undefended, at
        each L2 budget.

    Raises:
        ConfigError: the model has no solver, no v_min accepts ``accept_level`` of the
            pristine images, attackers attacked different images, no image to attack, a
            bad ``device``, or malformed ``RANK``/``WORLD_SIZE``.
        ModelNotFoundError: ``model`` is not registered.
        RegistryError: the report, an attack set or votes are being computed by another
            process, or the model is unfinished or damaged.
        DataUnavailableError: the data set is not on disk and cannot be downloaded.
    """
    loaded = load_model(model, registry=registry, device=device)
    if not loaded.model.has_solver:  # before the store makes a folder for a report that cannot exist
        raise ConfigError(f"{loaded.name} has no solver tolerance: tolerance randomization needs an ODE model")
    defense = settings.defense(settings.vmin or 0)
    identity = {**settings.identity(), "seed": defense.draws_identity(defense_key(loaded, defense))}
    stored = loaded.results().result(SECURITY_KIND, identity, f"security-n{settings.count}")

    def compute() -> dict[str, Any]:
        report = compute_security(settings, loaded, progress)
        return {key: value for key, value in report.to_dict().items() if key not in ("reused", "plot")}

    values, reused = stored.json_or_compute(compute)
    if reused:
        progress.log("security report found in the cache; nothing to compute")
    report = SecurityReport.from_dict({**values, "reused": reused, "plot": None})
    if plot is not None and current_ranks().is_main:
        from nodeguard.reporting.plots import plot_security

        plot_security(report, Path(plot))
        report.plot = str(plot)
    return report
