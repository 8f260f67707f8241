"""Attack sets as values: the settings of an attack set, its typed contents, its report.

An attack set is the result of one attack on the first ``count`` images of a split of a
model's data set, at one solver tolerance (each image attacked and judged alone,
:mod:`nodeguard.stages.attack`); where it is kept is :mod:`nodeguard.stages.attack_sets`.
Nothing here reads or writes a file.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

import torch

from nodeguard.attacks import ATTACKS, AttackSpec
from nodeguard.checks import require_seed, require_tol
from nodeguard.errors import setting_error, unknown_name_error
from nodeguard.experiments.indicators import Indicator
from nodeguard.intervals import Rate
from nodeguard.plain import from_plain, to_plain

Split = Literal["train", "test"]
SPLITS: tuple[str, ...] = get_args(Split)


ATTACK_BATCH_SIZE = 100  # images per attack batch, by default (part of every attack set's key)


@dataclass(frozen=True)
class ResolvedAttack:
    """Every setting that shapes an attack set, defaults filled in: what its key hashes."""

    attack: str
    algorithm_version: int
    tol_attack: float
    count: int
    split: Split
    only_correct: bool
    batch_size: int
    seed: int
    options: dict[str, Any]
    # the key of the attack set whose adversarials start this attack (None: the clean images)
    start: str | None = None
    # the options object these settings were resolved from (checked once, when made);
    # None for settings read back from a saved set (built again from ``options`` on use)
    built_options: Any = field(default=None, compare=False, repr=False)

    @property
    def spec(self) -> AttackSpec:
        return ATTACKS.get(self.attack)

    def attack_options(self) -> Any:
        """The attack's own options object (e.g. a CWOptions)."""
        return self.built_options if self.built_options is not None else self.spec.options(**self.options)

    @property
    def kappa(self) -> float:
        """The confidence kappa (logits) the attack aims past the decision boundary: its
        adversarials are refined to margin -kappa; 0 for attacks that take none."""
        return float(getattr(self.attack_options(), "kappa", 0.0))

    def as_dict(self) -> dict[str, Any]:
        """The settings the key hashes (``built_options`` is ``options`` as an object; ``start``
        only where set, so sets made before it existed keep their keys)."""
        settings = asdict(self)
        settings.pop("built_options")
        if settings["start"] is None:
            del settings["start"]
        return settings

    def label(self) -> str:
        return f"{self.attack}-tol{self.tol_attack:.0e}-n{self.count}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResolvedAttack:
        return cls(**data)


@dataclass
class AttackSettings:
    """What to attack and how. ``tol_attack`` None means the model's tol_train;
    ``options`` are the attack's own (see its options class), unset ones take its defaults.

    Attributes:
        attack: a registered attack ("cw": Carlini & Wagner 2017; "fmn": Pintor et al. 2021;
            "eot-cw": with EOT, Athalye et al. 2018; "apgd-rand": Croce & Hein 2020; "pgd"; "blend").
        tol_attack: the solver tolerance (rtol = atol) each image is solved alone at while
            attacked and judged; None means the model's tol_train (> 0).
        count: images to attack, the first of the split (>= 1).
        split: "train" or "test".
        only_correct: attack only images classified correctly alone at tol_attack.
        batch_size: images per attack batch (>= 1; part of the attack set's key).
        seed: the attack's random seed (plus the batch number per batch).
        options: the attack's own options (e.g. ``steps``, ``kappa``, ``eps``); None
            values are dropped.
        start: the key (``AttackReport.set``) of an attack set of the same model on the
            same images whose float adversarials this attack starts from (None: the clean
            images); only for attacks that take a start (cw, eot-cw).

    Raises:
        ConfigError: an unknown attack or split, a value out of range, an option the
            attack does not take or refuses, or a start for an attack that takes none.
    """

    attack: str = "cw"
    tol_attack: float | None = None
    count: int = 100
    split: Split = "test"
    only_correct: bool = True
    batch_size: int = ATTACK_BATCH_SIZE
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    start: str | None = None
    # the attack's options object, built (and so checked) once, in __post_init__
    attack_options: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spec = ATTACKS.get(self.attack)
        for name in ("count", "batch_size"):
            if getattr(self, name) < 1:
                raise setting_error(name, f"must be at least 1, got {getattr(self, name)}")
        require_seed("seed", self.seed)
        if self.tol_attack is not None:
            self.tol_attack = require_tol("tol_attack", self.tol_attack)
        if self.split not in SPLITS:
            raise unknown_name_error("split", self.split, SPLITS)
        self.options = {key: value for key, value in self.options.items() if value is not None}
        self.attack_options = spec.build_options(self.options)  # unknown or bad options fail here
        if self.start is not None and not spec.takes_start:
            raise setting_error("start", f"{self.attack} starts from the clean images only; cw and eot-cw take a start")

    @classmethod
    def with_overrides(cls, **overrides: Any) -> AttackSettings:
        """Settings from keyword overrides: None keeps the default; names that are not
        settings of every attack (steps, kappa, eps, ...) go to ``options``.

        Raises:
            ConfigError: as the constructor.
        """
        common = {item.name for item in fields(cls) if item.init} - {"options"}
        chosen = {name: value for name, value in overrides.items() if value is not None}
        options = {name: value for name, value in chosen.items() if name not in common}
        return cls(**{name: value for name, value in chosen.items() if name in common}, options=options)

    def resolve(self, tol_train: float) -> ResolvedAttack:
        """Every setting with defaults filled in (``tol_attack`` None becomes ``tol_train``): what the key hashes."""
        spec = ATTACKS.get(self.attack)
        return ResolvedAttack(
            attack=self.attack,
            algorithm_version=spec.version,
            tol_attack=float(self.tol_attack if self.tol_attack is not None else tol_train),
            count=self.count,
            split=self.split,
            only_correct=self.only_correct,
            batch_size=self.batch_size,
            seed=self.seed,
            options=asdict(self.attack_options),
            start=self.start,
            built_options=self.attack_options,
        )


BATCH_FIELDS = (
    "clean",
    "adversarial",
    "labels",
    "clean_predictions",
    "predictions",
    "success",
    "margin",
    "l2",
    "adversarial_8bit",
    "success_8bit",
    "margin_8bit",
    "grid_method",
)
OPTIONAL_FIELDS = ("still_improving",)  # recorded by the attacks that can (CW, EOT-CW, FMN)


def recorded_fields(batches: list[dict[str, Any]]) -> list[str]:
    """BATCH_FIELDS, then the OPTIONAL_FIELDS that every one of ``batches`` holds (a field
    some batch lacks, e.g. one saved before nodeguard 0.12, is left out of the joined set)."""
    return [*BATCH_FIELDS, *(name for name in OPTIONAL_FIELDS if all(name in batch for batch in batches))]


@dataclass
class AttackSet:
    """The attacked images of one attack set, one row each (see the module docstring).

    Attributes:
        settings: the resolved settings that made it.
        indices: (N,) int64 positions in the split.
        clean: (N, C, H, W) float32 in [0, 1].
        adversarial: (N, C, H, W) float32 in [0, 1] (moved back to the decision boundary
            for minimal-perturbation attacks).
        labels: (N,) int64 true classes.
        clean_predictions: (N,) int64, each clean image alone at tol_attack.
        predictions: (N,) int64, each adversarial alone at tol_attack.
        success: (N,) bool, clean correct and adversarial misclassified.
        margin: (N,) float32, true logit minus best other of the adversarial (logit units).
        l2: (N,) float32, ||adversarial - clean||_2 over pixels in [0, 1].
        adversarial_8bit: (N, C, H, W) uint8, the adversarial on the 8-bit grid (clean
            where lost).
        success_8bit: (N,) bool, success of the 8-bit adversarial.
        margin_8bit: (N,) float32, its margin.
        grid_method: (N,) int64, ``GridMethod``: 0 lost, 1 rounded, 2 outward rounding.
        seconds: time the attack took, summed over batches (s).
        still_improving: (N,) bool, the attack's smallest adversarial still shrank over its
            last steps (:class:`~nodeguard.attacks.spec.AttackOutcome`); None where the
            attack records no trajectory (or the set was saved before nodeguard 0.12).
    """

    settings: ResolvedAttack
    indices: torch.Tensor
    clean: torch.Tensor
    adversarial: torch.Tensor
    labels: torch.Tensor
    clean_predictions: torch.Tensor
    predictions: torch.Tensor
    success: torch.Tensor
    margin: torch.Tensor
    l2: torch.Tensor
    adversarial_8bit: torch.Tensor
    success_8bit: torch.Tensor
    margin_8bit: torch.Tensor
    grid_method: torch.Tensor
    seconds: float
    still_improving: torch.Tensor | None = None

    def __len__(self) -> int:
        """N, the number of attacked images."""
        return len(self.labels)

    @property
    def dims(self) -> int:
        """Values per image (d in MSE = ||delta||^2 / d)."""
        return self.clean[0].numel() if len(self.clean) else 1

    def l2_8bit(self) -> torch.Tensor:
        """L2 distance of each 8-bit adversarial (clean where the attack failed) from its image.

        Returns:
            (N,) float32, over pixels in [0, 1] (levels / 255).
        """
        return (self.adversarial_8bit.float() / 255 - self.clean).flatten(1).norm(dim=1)

    def successful_8bit_images(self) -> torch.Tensor:
        """The adversarials that succeed on the 8-bit grid, as floats in [0, 1].

        Returns:
            (M, C, H, W) float32, M = ``success_8bit.sum()``, in row order.
        """
        return self.adversarial_8bit[self.success_8bit].float() / 255

    @classmethod
    def from_batches(cls, settings: ResolvedAttack, indices: torch.Tensor, batches: list[dict[str, Any]]) -> AttackSet:
        """Join the batches saved while attacking (dicts of BATCH_FIELDS and ``seconds``)."""
        joined = {name: torch.cat([batch[name] for batch in batches]) for name in recorded_fields(batches)}
        seconds = float(sum(batch["seconds"] for batch in batches))
        return cls(settings=settings, indices=indices, seconds=seconds, **joined)

    def payload(self) -> dict[str, Any]:
        """The tensors and seconds as saved in result.pt (the settings are added by the store)."""
        tensors = {name: getattr(self, name) for name in (*BATCH_FIELDS, *OPTIONAL_FIELDS)}
        return {"indices": self.indices, "seconds": self.seconds, **{k: v for k, v in tensors.items() if v is not None}}

    @classmethod
    def from_payload(cls, settings: ResolvedAttack, payload: dict[str, Any]) -> AttackSet:
        """The attack set from a saved :meth:`payload` and its settings.

        Raises:
            KeyError: a field is missing from ``payload``.
        """
        tensors = {name: payload[name] for name in (*BATCH_FIELDS, "indices")}
        tensors.update({name: payload[name] for name in OPTIONAL_FIELDS if name in payload})
        return cls(settings=settings, seconds=float(payload["seconds"]), **tensors)


def perturbation_stats(l2: torch.Tensor, mask: torch.Tensor, dims: int) -> dict[str, float | None]:
    """Mean and median L2 and mean MSE (||delta||^2 / d) over the samples in ``mask``."""
    chosen = l2[mask]
    if len(chosen) == 0:
        return {"mean_l2": None, "median_l2": None, "mean_mse": None}
    return {
        "mean_l2": float(chosen.mean()),
        "median_l2": float(chosen.median()),
        "mean_mse": float((chosen.square() / dims).mean()),
    }


def margin_stats(margin: torch.Tensor, mask: torch.Tensor, suffix: str) -> dict[str, float | None]:
    """Median and 90th percentile of |margin| over the samples in ``mask``."""
    chosen = margin[mask].abs().float()
    if len(chosen) == 0:
        return {f"median_abs_margin{suffix}": None, f"p90_abs_margin{suffix}": None}
    return {
        f"median_abs_margin{suffix}": float(chosen.median()),
        f"p90_abs_margin{suffix}": float(torch.quantile(chosen, 0.9)),
    }


@dataclass
class AttackReport:
    """The summary of one attack set (also saved as its summary.json).

    L2 is over pixels in [0, 1]; MSE is ||delta||^2 / (C * H * W); margins are in logit
    units; statistics are over the successful adversarials (None when there is none).

    Attributes:
        model: the model's name.
        attack: the attack's name.
        tol_attack: the tolerance the images were attacked and judged at.
        count: attacked images N.
        success_rate: the images whose float adversarial succeeds, of the N (a
            :class:`~nodeguard.intervals.Rate`: count, total and 95% Clopper–Pearson interval).
        mean_l2: mean L2 of the successful float adversarials.
        median_l2: their median L2.
        mean_mse: their mean MSE.
        success_rate_8bit: the images whose 8-bit adversarial succeeds, of the N.
        mean_l2_8bit: mean L2 of the successful 8-bit adversarials.
        kept_by_rounding: 8-bit adversarials found by rounding at the smallest scale.
        kept_by_outward_rounding: those found by rounding away from the original.
        lost_on_8bit_grid: float successes whose 8-bit adversarial fails.
        median_abs_margin: median |margin| of the successful float adversarials.
        p90_abs_margin: its 90th percentile.
        median_abs_margin_8bit: median |margin| of the successful 8-bit adversarials.
        p90_abs_margin_8bit: its 90th percentile.
        seconds: time the attack took (s).
        set: the attack set's key (for :func:`load_attack_set`).
        path: its folder.
        reused: True when the set was found in the store.
        exported_to: where PNGs were written, if asked.
        settings: the resolved settings.
        indicators: the attack's checks of itself
            (:mod:`nodeguard.experiments.indicators`: silent success; for minimal attacks,
            unconstrained failure and incomplete optimization; for gradient attacks, zero
            input gradients).
    """

    model: str
    attack: str
    tol_attack: float
    count: int
    success_rate: Rate
    mean_l2: float | None
    median_l2: float | None
    mean_mse: float | None
    success_rate_8bit: Rate
    mean_l2_8bit: float | None
    kept_by_rounding: int
    kept_by_outward_rounding: int
    lost_on_8bit_grid: int
    median_abs_margin: float | None
    p90_abs_margin: float | None
    median_abs_margin_8bit: float | None
    p90_abs_margin_8bit: float | None
    seconds: float
    set: str
    path: str
    reused: bool = False
    exported_to: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    indicators: list[Indicator] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (``--json``, summary.json)."""
        return typing.cast("dict[str, Any]", to_plain(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AttackReport:
        """The report from :meth:`to_dict`, or from a summary.json written before rates were
        values (0.12.0 and earlier: ``success_rate`` a share, ``successes`` its count), or
        before the margins were recorded (they read None)."""
        values = dict(values)
        for margin in ("median_abs_margin", "p90_abs_margin", "median_abs_margin_8bit", "p90_abs_margin_8bit"):
            values.setdefault(margin, None)
        count = int(values.get("count", 0))
        for rate, successes in (("success_rate", "successes"), ("success_rate_8bit", "successes_8bit")):
            values.pop(f"{rate}_ci", None)
            found = values.pop(successes, None)
            if not isinstance(values.get(rate), dict):
                k = round(float(values.get(rate) or 0.0) * count) if found is None else int(found)
                values[rate] = Rate.of(k, count).to_dict()
        values["indicators"] = [_indicator_values(item) for item in values.get("indicators", [])]
        return from_plain(cls, values)


def _indicator_values(values: dict[str, Any]) -> dict[str, Any]:
    """An indicator's plain data, from before rates were values (``count``, ``total``, ``rate_ci``) or after."""
    if isinstance(values.get("rate"), dict):
        return values
    rest = {key: value for key, value in values.items() if key not in ("count", "total", "rate", "rate_ci")}
    return {**rest, "rate": Rate.of(int(values["count"]), int(values["total"])).to_dict()}
