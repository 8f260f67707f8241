"""The attack stage: make, verify, save and export an attack set for a registered model.

An attack set is saved in the model's result store under a key that hashes every
setting that shapes it (:mod:`nodeguard.stages.attack_sets`), so the same request again finds
it. Work is saved after each batch; an interrupted attack continues from there. Only the
process computing a set holds its lock: other attack sets of the same model can be made
at the same time.

The attack's forward passes and every check solve each image on its own steps at
tol_attack (the per-sample solver: :class:`nodeguard.attacks.PinnedTolerance`,
:func:`nodeguard.models.evaluation.classify_alone`): an adaptive solver's step sizes depend on
the batch, so that is the prediction the image is judged by. An adversarial counts as
successful only when the model misclassifies it so. The adversarials of a
minimal-perturbation attack (CW) are then moved back to the decision boundary, and every
adversarial is finished on the 8-bit grid (:mod:`nodeguard.attacks.boundary`); each one's margin
is kept, as a float and on the grid.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from nodeguard.attacks import PinnedTolerance
from nodeguard.attacks.boundary import GRID_STEPS, MARGIN_SLACK, TIGHTEN_ROUNDS, finish_on_8bit_grid, refine_floats
from nodeguard.attacks.spec import AttackOutcome
from nodeguard.constants import ATTACK_SET_KIND, ATTACK_SHARD_KIND, SUMMARY_FILE
from nodeguard.data.datasets import ImageSplit
from nodeguard.errors import ConfigError
from nodeguard.experiments.attack_sets import (
    AttackReport,
    AttackSet,
    AttackSettings,
    ResolvedAttack,
    recorded_fields,
)
from nodeguard.experiments.indicators import (
    GRADIENT_ATTACKS,
    MINIMAL_ATTACKS,
    Indicator,
    batched_gradient_norms,
    incomplete_optimization,
    silent_success,
    unconstrained_failure,
    zero_gradient,
)
from nodeguard.models.evaluation import classify_alone
from nodeguard.models.loading import LoadedModel, load_model
from nodeguard.models.networks import ImageClassifier
from nodeguard.pipeline.remember import remember_tensors
from nodeguard.pipeline.units import WorkUnits
from nodeguard.progress import SILENT, Progress
from nodeguard.runtime.distributed import Ranks, current_ranks
from nodeguard.stages.attack_sets import attack_set_result, export_pngs, read_attack_set, summarise
from nodeguard.storage.files import atomic_write_json, check_folder
from nodeguard.storage.registry import Registry
from nodeguard.storage.results import StoredResult


def select_samples(model: ImageClassifier, split: ImageSplit, settings: ResolvedAttack) -> torch.Tensor:
    """Indices of the first ``count`` images of the split (correctly classified ones, if asked).

    In a sharded job each rank classifies its share of every chunk of candidates; every
    rank gets the same indices."""
    if not settings.only_correct:
        return torch.arange(min(settings.count, len(split)))
    chosen: list[torch.Tensor] = []
    found = 0
    for start in range(0, len(split), settings.batch_size):
        index = torch.arange(start, min(start + settings.batch_size, len(split)))
        predictions = classify_alone(model, split.float_images(index), settings.tol_attack, sharded=True).predictions
        correct = index[predictions == split.labels[index]]
        chosen.append(correct)
        found += len(correct)
        if found >= settings.count:
            break
    return torch.cat(chosen)[: settings.count] if chosen else torch.empty(0, dtype=torch.long)


def attack_one_batch(
    loaded: LoadedModel,
    settings: ResolvedAttack,
    clean: torch.Tensor,
    labels: torch.Tensor,
    batch_number: int,
    starts: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Attack one batch, verify every adversarial alone at tol_attack, move it back to the
    decision boundary (minimal-perturbation attacks), and finish it on the 8-bit grid.

    ``starts`` (the batch's rows of the start set, (N, C, H, W) in [0, 1]) is where an
    attack that takes a start begins its search; None: the clean images."""
    started = time.perf_counter()
    tol, spec, options = settings.tol_attack, settings.spec, settings.attack_options()
    pinned = PinnedTolerance(loaded.model, tol).eval()
    from_start = {} if starts is None else {"starts": starts.to(loaded.device)}
    outcome = spec.run(
        pinned, options, clean.to(loaded.device), labels.to(loaded.device), settings.seed + batch_number, **from_start
    )
    if not isinstance(outcome, AttackOutcome):
        outcome = AttackOutcome(outcome)
    adversarial = outcome.adversarial.detach().clamp(0, 1).cpu()
    found = adversarial.clone()  # the attack's own result: the 8-bit search scales its perturbation
    # with only_correct, select_samples classified these very images alone already
    clean_predictions = (
        labels.clone() if settings.only_correct else classify_alone(loaded.model, clean, tol).predictions
    )
    target = -(settings.kappa + MARGIN_SLACK)
    judged = classify_alone(loaded.model, adversarial, tol, labels)
    margin, predictions = judged.margins, judged.predictions
    if spec.refine_to_boundary:
        rows = ((margin <= target) & (clean_predictions == labels)).nonzero().squeeze(1)
        adversarial[rows] = refine_floats(loaded.model, tol, clean[rows], adversarial[rows], labels[rows], target)
        refined = classify_alone(loaded.model, adversarial[rows], tol, labels[rows])
        margin[rows], predictions[rows] = refined.margins, refined.predictions
    success = (margin < 0) & (clean_predictions == labels)
    refine = spec.refine_to_boundary
    adversarial_8bit, success_8bit, grid_method = finish_on_8bit_grid(
        loaded.model,
        tol,
        clean,
        found,
        labels,
        success,
        target,
        GRID_STEPS if refine else 0,
        TIGHTEN_ROUNDS if refine else 0,
    )
    recorded = {} if outcome.still_improving is None else {"still_improving": outcome.still_improving.cpu()}
    return {
        **recorded,
        "clean": clean,
        "adversarial": adversarial,
        "labels": labels,
        "clean_predictions": clean_predictions,
        "predictions": predictions,
        "success": success,
        "margin": margin,
        "l2": (adversarial - clean).flatten(1).norm(dim=1),
        "adversarial_8bit": adversarial_8bit,
        "success_8bit": success_8bit,
        "margin_8bit": classify_alone(loaded.model, adversarial_8bit.float() / 255, tol, labels).margins,
        "grid_method": grid_method,
        "seconds": time.perf_counter() - started,
    }


Unit = tuple[int, tuple[int, ...]]  # (batch number, the rows of the set it attacks)


def shard_units(indices_count: int, settings: ResolvedAttack, ranks: Ranks) -> list[Unit]:
    """This rank's units of work: (batch number, rows of the set), in the set's row order.

    An attack whose adversarials depend on each image alone (CW) deals the images out
    round-robin (rank r attacks rows r, r + W, r + 2W, ...), in batches of ``batch_size``:
    an attack's cost varies from image to image, and dealing them out keeps any order of
    the images (a split sorted by class or difficulty) from loading one rank. Any other
    attack draws per batch, so it keeps one process's batches whole and deals the batches
    out round-robin (a set of fewer batches than ranks leaves ranks idle). One process
    (W = 1) attacks the set's batches in order either way.
    """
    size = settings.batch_size
    if settings.spec.per_image:
        rows = range(ranks.rank, indices_count, ranks.world)
        return [(number, tuple(rows[start : start + size])) for number, start in enumerate(range(0, len(rows), size))]
    batch_starts = range(0, indices_count, size)
    return [
        (number, tuple(range(start, min(start + size, indices_count))))
        for number, start in enumerate(batch_starts)
        if number % ranks.world == ranks.rank
    ]


def join_units(units: dict[Unit, dict[str, Any]]) -> dict[str, Any]:
    """Every unit's batch fields put back in the set's row order, as one batch."""
    rows = torch.tensor([row for unit in units for row in unit[1]], dtype=torch.long)
    order = torch.argsort(rows)
    batches = list(units.values())
    joined: dict[str, Any] = {
        name: torch.cat([batch[name] for batch in batches])[order] for name in recorded_fields(batches)
    }
    joined["seconds"] = float(sum(batch["seconds"] for batch in batches))
    return joined


def start_points(
    loaded: LoadedModel,
    settings: ResolvedAttack,
    split: ImageSplit,
    indices: torch.Tensor,
    start_set: AttackSet | None = None,
) -> torch.Tensor | None:
    """The float adversarials of the start set (``settings.start``), one per row of ``indices``
    of ``split`` (the same images, split and tolerance, checked).

    ``start_set`` is that set where the caller holds it (a model in memory keeps no files);
    otherwise it is read from the model's result store.

    Returns:
        (N, C, H, W) float32 in [0, 1] (the clean image where the start attack failed), or
        None when the attack starts from the clean images.

    Raises:
        RegistryError: no attack set with that key is saved for the model.
        ConfigError: the start set attacked other images, or at another tolerance, or the
            set given is not the one ``settings.start`` names.
    """
    if settings.start is None:
        return None
    start = start_set
    if start is None:
        start = read_attack_set(loaded.results().find(ATTACK_SET_KIND, settings.start))
    if start is None:
        raise ConfigError(f"the start set {settings.start} of {loaded.name} is not complete yet")
    if attack_set_result(loaded.results(), start.settings).key != settings.start:
        raise ConfigError(f"the attack set given as the start is not {settings.start}")
    same = (
        torch.equal(start.indices, indices)
        and (start.settings.split, start.settings.only_correct, start.settings.tol_attack)
        == (settings.split, settings.only_correct, settings.tol_attack)
        and torch.equal(start.clean, split.float_images(indices))
    )
    if not same:
        raise ConfigError(
            f"the start set {settings.start} attacked other images (or at another tolerance) than this attack"
        )
    return start.adversarial


def compute_attack_set(
    loaded: LoadedModel,
    settings: ResolvedAttack,
    stored: StoredResult,
    data_dir: str | None,
    progress: Progress,
    start_set: AttackSet | None = None,
) -> AttackSet:
    """The attack loop, for one process and for W ranks alike (one process is rank 0 of 1).

    Every rank selects the same images; each attacks its units (:func:`shard_units`) as
    resumable work units (:class:`nodeguard.pipeline.units.WorkUnits`: saved after each
    one, so an interrupted run continues after its last finished unit); then the units of
    every rank are gathered and put back in the set's row order. The shard files are
    removed by :func:`make_attack_set` once the set is saved.

    Raises:
        ConfigError: no image of the split is classified correctly (with ``only_correct``),
            or the shards do not hold each image once.
    """
    ranks = current_ranks()
    split = loaded.split(settings.split, data_dir)
    indices = select_samples(loaded.model, split, settings)
    if len(indices) == 0:
        raise ConfigError(f"no {settings.split} image to attack (none classified correctly at this tolerance)")
    starts = start_points(loaded, settings, split, indices, start_set)
    work = WorkUnits(stored, ATTACK_SHARD_KIND, indices)
    units = shard_units(len(indices), settings, ranks)
    saved = work.finished()
    finished = sum(1 for unit in units if unit in saved)
    if finished:
        progress.log(f"continuing attack {stored.key} after {finished} finished batches")
    else:
        progress.log(
            f"no {settings.attack} attack set of {settings.count} {settings.split} images at "
            f"tol_attack {settings.tol_attack:g} for {loaded.name} yet; running the attack"
        )
    where = f" ({ranks.describe()})" if ranks.sharded else ""
    task = progress.task(f"{settings.attack} at tol {settings.tol_attack:g}{where}", len(units))
    tally = {"successes": 0, "attacked": 0}

    def attack_unit(unit: Unit) -> dict[str, Any]:
        batch_number, rows = unit
        index = indices[list(rows)]
        batch_starts = None if starts is None else starts[list(rows)]
        return attack_one_batch(
            loaded, settings, split.float_images(index), split.labels[index], batch_number, batch_starts
        )

    def success_so_far(batch: dict[str, Any]) -> dict[str, Any]:
        tally["successes"] += int(batch["success"].sum())
        tally["attacked"] += len(batch["success"])
        return {"success": tally["successes"] / tally["attacked"]}

    mine = work.run(units, attack_unit, task, success_so_far, finished=saved)
    task.close()
    every_unit = work.gather(mine)
    if sorted(row for unit in every_unit for row in unit[1]) != list(range(len(indices))):
        raise ConfigError(f"the shards of attack {stored.key} do not hold each of its {len(indices)} images once")
    return AttackSet.from_batches(settings, indices, [join_units(every_unit)])


def attack_checks(loaded: LoadedModel, attack_set: AttackSet) -> list[Indicator]:
    """The attack's checks of itself (:mod:`nodeguard.experiments.indicators`): silent success;
    for a minimal attack (CW, EOT-CW, FMN), unconstrained failure and incomplete optimization
    (where the set recorded it) on the images classified correctly; for a gradient attack,
    zero or non-finite input gradients at the clean images through the model at tol_attack
    (where the model has a solver, else as it is)."""
    settings = attack_set.settings
    checks = [silent_success(settings.attack, attack_set.success, attack_set.success_8bit)]
    correct = attack_set.clean_predictions == attack_set.labels
    if settings.attack in MINIMAL_ATTACKS:
        checks.append(unconstrained_failure(settings.attack, attack_set.success_8bit | ~correct))
    if attack_set.still_improving is not None:  # on the images classified correctly, as unconstrained failure
        checks.append(incomplete_optimization(settings.attack, attack_set.still_improving & correct))
    if settings.attack in GRADIENT_ATTACKS and len(attack_set):
        target = PinnedTolerance(loaded.model, settings.tol_attack).eval()
        norms = batched_gradient_norms(target, attack_set.clean, attack_set.labels, loaded.device)
        checks.append(zero_gradient(norms, f"model at tol_attack {settings.tol_attack:g}"))
    return checks


def make_attack_set(
    settings: AttackSettings,
    loaded: LoadedModel,
    data_dir: str | None = None,
    progress: Progress = SILENT,
    start_set: AttackSet | None = None,
) -> tuple[AttackSet, AttackReport]:
    """The attack set that ``settings`` describe for ``loaded``: found again, finished, or made.

    ``start_set``: the set whose key is ``settings.start``, where the caller holds it (else
    it is read from the store when needed).

    Returns:
        (attack set, its report).

    Raises:
        ConfigError: no image to attack.
        RegistryError: another process is computing the same set.
    """
    resolved = settings.resolve(loaded.tol_train)
    stored = attack_set_result(loaded.results(), resolved)
    payload, reused = remember_tensors(
        stored, lambda: compute_attack_set(loaded, resolved, stored, data_dir, progress, start_set).payload()
    )
    attack_set = AttackSet.from_payload(resolved, payload)
    report = summarise(attack_set, loaded.name, stored, reused=reused)
    report.indicators = attack_checks(loaded, attack_set)
    if reused:
        progress.log(f"attack set {stored.key} already exists for {loaded.name}; reusing it")
        return attack_set, report
    WorkUnits(stored, ATTACK_SHARD_KIND, None).remove()
    if current_ranks().is_main:
        summary = stored.path(SUMMARY_FILE)
        if summary is not None:  # None: a model in memory keeps nothing
            atomic_write_json(summary, {k: v for k, v in report.to_dict().items() if k != "reused"})
    return attack_set, report


def run_attack(
    settings: AttackSettings,
    model: str | None = None,
    registry: Registry | None = None,
    device: str = "auto",
    data_dir: str | None = None,
    export_dir: str | Path | None = None,
    progress: Progress = SILENT,
    loaded: LoadedModel | None = None,
) -> AttackReport:
    """Make (or find again, or finish) the attack set that ``settings`` describe; report it.

    Each image is attacked and judged solved alone at tol_attack; the adversarials of
    minimal-perturbation attacks (CW: Carlini & Wagner 2017) are moved back to the
    decision boundary, and all are put on the 8-bit grid. Work is saved per batch; under
    torchrun the ranks share the batches.

    Args:
        settings: the attack and its settings.
        model: a registered model; None means the most recently trained one.
        registry: None means ``Registry()`` at the default cache root.
        device: "auto", "cpu" or "cuda" (ignored when ``loaded`` is given).
        data_dir: where mnist/cifar10 are looked for.
        export_dir: if given, write ``pristine/`` and ``adversarial/`` PNGs there (8-bit
            successes only; rank 0).
        progress: receives log lines and per-batch progress.
        loaded: an already loaded model, used instead of ``model``/``registry``/``device``.

    Returns:
        The ``AttackReport`` (success rates in [0, 1], L2 over pixels in [0, 1], the set's key).

    Raises:
        ConfigError: no image of the split to attack, shards that do not hold each image
            once, an attack that needs an ODE model
            (eot-cw, apgd-rand) on a ResNet, a solver method other than dopri5, a bad
            ``device``, or malformed ``RANK``/``WORLD_SIZE``.
        RegistryError: the same attack set is being computed by another process, the
            model is unfinished, or its files are damaged.
        ModelNotFoundError: ``model`` is not registered (or None and none is ready).
        DataUnavailableError: the model's data set is not on disk and cannot be downloaded.
    """
    if export_dir is not None and current_ranks().is_main:
        for folder in ("pristine", "adversarial"):  # a folder that cannot be made: one line, before any work
            check_folder(Path(export_dir) / folder)
    loaded = loaded or load_model(model, registry=registry, device=device)
    attack_set, report = make_attack_set(settings, loaded, data_dir, progress)
    if export_dir is not None and current_ranks().is_main:
        export_pngs(attack_set, Path(export_dir))
        report.exported_to = str(export_dir)
        progress.log(f"wrote {len(attack_set)} pristine and {int(attack_set.success_8bit.sum())} adversarial PNGs")
    return report
