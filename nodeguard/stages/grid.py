"""The tau_train x tau_attack x tau_test grid: attack each model at each tau_attack, judge at each tau_test.

Models trained at different tau_train each give one table: one attack set per
(model, tau_attack), made by the attack stage and reused from the result store, and one
cell per tau_test holding the share of the attacked images whose adversarial is
misclassified when classified alone at tau_test, with the mean L2 of those adversarials.
Cells are cached one by one as in :mod:`nodeguard.stages.sweep`: an identical grid computes
nothing.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any

from nodeguard.checks import require_tols
from nodeguard.errors import setting_error
from nodeguard.intervals import Rate
from nodeguard.models.loading import load_model
from nodeguard.models.networks import require_solver
from nodeguard.plain import to_plain
from nodeguard.progress import SILENT, Progress
from nodeguard.stages.sweep import CellCounts, SweepSettings, attack_cell, decoupled_cell
from nodeguard.storage.registry import Registry


@dataclass
class GridSettings:
    """The grid's axes and attack: ``tol_attacks`` (rows) and ``tols`` (tau_test, columns).

    Attributes:
        tol_attacks: tolerances (> 0) to attack at, one attack set each.
        tols: tolerances (> 0) to judge the adversarials at.
        attack: the attack (default "cw", Carlini & Wagner 2017).
        count: images per attack set.
        attack_options: the attack's own options.

    Raises:
        ConfigError: empty or non-positive tolerances, an unknown attack or option.
    """

    tol_attacks: tuple[float, ...]
    tols: tuple[float, ...]
    attack: str = "cw"
    count: int = 100
    attack_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tol_attacks = require_tols("tol_attacks", self.tol_attacks)
        # the column axis, the attack name and its options are checked as a sweep's are
        self.sweep = SweepSettings(
            tols=self.tols, attack=self.attack, count=self.count, attack_options=self.attack_options
        )
        self.tols = self.sweep.tols


@dataclass
class GridModel:
    """One model of the grid: its name, the tolerance it was trained at, its data set."""

    model: str
    tol_train: float
    dataset: str


@dataclass
class GridCell:
    """One (model, tau_attack, tau_test) cell: the attacked images whose adversarial (made at
    tau_attack) is misclassified alone at tau_test, of the attacked images (a
    :class:`~nodeguard.intervals.Rate`), and the mean L2 of those adversarials (pixels in
    [0, 1]; None: none)."""

    model: str
    tol_train: float
    tol_attack: float
    tol_test: float
    success_rate: Rate
    mean_l2: float | None
    set: str


@dataclass
class GridReport:
    """The decoupling grid: the models, the axes, one ``GridCell`` per (model, tau_attack,
    tau_test), and how many cells came from the result store."""

    models: list[GridModel]
    tol_attacks: list[float]
    tols: list[float]
    attack: str
    count: int
    grid: list[GridCell]
    cells_computed: int = 0
    cells_reused: int = 0
    plot: str | None = None  # where --plot drew it

    def to_dict(self) -> dict[str, Any]:
        return typing.cast("dict[str, Any]", to_plain(self))

    def cells_of(self, model: str) -> dict[tuple[float, float], GridCell]:
        """The cells of one model by (tau_attack, tau_test)."""
        return {(cell.tol_attack, cell.tol_test): cell for cell in self.grid if cell.model == model}


def run_grid(
    settings: GridSettings,
    models: list[str],
    registry: Registry | None = None,
    device: str = "auto",
    progress: Progress = SILENT,
) -> GridReport:
    """One cell per (model, tau_attack, tau_test): success rate and mean L2 of the adversarials.

    Args:
        settings: the axes and the attack.
        models: registered ODE models (typically trained at different tau_train), each once.
        registry: None means ``Registry()`` at the default cache root.
        device: "auto", "cpu" or "cuda".
        progress: receives log lines and per-row progress.

    Returns:
        A ``GridReport``: per cell (a ``GridCell``) the attacked images whose adversarial
        (made at tau_attack) is misclassified alone at tau_test (a ``Rate``) and their mean
        L2 (pixels in [0, 1]); counts of cells computed and reused.

    Raises:
        ConfigError: no model, a model named twice, a model without a solver, no image to
            attack, a bad ``device``, or malformed ``RANK``/``WORLD_SIZE``.
        ModelNotFoundError: a model is not registered.
        RegistryError: a cell or attack set is being computed by another process, or a
            model is unfinished or damaged.
        DataUnavailableError: a data set is not on disk and cannot be downloaded.
    """
    if not models:
        raise setting_error("models", "needs at least one model name")
    if len(set(models)) != len(models):
        raise setting_error("models", f"names a model twice: {','.join(models)}")
    loaded_models = [load_model(name, registry=registry, device=device) for name in models]
    for loaded in loaded_models:
        require_solver(loaded.model, "the decoupling grid", loaded.name)
    counts = CellCounts()
    rows_per_model = len(settings.tol_attacks)
    task = progress.task("grid rows", len(loaded_models) * rows_per_model)
    grid, described = [], []
    for loaded in loaded_models:
        described.append(GridModel(loaded.name, loaded.tol_train, loaded.dataset))
        for tol_attack in settings.tol_attacks:
            made, attack_set = attack_cell(loaded, counts, settings.sweep, tol_attack, progress)
            for tol_test in settings.tols:
                cell = decoupled_cell(loaded, counts, attack_set, made.set, tol_test)
                grid.append(
                    GridCell(
                        model=loaded.name,
                        tol_train=loaded.tol_train,
                        tol_attack=tol_attack,
                        tol_test=tol_test,
                        success_rate=cell.success_rate,
                        mean_l2=cell.mean_l2,
                        set=made.set,
                    )
                )
            task.advance(1)
    task.close()
    if counts.computed == 0:
        progress.log(f"all {counts.reused} cells came from the cache; nothing was recomputed")
    return GridReport(
        models=described,
        tol_attacks=list(settings.tol_attacks),
        tols=list(settings.tols),
        attack=settings.attack,
        count=settings.count,
        grid=grid,
        cells_computed=counts.computed,
        cells_reused=counts.reused,
    )
