from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodeguard.checks import require_count, require_tols
from nodeguard.constants import SWEEP_CELL_KIND
from nodeguard.data.datasets import ImageSplit
from nodeguard.errors import ConfigError
from nodeguard.experiments.attack_sets import AttackSet, AttackSettings
from nodeguard.experiments.sweep import AttackCell, ErrorCell, error_at, judged_at
from nodeguard.models.loading import LoadedModel, load_model
from nodeguard.models.networks import require_solver
from nodeguard.pipeline.remember import remember_json
from nodeguard.plain import to_plain
from nodeguard.progress import SILENT, Progress
from nodeguard.stages.attack import make_attack_set
from nodeguard.storage.registry import Registry

DEFAULT_TOLS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
CELL_KIND = SWEEP_CELL_KIND


@dataclass
class SweepSettings:
    """The WIFS 2019 table: test error, NFE and (optionally) attack success at each tolerance.

    Attributes:
        tols: solver tolerances (rtol = atol, > 0) of the table's rows.
        attack: an attack to run per row (e.g. "cw", Carlini & Wagner 2017), or None.
        count: images attacked per attack set.
        tol_attack: None attacks at each row's tolerance; a value attacks once at it and
            judges the adversarials at each row's tolerance (needs ``attack``).
        test_limit: the error cells use only the first this many test images (None: all).
        attack_options: the attack's own options (e.g. ``steps``, ``kappa``).

    Raises:
        ConfigError: a non-positive or empty ``tols``, ``tol_attack`` without ``attack``,
            an unknown attack or option.
    """

    tols: tuple[float, ...] = DEFAULT_TOLS
    attack: str | None = None
    count: int = 100
    tol_attack: float | None = None
    test_limit: int | None = None
    attack_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tols = require_tols("tols", self.tols)
        require_count("count", self.count)
        require_count("test_limit", self.test_limit)
        if self.tol_attack is not None and self.attack is None:
            raise ConfigError("{tol_attack} needs an {attack} (cw, for example)", settings=("tol_attack", "attack"))
        self.tols = tuple(float(tol) for tol in self.tols)
        if self.attack is not None:  # an unknown attack or option, or a bad tol_attack, fails before any cell
            self.tol_attack = self.attack_settings(self.tol_attack).tol_attack  # checked there, once

    def attack_settings(self, tol_attack: float | None) -> AttackSettings:
        """The attack set's settings at ``tol_attack`` (None: the model's tol_train).

        Raises:
            ConfigError: an unknown attack or option, or a bad ``tol_attack``.
        """
        return AttackSettings.with_overrides(
            attack=self.attack, tol_attack=tol_attack, count=self.count, **self.attack_options
        )


@dataclass
class SweepRow:
    """One column of the tau table (Carrara et al., WIFS 2019): a tolerance, or the baseline model.

    Attributes:
        tol: the tolerance tau (None: the baseline, at its own tolerance).
        error: the test error at tau, with its NFE.
        attack: with an attack, its success at tau (made at tau, or at tol_attack and
            judged at tau); else None.
        model: the baseline's name (None for a tolerance of the swept model).
    """

    tol: float | None
    error: ErrorCell
    attack: AttackCell | None = None
    model: str | None = None


@dataclass
class SweepReport:
    """``nodeguard sweep``'s answer: one ``SweepRow`` per tolerance and the baseline's, and
    how many cells came from the result store."""

    model: str
    dataset: str
    rows: list[SweepRow]
    baseline: SweepRow | None
    attack: str | None
    tol_attack: float | None
    count: int | None
    cells_computed: int = 0
    cells_reused: int = 0
    plot: str | None = None  # where --plot drew it

    def to_dict(self) -> dict[str, Any]:
        return typing.cast("dict[str, Any]", to_plain(self))


@dataclass
class CellCounts:
    """How many cells a sweep computed and how many it found in the result store."""

    computed: int = 0
    reused: int = 0

    def count(self, reused: bool) -> None:
        if reused:
            self.reused += 1
        else:
            self.computed += 1


def cached_cell(
    loaded: LoadedModel,
    counts: CellCounts,
    settings: dict[str, Any],
    compute: Callable[[], dict[str, Any]],
    counted: tuple[str, str],
) -> dict[str, Any]:
    """A table cell of ``loaded`` from its result store, or computed and saved there.

    ``counted`` names the cell's count of images and the images it is counted over; a cell
    saved without them (before nodeguard 0.8.0) is computed again."""
    stored = loaded.results().result(CELL_KIND, settings, settings["cell"])
    values, reused = remember_json(stored, compute, lambda values: all(key in values for key in counted))
    counts.count(reused)
    return values


def lazy_test_split(loaded: LoadedModel, test_limit: int | None) -> Callable[[], ImageSplit]:
    """The model's test split, loaded on first use only (a fully cached sweep reads no data)."""
    return functools.cache(lambda: loaded.split("test").subset(test_limit))


def error_cell(
    loaded: LoadedModel,
    counts: CellCounts,
    tol: float | None,
    test_limit: int | None,
    test_split: Callable[[], ImageSplit],
) -> ErrorCell:
    """The test error and the mean NFE per image on the test split at ``tol`` (None: the
    model has no solver).

    ``test_split`` is the model's lazily loaded split (:func:`lazy_test_split`), shared by
    all its cells so the data is read once per model.
    """
    settings = {"cell": "error", "tol": tol, "split": "test", "test_limit": test_limit}

    def compute() -> dict[str, Any]:
        test = test_split()
        return error_at(loaded.model, test.float_images(), test.labels, tol, sharded=True).stored()

    return ErrorCell.from_stored(cached_cell(loaded, counts, settings, compute, ("errors", "images")))


def attack_cell(
    loaded: LoadedModel,
    counts: CellCounts,
    settings: SweepSettings,
    tol_attack: float | None,
    progress: Progress,
) -> tuple[AttackCell, AttackSet]:
    """The attack at ``tol_attack`` (None: the model's tol_train): its cell (the float
    adversarials' success over the attacked images) and its attack set."""
    attack_set, report = make_attack_set(settings.attack_settings(tol_attack), loaded, progress=progress)
    counts.count(report.reused)
    return AttackCell(report.success_rate, report.mean_l2, report.mean_mse, report.set), attack_set


def decoupled_cell(
    loaded: LoadedModel,
    counts: CellCounts,
    attack_set: AttackSet,
    set_key: str,
    tol_test: float,
) -> AttackCell:
    """The attacked images whose adversarial (made at tol_attack) is misclassified at
    ``tol_test``, of the attacked images; the mean L2 and MSE over those adversarials."""
    settings = {"cell": "decoupled", "set": set_key, "tol_test": tol_test}

    def compute() -> dict[str, Any]:
        return judged_at(loaded.model, attack_set, set_key, tol_test, sharded=True).stored()

    return AttackCell.from_stored(cached_cell(loaded, counts, settings, compute, ("successes", "attacked")), set_key)


def run_sweep(
    settings: SweepSettings,
    model: str | None = None,
    baseline: str | None = None,
    registry: Registry | None = None,
    device: str = "auto",
    progress: Progress = SILENT,
) -> SweepReport:
    """Fill the table for ``model`` (and the ``baseline`` column), reusing cached cells.

    The experiment of Carrara et al., WIFS 2019: each image classified alone (per-sample
    dopri5) at each tolerance; each cell is kept in the model's result store.

    Args:
        settings: the tolerances and the attack.
        model: a registered ODE model; None means the most recently trained one.
        baseline: a registered model (a ResNet, say) for one extra row at its own
            tolerance, or None.
        registry: None means ``Registry()`` at the default cache root.
        device: "auto", "cpu" or "cuda".
        progress: receives log lines and per-cell progress.

    Returns:
        A ``SweepReport``: per tolerance a ``SweepRow``: the test error (a ``Rate`` over
        the test images), mean NFE per image and, with an attack, its success (a ``Rate``
        over the attacked images), mean L2 (pixels in [0, 1]) and mean MSE; counts of cells
        computed and reused.
        Data sets are read from the default data directory (``NODEGUARD_DATA``).

    Raises:
        ConfigError: ``model`` has no solver, no image to attack, a solver method other
            than dopri5, a bad ``device``, or malformed ``RANK``/``WORLD_SIZE``.
        ModelNotFoundError: ``model`` or ``baseline`` is not registered.
        RegistryError: a cell or attack set is being computed by another process, or a
            model is unfinished or damaged.
        DataUnavailableError: the data set is not on disk and cannot be downloaded.
    """
    loaded = load_model(model, registry=registry, device=device)
    require_solver(loaded.model, "the tol sweep", loaded.name)
    counts = CellCounts()
    cells_per_tol = 1 + (settings.attack is not None)
    decoupled_cells = settings.attack is not None and settings.tol_attack is not None
    task = progress.task("sweep cells", len(settings.tols) * cells_per_tol + decoupled_cells)

    decoupled = None
    if settings.attack is not None and settings.tol_attack is not None:
        decoupled_row, decoupled_set = attack_cell(loaded, counts, settings, settings.tol_attack, progress)
        decoupled = (decoupled_set, decoupled_row.set)
        task.advance(1)

    test_split = lazy_test_split(loaded, settings.test_limit)
    rows = []
    for tol in settings.tols:
        row = SweepRow(tol, error_cell(loaded, counts, tol, settings.test_limit, test_split))
        task.advance(1)
        if settings.attack is not None:
            if decoupled is not None:
                row.attack = decoupled_cell(loaded, counts, *decoupled, tol)
            else:
                row.attack = attack_cell(loaded, counts, settings, tol, progress)[0]
            task.advance(1)
        rows.append(row)

    baseline_row = None
    if baseline is not None:
        base = load_model(baseline, registry=registry, device=device)
        base_split = lazy_test_split(base, settings.test_limit)
        baseline_row = SweepRow(None, error_cell(base, counts, None, settings.test_limit, base_split), model=base.name)
        if settings.attack is not None:
            baseline_row.attack = attack_cell(base, counts, settings, None, progress)[0]
    task.close()
    if counts.computed == 0:
        progress.log(f"all {counts.reused} cells came from the cache; nothing was recomputed")
    return SweepReport(
        model=loaded.name,
        dataset=loaded.dataset,
        rows=rows,
        baseline=baseline_row,
        attack=settings.attack,
        tol_attack=settings.tol_attack,
        count=settings.count if settings.attack else None,
        cells_computed=counts.computed,
        cells_reused=counts.reused,
    )
