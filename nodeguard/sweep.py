"""The tolerance sweep: the papers' tables of error, NFE and attack results against tau.

For each tolerance tau of a list, on the test split:
- ``error`` and ``nfe``: classification error at tau_test = tau, and the mean number of
  function evaluations per image (each image solved on its own steps);
- with an attack: the attack at tau_attack = tau_test (``success_rate``, ``mean_l2``,
  ``mean_mse``, from the attack sets of :mod:`nodeguard.adversarial`);
- decoupled (``tol_attack`` given): the adversarials are made once at tol_attack and
  classified at each tau_test; ``success_rate`` is then the share of attacked images
  whose adversarial (successful at tol_attack) is still misclassified at tau_test.

A baseline model without a solver (the ResNet) gives one reference column. Every cell
is cached in its model's folder under ``sweep/`` with the settings that made it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .adversarial import ATTACKS, AttackSettings, load_attack_set, perturbation_stats, run_attack
from .data import ImageSplit, load_dataset
from .errors import ConfigError, unknown_name_error
from .evaluation import predict_per_sample
from .loading import LoadedModel, load_model
from .models import is_ode_model
from .progress import Progress, SilentProgress
from .registry import Registry

DEFAULT_TOLS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
SWEEP_FOLDER = "sweep"


@dataclass
class SweepSettings:
    tols: tuple[float, ...] = DEFAULT_TOLS
    attack: str | None = None
    count: int = 100
    tol_attack: float | None = None
    test_limit: int | None = None
    attack_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.tols or any(tol <= 0 for tol in self.tols):
            raise ConfigError("tolerances must be positive numbers")
        if self.attack is not None and self.attack not in ATTACKS:
            raise unknown_name_error("attack", self.attack, ATTACKS)
        if self.tol_attack is not None and self.attack is None:
            raise ConfigError("--tol-attack needs an attack (--attack cw)")
        self.tols = tuple(float(tol) for tol in self.tols)


@dataclass
class SweepReport:
    model: str
    rows: list[dict[str, Any]]
    baseline: dict[str, Any] | None
    attack: str | None
    tol_attack: float | None
    count: int | None
    cells_computed: int = 0
    cells_reused: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CellCache:
    """JSON cells in ``models/NAME/sweep/``, named by a hash of the settings that made them."""

    def __init__(self, registry: Registry, model: str):
        self.registry, self.model = registry, model
        self.computed = 0
        self.reused = 0

    def count_attack(self, cell: dict[str, Any]) -> dict[str, Any]:
        """Count an attack cell (cached as an attack set) and drop its ``reused`` flag."""
        if cell.pop("reused"):
            self.reused += 1
        else:
            self.computed += 1
        return cell

    def get_or_compute(self, settings: dict[str, Any], compute) -> dict[str, Any]:
        digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        filename = f"{SWEEP_FOLDER}/{settings['cell']}-{digest}.json"
        cached = self.registry.read_json(self.model, filename)
        if cached is not None and cached.get("settings") == settings:
            self.reused += 1
            return cached["values"]
        values = compute()
        self.registry.write_json(self.model, filename, {"settings": settings, "values": values})
        self.computed += 1
        return values


def lazy_test_split(loaded: LoadedModel, test_limit: int | None) -> Callable[[], ImageSplit]:
    """The model's test split, loaded on first use only (a fully cached sweep reads no data)."""
    return functools.cache(lambda: load_dataset(loaded.dataset).test.subset(test_limit))


def error_cell(
    loaded: LoadedModel,
    cache: CellCache,
    tol: float | None,
    test_limit: int | None,
    test_split: Callable[[], ImageSplit],
) -> dict[str, Any]:
    settings = {"cell": "error", "tol": tol, "split": "test", "test_limit": test_limit}

    def compute() -> dict[str, Any]:
        test = test_split()
        predictions, nfe = predict_per_sample(loaded.model, test.float_images(), tol=tol)
        return {
            "error": float((predictions != test.labels).float().mean()),
            "nfe": float(nfe.float().mean()),
            "images": len(test),
        }

    return cache.get_or_compute(settings, compute)


def attack_cell(
    loaded: LoadedModel, registry: Registry, settings: SweepSettings, tol_attack: float | None, progress: Progress
) -> dict[str, Any]:
    report = run_attack(
        AttackSettings.with_overrides(
            attack=settings.attack, tol_attack=tol_attack, count=settings.count, **settings.attack_options
        ),
        registry=registry,
        loaded=loaded,
        progress=progress,
    )
    return {
        "success_rate": report.success_rate,
        "mean_l2": report.mean_l2,
        "mean_mse": report.mean_mse,
        "set": report.set,
        "reused": report.reused,
    }


def decoupled_cell(
    loaded: LoadedModel, registry: Registry, cache: CellCache, attack_set: str, tol_test: float
) -> dict[str, Any]:
    settings = {"cell": "decoupled", "set": attack_set, "tol_test": tol_test}

    def compute() -> dict[str, Any]:
        data = load_attack_set(registry, loaded.name, attack_set)
        predictions, _ = predict_per_sample(loaded.model, data["adversarial"], tol=tol_test)
        fooled = data["success"] & (predictions != data["labels"])
        stats = perturbation_stats(data["l2"], fooled, data["clean"][0].numel())
        return {
            "success_rate": float(fooled.float().mean()),
            "mean_l2": stats["mean_l2"],
            "mean_mse": stats["mean_mse"],
        }

    return cache.get_or_compute(settings, compute)


def run_sweep(
    settings: SweepSettings,
    model: str | None = None,
    baseline: str | None = None,
    registry: Registry | None = None,
    device: str = "auto",
    progress: Progress | None = None,
) -> SweepReport:
    """Fill the table for ``model`` (and the ``baseline`` column), reusing cached cells."""
    registry = registry or Registry()
    progress = progress or SilentProgress()
    loaded = load_model(model, registry=registry, device=device)
    if not is_ode_model(loaded.model):
        raise ConfigError(f"{loaded.name} has no solver tolerance to sweep; pass an ODE model with --model")
    cache = CellCache(registry, loaded.name)
    cells_per_tol = 1 + (settings.attack is not None)
    task = progress.task("sweep cells", len(settings.tols) * cells_per_tol + (settings.attack is not None))

    decoupled_set = None
    if settings.attack is not None and settings.tol_attack is not None:
        decoupled = cache.count_attack(attack_cell(loaded, registry, settings, settings.tol_attack, progress))
        decoupled_set = decoupled["set"]
        task.advance(1)

    test_split = lazy_test_split(loaded, settings.test_limit)
    rows = []
    for tol in settings.tols:
        row: dict[str, Any] = {"tol": tol, **error_cell(loaded, cache, tol, settings.test_limit, test_split)}
        task.advance(1)
        if settings.attack is not None:
            if decoupled_set is not None:
                row.update(decoupled_cell(loaded, registry, cache, decoupled_set, tol))
            else:
                row.update(cache.count_attack(attack_cell(loaded, registry, settings, tol, progress)))
            task.advance(1)
        rows.append(row)

    baseline_row = None
    if baseline is not None:
        base = load_model(baseline, registry=registry, device=device)
        base_cache = CellCache(registry, base.name)
        base_test = lazy_test_split(base, settings.test_limit)
        baseline_row = {"model": base.name, **error_cell(base, base_cache, None, settings.test_limit, base_test)}
        if settings.attack is not None:
            baseline_row.update(base_cache.count_attack(attack_cell(base, registry, settings, None, progress)))
        cache.computed += base_cache.computed
        cache.reused += base_cache.reused
    task.close()
    if cache.computed == 0:
        progress.log(f"all {cache.reused} cells came from the cache; nothing was recomputed")
    return SweepReport(
        model=loaded.name,
        rows=rows,
        baseline=baseline_row,
        attack=settings.attack,
        tol_attack=settings.tol_attack,
        count=settings.count if settings.attack else None,
        cells_computed=cache.computed,
        cells_reused=cache.reused,
    )
