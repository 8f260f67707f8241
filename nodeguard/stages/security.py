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

Every rate is a :class:`~nodeguard.intervals.Rate`: its count, the images it is a share
of, and its 95% Clopper–Pearson interval.

The gradient-free check: Square (Andriushchenko et al. 2020, :mod:`nodeguard.attacks.square`)
at each AutoAttack-rand budget, on the model at tol_train and on the randomized model
(scores averaged over ``square_draws`` of the attacker's own tolerance draws). If it fools
digits the gradient attackers at the same budget do not, gradients are masked there.

The margin-spread diagnostic (:mod:`nodeguard.defense.spread`): for the pristine images
and every attacker's adversarials, the spread of each image's margin over the defense's
own draws, its summary, and the prediction it makes of the confidence kappa an
adversarial needs to survive every vote, set beside the CW rows' outcomes. With
``tol_ranges`` the same attack sets are judged by defenses of other ranges too.

Continuation (``warm_start``): EOT-CW starts its search from the kappa = 0 CW
adversarials, which already sit on the decision boundary, and searches c
``warm_binary_steps`` times (2) where a cold search from the clean image takes
``binary_steps`` (5). The CW rows past kappa 0 stay cold: continued the same way they
found smaller L2 but fooled the defended model less often. Both measured side by side in
``docs/security.md``.

Attack sets and votes come from the result store (made when missing) and are judged by
the pure functions of :mod:`nodeguard.experiments.security`; the report itself is stored
under all of its settings, so the same request again computes nothing.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from nodeguard.attacks import ATTACKS, APGDRandOptions, PinnedTolerance
from nodeguard.attacks.eot_cw import ToleranceDraws, attacker_generator
from nodeguard.checks import MAX_SEED, require_non_negative, require_positive, require_range, require_seed
from nodeguard.constants import SECURITY_KIND
from nodeguard.defense.randomization import DefenseSettings, ToleranceRange, Votes, as_tolerance_range
from nodeguard.defense.spread import SpreadSummary, summarize
from nodeguard.defense.votes import defense_key, stored_votes
from nodeguard.errors import ConfigError, setting_error
from nodeguard.experiments.attack_sets import ATTACK_BATCH_SIZE, AttackSet
from nodeguard.experiments.indicators import (
    BUDGET_FACTOR,
    BudgetCheck,
    Indicator,
    Optimality,
    WorstCase,
    batched_gradient_norms,
    budget_check,
    unconstrained_failure,
)
from nodeguard.experiments.security import (
    Attacker,
    AttackerSet,
    KappaCheck,
    RangeReport,
    RobustAccuracy,
    SecurityRow,
    check_evaluation,
    check_same_images,
    choose_vmin,
    judge_attackers,
    range_report,
    robust_accuracy_curve,
    spread_lists,
    vote_logits,
)
from nodeguard.intervals import Rate
from nodeguard.models.evaluation import classify_alone
from nodeguard.models.loading import LoadedModel, load_model
from nodeguard.models.networks import require_solver
from nodeguard.pipeline.remember import remember_json
from nodeguard.plain import from_plain, to_plain
from nodeguard.progress import SILENT, Progress
from nodeguard.stages.attack import make_attack_set
from nodeguard.stages.certify import CertifyReport, CertifySettings
from nodeguard.storage.registry import Registry

DEFENSE_DEFAULTS = DefenseSettings()
DEFAULT_KAPPAS = (0.0, 0.05, 0.1, 0.2, 0.5)
DEFAULT_AUTOATTACK_EPS = (1.0, 1.5, 2.0)
APGD_DEFAULTS = APGDRandOptions()  # the original AutoAttack-rand budget: 100 steps, 20 EOT samples
DEFAULT_SQUARE_DRAWS = 2
DEFAULT_EPS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
SECURITY_REPORT_VERSION = 6  # 2: intervals, Square, spread, ranges; 3: checks; 4: budget check; 5: no bound;
# 6: rates as values (count, total, interval)
GRADIENT_BATCH = 100  # images per graph of the gradient check
# an attack set's seed per --attack-seed: batch b of a set of seed s draws with seed s + b,
# so the attack seeds are this far apart to keep every batch's draws their own
ATTACK_SEED_STRIDE = 1_000_000
# the attack options that the evaluation sets from its own settings, by those settings' names
OPTION_NAMES = {"cw": {"kappa": "kappas"}, "eot-cw": {"kappa": "eot_kappa", "draws": "eot_draws"}}
WARM_BINARY_STEPS = 2  # searches over c of a row continued from the kappa = 0 adversarials
BUDGET_CHECK_COUNT = 20  # images the budget check reruns AutoAttack-rand on, with 5x its steps
UNBOUNDED_EPS = 1000.0  # an L2 "budget" past the [0, 1] cube's diagonal for images up to 3 x 577 x 577


def other_range(value: ToleranceRange | tuple[float, float] | list[float]) -> ToleranceRange:
    """One of ``tol_ranges``: a ``ToleranceRange`` as it is, or a (low, high) pair checked once here.

    Raises:
        ConfigError: a pair that is not a range of tolerances (about ``tol_ranges``).
    """
    try:
        return as_tolerance_range(value)
    except ConfigError as error:  # only a pair fails here (a range was checked when made)
        low, high = value if not isinstance(value, ToleranceRange) else (value.low, value.high)
        reason = error.render(lambda _setting: "the range")
        raise setting_error("tol_ranges", f"{low:g}:{high:g} is not a range of tolerances ({reason})") from None


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
        tol_range: the defense's log-uniform range of tolerances.
        seed: the defense's seed (no attacker reads it).
        attack_seed: the seed of the attackers that draw (EOT-CW, AutoAttack-rand, Square
            and the checks' reruns of them; CW draws nothing and keeps seed 0): another
            value makes their attack sets again, to measure how far the rows move with
            the attacks' own randomness (docs/security.md, what a rerun moves; >= 0). Their
            attack sets take seed ``attack_seed * ATTACK_SEED_STRIDE``: a batch adds its
            number to its set's seed, so seeds one apart would share batches' draws.
            The zero-gradient check draws with seed 0 whatever this is.
        batch_size: (image, tolerance) pairs solved together.
        attack_batch_size: images each attacker solves together (>= 1; 100, the attacks'
            default, keeps the attack sets of ``nodeguard attack``; a larger batch keeps
            more images in each step as early-stopping ones leave, for less overhead per
            image on large counts; another value makes the attack sets again).
        eps: L2 budgets (>= 0) of the robust-accuracy curve.
        attack_options: options for cw and eot-cw (``steps``, ``binary_steps``).
        warm_start: EOT-CW starts from the kappa = 0 CW adversarials (needs 0 among
            ``kappas``; otherwise it starts cold, from the clean images).
        warm_binary_steps: its searches over c then (>= 1).
        square: add Square (gradient-free, Andriushchenko et al. 2020) at each
            AutoAttack-rand budget.
        square_queries: its queries per image.
        square_draws: tolerance draws its randomized version averages per query (0: only
            the attack on the model at tol_train).
        budget_check: the budget check's images: AutoAttack-rand at its middle budget
            rerun with ``BUDGET_FACTOR`` (5) times ``autoattack_steps`` on the first
            ``budget_check`` attacked images, and each fixed-budget attack (AutoAttack-rand,
            Square, Square on the randomized model) rerun there with no norm bound (0: neither).
        tol_ranges: other defense ranges (``ToleranceRange``, or (low, high) pairs checked
            once here) to judge the same attack sets and spreads with, at the same V and v_min.
        certify_sigma: the noise of randomized smoothing drawn beside the curves by
            :func:`run_security` (None: none); not part of the stored report's key.
        certify_model: the model smoothed (None: the model evaluated).
        certify_n0, certify_n: CERTIFY's selection and estimation samples (alpha 0.001).

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
    tol_range: ToleranceRange = DEFENSE_DEFAULTS.tol_range
    seed: int | None = DEFENSE_DEFAULTS.seed  # None: secret draws; no attacker reads either
    attack_seed: int = 0
    attack_batch_size: int = ATTACK_BATCH_SIZE
    batch_size: int = DEFENSE_DEFAULTS.batch_size
    eps: tuple[float, ...] = DEFAULT_EPS
    attack_options: dict[str, Any] = field(default_factory=dict)  # steps, binary_steps of cw and eot-cw
    warm_start: bool = True
    warm_binary_steps: int = WARM_BINARY_STEPS
    square: bool = True
    square_queries: int = 500  # half of `attack square`'s 1000: six Square rows at 100 digits take minutes each
    square_draws: int = DEFAULT_SQUARE_DRAWS
    budget_check: int = BUDGET_CHECK_COUNT
    tol_ranges: tuple[ToleranceRange, ...] = ()
    certify_sigma: float | None = None
    certify_model: str | None = None
    certify_n0: int = 100
    certify_n: int = 1000

    def __post_init__(self) -> None:
        self.kappas = tuple(float(kappa) for kappa in self.kappas)  # checked once: by CW's options, below
        self.autoattack_eps = tuple(require_positive("autoattack_eps", eps) for eps in self.autoattack_eps)
        self.eps = tuple(sorted(require_non_negative("eps", eps) for eps in self.eps))
        if self.count < 1:
            raise setting_error("count", f"must be at least 1, got {self.count}")
        if self.square_queries < 1:
            raise setting_error("square_queries", f"must be at least 1, got {self.square_queries}")
        for name in ("autoattack_steps", "autoattack_eot_iter", "eot_draws"):  # named by their own options
            if getattr(self, name) < 1:
                raise setting_error(name, f"must be at least 1, got {getattr(self, name)}")
        if self.warm_binary_steps < 1:
            raise setting_error("warm_binary_steps", f"must be at least 1, got {self.warm_binary_steps}")
        if self.square_draws < 0:
            raise setting_error("square_draws", f"must be at least 0, got {self.square_draws}")
        require_seed("attack_seed", self.attack_seed)
        if self.attack_seed > MAX_SEED // ATTACK_SEED_STRIDE:
            raise setting_error(
                "attack_seed", f"must be at most {MAX_SEED // ATTACK_SEED_STRIDE}, got {self.attack_seed}"
            )
        if self.attack_batch_size < 1:
            raise setting_error("attack_batch_size", f"must be at least 1, got {self.attack_batch_size}")
        if self.budget_check < 0:
            raise setting_error("budget_check", f"must be at least 0, got {self.budget_check}")
        if not self.kappas and not self.eot and not self.autoattack_eps:
            raise ConfigError(
                "no attacker: give {kappas} or {autoattack_eps}, or keep {eot}",
                settings=("kappas", "autoattack_eps", "eot"),
            )
        if not self.eps:
            raise setting_error("eps", "takes non-negative L2 budgets, like 0.5,1,2")
        self.accept_level = require_range("accept_level", self.accept_level, 0.0, 1.0, low_open=True)
        self.attack_options = {k: v for k, v in self.attack_options.items() if v is not None}
        self.defense(self.vmin or 0)  # checks votes, v_min and the range
        self.tol_range = as_tolerance_range(self.tol_range)
        self.tol_ranges = tuple(other_range(item) for item in self.tol_ranges)
        if self.certify_sigma is not None:
            self.certify_sigma = require_positive("certify_sigma", self.certify_sigma)
            CertifySettings(sigma=self.certify_sigma, n0=self.certify_n0, n=self.certify_n)  # checks n0 and n
        for attack in self.attackers():
            try:
                attack.settings  # noqa: B018  (unknown or bad options fail before anything runs)
            except ConfigError as error:  # named as this evaluation names them
                raise error.renamed(OPTION_NAMES.get(attack.attack, {})) from None

    def defense(self, vmin: int) -> DefenseSettings:
        """The defense at operating point (``votes``, ``vmin``).

        Raises:
            ConfigError: ``vmin`` not in [0, votes - 1], or a bad range or batch size.
        """
        return DefenseSettings(
            votes=self.votes,
            vmin=vmin,
            tol_range=self.tol_range,
            seed=self.seed,
            batch_size=self.batch_size,
        )

    def attackers(self) -> list[Attacker]:
        """The attackers in order: CW per kappa, EOT-CW (if ``eot``), AutoAttack-rand per eps,
        Square per eps (on the model, then on the randomized model).

        With ``warm_start`` and 0 among ``kappas``, EOT-CW starts from the "cw k=0"
        adversarials, with ``warm_binary_steps`` searches over c; its label says so
        ("eot-cw d=4 from k=0")."""
        base = "cw k=0" if self.warm_start and 0.0 in self.kappas else None
        batch, seed = self.attack_batch_size, self.attack_seed * ATTACK_SEED_STRIDE
        warm = {"binary_steps": self.warm_binary_steps} if base else {}
        # the CW rows past kappa 0 stay cold: continued from the kappa = 0 adversarials they
        # found smaller L2 but fooled the defended model less often (docs/security.md)
        chosen = [
            Attacker(f"cw k={kappa:g}", "cw", self.count, {**self.attack_options, "kappa": kappa}, batch_size=batch)
            for kappa in self.kappas
        ]
        if self.eot:
            options = {
                **self.attack_options,
                **warm,
                "kappa": self.eot_kappa,
                "draws": self.eot_draws,
                "tol_low": self.tol_range.low,
                "tol_high": self.tol_range.high,
            }
            label = f"eot-cw d={self.eot_draws}" + (" from k=0" if base else "")  # continued or cold
            chosen.append(Attacker(label, "eot-cw", self.count, options, start=base, seed=seed, batch_size=batch))
        for eps in self.autoattack_eps:
            options = {
                "eps": eps,
                "steps": self.autoattack_steps,
                "eot_iter": self.autoattack_eot_iter,
                "tol_low": self.tol_range.low,
                "tol_high": self.tol_range.high,
            }
            label = f"apgd-rand e={eps:g}"
            chosen.append(Attacker(label, "apgd-rand", self.count, options, seed=seed, batch_size=batch))
        if self.square:
            for draws in sorted({0, self.square_draws}):
                for eps in self.autoattack_eps:
                    options = {
                        "eps": eps,
                        "queries": self.square_queries,
                        "draws": draws,
                        "tol_low": self.tol_range.low,
                        "tol_high": self.tol_range.high,
                    }
                    label = f"square e={eps:g}" if draws == 0 else f"square-rand e={eps:g} d={draws}"
                    chosen.append(Attacker(label, "square", self.count, options, seed=seed, batch_size=batch))
        return chosen

    def budget_attacker(self) -> tuple[Attacker, Attacker] | None:
        """(the attacker the budget check reruns, the rerun): AutoAttack-rand at its middle
        budget, and the same with ``BUDGET_FACTOR`` times the steps on the first
        ``min(budget_check, count)`` images; None without AutoAttack-rand or ``budget_check``."""
        if not self.autoattack_eps or self.budget_check == 0:
            return None
        eps = sorted(self.autoattack_eps)[(len(self.autoattack_eps) - 1) // 2]
        base = next(item for item in self.attackers() if item.attack == "apgd-rand" and item.options["eps"] == eps)
        options = {**base.options, "steps": BUDGET_FACTOR * self.autoattack_steps}
        count = min(self.budget_check, self.count)
        rerun = replace(base, label=f"{base.label} x{BUDGET_FACTOR}", count=count, options=options)
        return base, rerun

    def unbounded_attackers(self) -> list[tuple[Attacker, Attacker]]:
        """(a fixed-budget attacker, the same attack with no norm bound on the first
        ``min(budget_check, count)`` images) for AutoAttack-rand and each Square target, at
        their largest budget's settings: the unconstrained-failure check of the attackers
        that have a budget. Empty without ``budget_check``."""
        if self.budget_check == 0 or not self.autoattack_eps:
            return []
        count = min(self.budget_check, self.count)
        largest = max(self.autoattack_eps)
        pairs = []
        for item in self.attackers():
            if item.attack in ("apgd-rand", "square") and item.options["eps"] == largest:
                label = item.label.replace(f" e={largest:g}", " unbounded")
                options = {**item.options, "eps": UNBOUNDED_EPS}
                pairs.append((item, replace(item, label=label, count=count, options=options)))
        return pairs

    def reduced_budget(self) -> str:
        """A clause naming AutoAttack-rand's budget where it is below the original's
        (100 steps, 20 EOT samples per gradient), else ""."""
        if not self.autoattack_eps:
            return ""
        steps, eot_iter = self.autoattack_steps, self.autoattack_eot_iter
        if steps >= APGD_DEFAULTS.steps and eot_iter >= APGD_DEFAULTS.eot_iter:
            return ""
        return (
            f"AutoAttack-rand ran a reduced budget, {steps} steps with {eot_iter} EOT samples per gradient, "
            f"of the original's {APGD_DEFAULTS.steps} and {APGD_DEFAULTS.eot_iter}"
        )

    def defense_for(self, vmin: int, tol_range: ToleranceRange) -> DefenseSettings:
        """The defense at (``votes``, ``vmin``) over another tolerance range."""
        return DefenseSettings(
            votes=self.votes,
            vmin=vmin,
            tol_range=tol_range,
            seed=self.seed,
            batch_size=self.batch_size,
        )

    def identity(self) -> dict[str, Any]:
        """What the stored report is keyed by: the settings and each attack's algorithm version
        (the certified curve is not part of it: it is its own stored result)."""
        versions = {attacker.attack: ATTACKS.get(attacker.attack).version for attacker in self.attackers()}
        values = asdict(self)
        del values["certify_sigma"], values["certify_model"], values["certify_n0"], values["certify_n"]
        if self.attack_seed == 0:  # the reports stored before these existed keep their key
            del values["attack_seed"]
        if self.attack_batch_size == ATTACK_BATCH_SIZE:
            del values["attack_batch_size"]
        # the ranges as plain numbers, as the stored settings and the printed command read them
        del values["tol_range"]
        values.update(tol_low=self.tol_range.low, tol_high=self.tol_range.high)
        values["tol_ranges"] = [item.as_list() for item in self.tol_ranges]
        return {**values, "attack_versions": versions, "report_version": SECURITY_REPORT_VERSION}


@dataclass
class SecurityReport:
    model: str
    count: int
    votes: int
    vmin: int
    vmin_chosen: bool
    pristine_accepted: Rate
    pristine_accepted_correct: Rate
    tol_range: list[float]
    seed: int | None
    points: list[SecurityRow]
    curve: list[RobustAccuracy]
    draws: str = ""  # "public seed N" or "secret key ID"
    spreads: list[SpreadSummary] = field(default_factory=list)
    # per image set (label -> {"low", "high", "reference"}: per-image margins over the draws)
    spread_images: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    minimal_label: str | None = None  # the CW row whose rises make the predictions
    predicted_kappa: dict[str, float | None] = field(default_factory=dict)  # share -> kappa
    kappa_checks: list[KappaCheck] = field(default_factory=list)
    ranges: list[RangeReport] = field(default_factory=list)
    seconds: float = 0.0
    indices: list[int] = field(default_factory=list)  # positions in the test split of the attacked images
    # the certificates of --certify, over the attacked images only
    certified: list[CertifyReport] = field(default_factory=list)
    reused: bool = False
    plot: str | None = None
    # the evaluation's checks of itself (nodeguard.experiments.indicators)
    indicators: list[Indicator] = field(default_factory=list)
    optimality: list[Optimality] = field(default_factory=list)
    worst_case: WorstCase = field(default_factory=WorstCase)
    # the attackers' seed and batch (--attack-seed, --attack-batch-size); stored reports
    # made before they existed were made at these defaults
    attack_seed: int = 0
    attack_batch_size: int = ATTACK_BATCH_SIZE
    verdict: str = ""
    budget_check: BudgetCheck | None = None

    def to_dict(self) -> dict[str, Any]:
        return typing.cast("dict[str, Any]", to_plain(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SecurityReport:
        """The report from its :meth:`to_dict` (as saved in the result store)."""
        return from_plain(cls, values)


def compute_security(settings: SecuritySettings, loaded: LoadedModel, progress: Progress) -> SecurityReport:
    """The security report of a loaded model, computed (not looked up in the store).

    Makes each attacker's attack set (or finds it), fetches the defense's votes on the
    pristine images and on every attacker's successful 8-bit adversarials
    (:func:`nodeguard.defense.votes.stored_votes`), and judges them with
    :func:`nodeguard.experiments.security.judge_attackers`: once over the defense's range,
    once over each of ``settings.tol_ranges``.

    Raises:
        ConfigError, RegistryError, DataUnavailableError: as :func:`run_security`.
    """
    attacked = security_attack_sets(settings, loaded, progress)
    first = attacked[0].attack_set
    pristine, labels = first.clean, first.labels
    pristine_votes, vmin = pristine_operating_point(settings, loaded, pristine, progress)
    defense = settings.defense(vmin)
    pristine_reference = classify_alone(loaded.model, pristine, None, labels).margins
    adversarial_votes = _adversarial_votes(loaded, defense, attacked, "", progress)
    main = judge_attackers(attacked, defense, pristine_votes, adversarial_votes, labels, pristine_reference)
    ranges = [
        _judge_other_range(settings, loaded, attacked, vmin, pristine_reference, tol_range, progress)
        for tol_range in settings.tol_ranges
    ]
    count = len(pristine)
    accepted, accepted_correct = main.pristine_accepted, main.pristine_ok
    checked = check_evaluation(
        attacked,
        main,
        vote_logits(pristine_votes, "pristine"),
        _gradient_norms(settings, loaded, attacked, pristine, labels),
        settings.autoattack_eps or tuple(eps for eps in settings.eps if eps > 0),
        max(settings.eps) if max(settings.eps) > 0 else 1.0,
        _budget_check(settings, loaded, attacked, progress),
        settings.reduced_budget(),
        _unbounded_failures(settings, loaded, attacked, progress),
    )
    return SecurityReport(
        model=loaded.name,
        count=count,
        votes=settings.votes,
        vmin=vmin,
        vmin_chosen=settings.vmin is None,
        pristine_accepted=Rate.of(int(accepted.sum()), count),
        pristine_accepted_correct=Rate.of(int(accepted_correct.sum()), count),
        tol_range=settings.tol_range.as_list(),
        seed=settings.seed,
        draws=defense.draws_label(defense_key(loaded, defense)),
        attack_seed=settings.attack_seed,
        attack_batch_size=settings.attack_batch_size,
        points=[item.row for item in main.judged],
        curve=robust_accuracy_curve(main.judged, accepted_correct, settings.eps),
        spreads=[summarize(label, spread) for label, spread in main.spreads.items()],
        spread_images={label: spread_lists(spread) for label, spread in main.spreads.items()},
        minimal_label=main.minimal_label,
        predicted_kappa=main.predicted_kappa,
        kappa_checks=main.kappa_checks,
        ranges=ranges,
        indices=[int(index) for index in first.indices],
        indicators=checked.indicators,
        optimality=checked.optimality,
        worst_case=checked.worst_case,
        verdict=checked.verdict,
        budget_check=checked.budget_check,
    )


def pristine_operating_point(
    settings: SecuritySettings, loaded: LoadedModel, pristine: torch.Tensor, progress: Progress = SILENT
) -> tuple[Votes, int]:
    """The defense's votes on the pristine images and the v_min ``security`` judges at.

    Tolerance randomization (Carrara et al., ICPR 2021 workshops): ``settings.vmin``, or
    the largest v_min that accepts at least ``settings.accept_level`` of the pristine
    images (:func:`~nodeguard.experiments.security.choose_vmin`).

    Args:
        settings: the defense's range, V, seed, v_min and accept level.
        loaded: the model voting.
        pristine: (N, C, H, W) float32 images in [0, 1], the attacked ones.
        progress: receives log lines and progress.

    Returns:
        (votes, vmin): the (N, V) votes with logits (drawn at a placeholder v_min of 0:
        read them ``.at(vmin)``), and v_min.

    Raises:
        ConfigError: no v_min accepts ``accept_level`` of the pristine images, or the
            model has no solver.
        RegistryError: another process is computing the same votes.
    """
    pristine_votes, _ = stored_votes(loaded, settings.defense(0), pristine, "pristine", progress, need_logits=True)
    if settings.vmin is not None:
        return pristine_votes, settings.vmin
    return pristine_votes, choose_vmin(pristine_votes.v_agree(), settings.votes, settings.accept_level)


def _unbounded_failures(
    settings: SecuritySettings, loaded: LoadedModel, attacked: list[AttackerSet], progress: Progress
) -> list[Indicator]:
    """Each fixed-budget attack rerun with no norm bound on the first images
    (:meth:`SecuritySettings.unbounded_attackers`): ``unconstrained-failure`` where it still
    fails on a digit the model classifies correctly (every attacked digit is). It makes the
    evaluation unreliable only on a digit that no bounded run of the same attack (and
    target) fooled either: there the digit counts as robust, and the attack may be why.

    Raises:
        ConfigError: a rerun attacked other images than the evaluation's first ones.
    """
    found = []
    for base, unbounded in settings.unbounded_attackers():
        attack_set, _key = _rerun_on_first_images(unbounded, "unconstrained check", loaded, attacked, progress)
        count = len(attack_set)
        same = [
            item.attack_set.success_8bit[:count]
            for item in attacked
            if item.attacker.attack == base.attack and item.attacker.options.get("draws") == base.options.get("draws")
        ]
        bounded = torch.stack(same).any(0) if same else torch.zeros(count, dtype=torch.bool)
        found.append(unconstrained_failure(unbounded.label, attack_set.success_8bit, bounded, minimal=False))
    return found


def _budget_check(
    settings: SecuritySettings, loaded: LoadedModel, attacked: list[AttackerSet], progress: Progress
) -> tuple[BudgetCheck, Indicator] | None:
    """The budget check (:meth:`SecuritySettings.budget_attacker`): its attack set made or
    found, compared image by image with the attacker's own on the same first images.

    Raises:
        ConfigError: the rerun attacked other images than the evaluation's first ones.
    """
    pair = settings.budget_attacker()
    if pair is None:
        return None
    base, rerun = pair
    more, key = _rerun_on_first_images(rerun, "budget check", loaded, attacked, progress)
    own = next(item.attack_set for item in attacked if item.attacker.label == base.label)
    steps = (int(base.options["steps"]), int(rerun.options["steps"]))
    eps, eot_iter = float(base.options["eps"]), int(base.options["eot_iter"])
    return budget_check(base.label, eps, steps, own.success_8bit[: len(more)], more.success_8bit, key, eot_iter)


def _rerun_on_first_images(
    attacker: Attacker, check: str, loaded: LoadedModel, attacked: list[AttackerSet], progress: Progress
) -> tuple[AttackSet, str]:
    """A check's attack set (made or found) on the evaluation's first images, and its key.

    Raises:
        ConfigError: it attacked other images than the first ones of the evaluation.
    """
    progress.log(f"{check}: {attacker.label} on the first {attacker.count} images")
    attack_set, report = make_attack_set(attacker.settings, loaded, progress=progress)
    count = len(attack_set)
    if not torch.equal(attack_set.indices, attacked[0].attack_set.indices[:count]):
        raise ConfigError(f"the {check} attacked other images than the first {count} of the evaluation")
    return attack_set, report.set


def _gradient_norms(
    settings: SecuritySettings,
    loaded: LoadedModel,
    attacked: list[AttackerSet],
    images: torch.Tensor,
    labels: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Input-gradient norms of the margin at the pristine images, on each target a gradient
    attacker differentiates: the model at tol_train (CW), the randomized model (EOT-CW,
    AutoAttack-rand: logits averaged over ``eot_draws`` of an attacker's draws)."""
    kinds = {item.attacker.attack for item in attacked}
    targets: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    if "cw" in kinds:
        targets["model at tol_train"] = PinnedTolerance(loaded.model, loaded.tol_train).eval()
    if kinds & {"eot-cw", "apgd-rand"}:
        low, high = settings.tol_range.low, settings.tol_range.high
        draws = ToleranceDraws(loaded.model, settings.eot_draws, low, high, attacker_generator(0))
        targets["randomized model"] = lambda x: draws(x).mean(1)
    norms = {}
    for name, logits_of in targets.items():  # one graph per batch, not over every image at once
        norms[name] = batched_gradient_norms(logits_of, images, labels, loaded.device, GRADIENT_BATCH)
    return norms


def security_attack_sets(settings: SecuritySettings, loaded: LoadedModel, progress: Progress) -> list[AttackerSet]:
    """Every attacker's attack set, made or found in the store, in the attackers' order.

    Args:
        settings: the attackers (:meth:`SecuritySettings.attackers`).
        loaded: the model attacked.
        progress: receives log lines and progress.

    Returns:
        One ``AttackerSet`` (the attacker, its attack set of the same N images, the set's
        key) per attacker; an attacker that starts from another's adversarials is made after it.

    Raises:
        ConfigError: the attackers attacked different images, or no image to attack.
        RegistryError: an attack set is being made by another process.
        DataUnavailableError: the data set is not there.
    """
    made: dict[str, AttackerSet] = {}
    attackers = settings.attackers()
    # an attacker that starts from another's adversarials comes after it
    for attacker in sorted(attackers, key=lambda item: item.start is not None):
        progress.log(f"attacker: {attacker.label}")
        start = made[attacker.start] if attacker.start is not None else None
        attack_settings = attacker.settings if start is None else replace(attacker.settings, start=start.set_key)
        attack_set, report = make_attack_set(
            attack_settings, loaded, progress=progress, start_set=start.attack_set if start else None
        )
        made[attacker.label] = AttackerSet(attacker, attack_set, report.set)
    attacked = [made[attacker.label] for attacker in attackers]
    check_same_images(attacked)
    return attacked


def _adversarial_votes(
    loaded: LoadedModel, defense: DefenseSettings, attacked: list[AttackerSet], where: str, progress: Progress
) -> list[Votes]:
    """The defense's votes, with logits, on each attacker's successful 8-bit adversarials."""
    found = []
    for item in attacked:
        adversarial = item.attack_set.successful_8bit_images()
        label = f"{item.attacker.attack}-adversarial" + where
        votes, _ = stored_votes(loaded, defense, adversarial, label, progress, need_logits=True)
        found.append(votes)
    return found


def _judge_other_range(
    settings: SecuritySettings,
    loaded: LoadedModel,
    attacked: list[AttackerSet],
    vmin: int,
    pristine_reference: torch.Tensor,
    tol_range: ToleranceRange,
    progress: Progress,
) -> RangeReport:
    """The same attack sets judged by the defense over ``tol_range`` (same V, v_min and seed)."""
    defense = settings.defense_for(vmin, tol_range)
    where = f" (range {tol_range.low:g}..{tol_range.high:g})"
    first = attacked[0].attack_set
    pristine_votes, _ = stored_votes(loaded, defense, first.clean, "pristine" + where, progress, need_logits=True)
    adversarial_votes = _adversarial_votes(loaded, defense, attacked, where, progress)
    judged = judge_attackers(attacked, defense, pristine_votes, adversarial_votes, first.labels, pristine_reference)
    return range_report(judged)


def run_security(
    settings: SecuritySettings,
    model: str | None = None,
    registry: Registry | None = None,
    device: str = "auto",
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
    require_solver(loaded.model, "tolerance randomization", loaded.name)  # before the store makes a folder
    defense = settings.defense(settings.vmin or 0)
    identity = {**settings.identity(), "seed": defense.draws_identity(defense_key(loaded, defense))}
    stored = loaded.results().result(SECURITY_KIND, identity, f"security-n{settings.count}")
    if settings.certify_sigma is not None:  # a wrong name fails now, not after the attacks
        load_model(settings.certify_model or loaded.name, registry=loaded.registry, device=device)

    def compute() -> dict[str, Any]:
        started = time.perf_counter()
        report = compute_security(settings, loaded, progress)
        report.seconds = time.perf_counter() - started
        return {key: value for key, value in report.to_dict().items() if key not in ("reused", "plot", "certified")}

    values, reused = remember_json(stored, compute)
    if reused:
        progress.log("security report found in the cache; nothing to compute")
    report = SecurityReport.from_dict({**values, "reused": reused, "plot": None, "certified": []})
    if settings.certify_sigma is not None:
        from nodeguard.stages.certify import run_certify

        if not report.indices:
            raise ConfigError(
                "this stored security report predates {certify_sigma}; run it again with another setting",
                settings="certify_sigma",
            )
        certified = run_certify(
            CertifySettings(
                sigma=settings.certify_sigma,
                count=max(report.indices) + 1,
                n0=settings.certify_n0,
                n=settings.certify_n,
                radii=settings.eps,
            ),
            model=settings.certify_model or loaded.name,
            registry=loaded.registry,
            device=device,
            progress=progress,
        )
        # over the very images the attackers attacked (the first test images the evaluated
        # model classifies correctly), so that the curves compare
        report.certified = [certified.subset(report.indices, settings.eps)]
    return report
