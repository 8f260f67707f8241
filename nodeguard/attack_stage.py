"""The attack stage: make, verify, save and export an attack set for a registered model.

An attack set is saved in the model's result store under a key that hashes every
setting that shapes it (:mod:`nodeguard.attack_sets`), so the same request again finds
it. Work is saved after each batch; an interrupted attack continues from there. Only the
process computing a set holds its lock: other attack sets of the same model can be made
at the same time.

An adversarial counts as successful only when the model, with its solver at
tol_attack, misclassifies it when the image is classified on its own (the per-sample
solver of :func:`nodeguard.evaluation.predict_per_sample`): an adaptive solver's step
sizes depend on the batch, so that is the image's own prediction. Each adversarial is
also finished on the 8-bit grid (what a PNG can hold): plain rounding if that keeps it
adversarial, else rounding every changed pixel away from the original, else it is
marked as lost on the grid.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .attack_sets import (
    AttackReport,
    AttackSet,
    AttackSettings,
    ResolvedAttack,
    attack_set_result,
    export_pngs,
    read_attack_set,
    summarise,
)
from .attacks import PinnedTolerance
from .data import ImageSplit, load_dataset
from .errors import ConfigError
from .evaluation import predict_per_sample
from .loading import LoadedModel, load_model
from .progress import Progress, SilentProgress
from .registry import Registry
from .results import StoredResult
from .storage import atomic_write_json, load_tagged, save_tagged

PARTIAL_FILE = "partial.pt"
SUMMARY_FILE = "summary.json"


def classify_alone(model: torch.nn.Module, images: torch.Tensor, tol: float) -> torch.Tensor:
    """Predictions of each image solved on its own steps at ``tol``."""
    return predict_per_sample(model, images, tol=tol)[0]


def finish_on_8bit_grid(
    model: torch.nn.Module,
    tol: float,
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    labels: torch.Tensor,
    success: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(uint8 adversarials, success on the grid, how: 0 lost, 1 rounded, 2 rounded outward)."""
    clean_levels = (clean * 255).round()
    rounded = (adversarial * 255).round().clamp(0, 255)
    delta = adversarial * 255 - clean_levels
    outward = (clean_levels + delta.sign() * (delta.abs() - 1e-4).clamp(min=0).ceil()).clamp(0, 255)
    method = torch.zeros(len(clean), dtype=torch.long)
    result = clean_levels.clone()
    candidates = success.nonzero().squeeze(1)
    if len(candidates):
        kept = classify_alone(model, rounded[candidates] / 255, tol) != labels[candidates]
        result[candidates[kept]] = rounded[candidates[kept]]
        method[candidates[kept]] = 1
        retry = candidates[~kept]
        if len(retry):
            kept_outward = classify_alone(model, outward[retry] / 255, tol) != labels[retry]
            result[retry[kept_outward]] = outward[retry[kept_outward]]
            method[retry[kept_outward]] = 2
    return result.to(torch.uint8), method > 0, method


def select_samples(model: torch.nn.Module, split: ImageSplit, settings: ResolvedAttack) -> torch.Tensor:
    """Indices of the first ``count`` images of the split (correctly classified ones, if asked)."""
    if not settings.only_correct:
        return torch.arange(min(settings.count, len(split)))
    chosen: list[torch.Tensor] = []
    found = 0
    for start in range(0, len(split), settings.batch_size):
        index = torch.arange(start, min(start + settings.batch_size, len(split)))
        predictions = classify_alone(model, split.float_images(index), settings.tol_attack)
        correct = index[predictions == split.labels[index]]
        chosen.append(correct)
        found += len(correct)
        if found >= settings.count:
            break
    return torch.cat(chosen)[: settings.count] if chosen else torch.empty(0, dtype=torch.long)


def attack_one_batch(
    loaded: LoadedModel, settings: ResolvedAttack, clean: torch.Tensor, labels: torch.Tensor, batch_number: int
) -> dict[str, Any]:
    """Attack one batch, verify every adversarial alone at tol_attack, finish it on the 8-bit grid."""
    started = time.perf_counter()
    tol = settings.tol_attack
    pinned = PinnedTolerance(loaded.model, tol).eval()
    adversarial = settings.spec.run(
        pinned,
        settings.attack_options(),
        clean.to(loaded.device),
        labels.to(loaded.device),
        settings.seed + batch_number,
    )
    adversarial = adversarial.detach().clamp(0, 1).cpu()
    predictions = classify_alone(loaded.model, adversarial, tol)
    # with only_correct, select_samples classified these very images alone already
    clean_predictions = labels.clone() if settings.only_correct else classify_alone(loaded.model, clean, tol)
    success = (predictions != labels) & (clean_predictions == labels)
    adversarial_8bit, success_8bit, grid_method = finish_on_8bit_grid(
        loaded.model, tol, clean, adversarial, labels, success
    )
    return {
        "clean": clean,
        "adversarial": adversarial,
        "labels": labels,
        "clean_predictions": clean_predictions,
        "predictions": predictions,
        "success": success,
        "l2": (adversarial - clean).flatten(1).norm(dim=1),
        "adversarial_8bit": adversarial_8bit,
        "success_8bit": success_8bit,
        "grid_method": grid_method,
        "seconds": time.perf_counter() - started,
    }


def compute_attack_set(
    loaded: LoadedModel, settings: ResolvedAttack, stored: StoredResult, data_dir: str | None, progress: Progress
) -> AttackSet:
    """Run the attack batch by batch, saving each finished batch, and save the whole set."""
    partial_path = stored.path(PARTIAL_FILE)
    split = load_dataset(loaded.dataset, data_dir).split(settings.split)
    if partial_path.is_file():
        saved = load_tagged(partial_path, expected_kind="partial_attack_set")
        indices, batches = saved["indices"], list(saved["batches"])
        progress.log(f"continuing attack {stored.key} after {len(batches)} finished batches")
    else:
        progress.log(
            f"no {settings.attack} attack set of {settings.count} {settings.split} images at "
            f"tol_attack {settings.tol_attack:g} for {loaded.name} yet; running the attack"
        )
        indices, batches = select_samples(loaded.model, split, settings), []
    if len(indices) == 0:
        raise ConfigError(f"no {settings.split} image to attack (none classified correctly at this tolerance)")
    batch_starts = list(range(0, len(indices), settings.batch_size))
    task = progress.task(f"{settings.attack} at tol {settings.tol_attack:g}", len(batch_starts))
    successes = sum(int(batch["success"].sum()) for batch in batches)
    attacked = sum(len(batch["success"]) for batch in batches)
    task.advance(len(batches))
    for batch_number in range(len(batches), len(batch_starts)):
        index = indices[batch_starts[batch_number] : batch_starts[batch_number] + settings.batch_size]
        batch = attack_one_batch(loaded, settings, split.float_images(index), split.labels[index], batch_number)
        batches.append(batch)
        save_tagged(partial_path, "partial_attack_set", {"indices": indices, "batches": batches})
        successes += int(batch["success"].sum())
        attacked += len(batch["success"])
        task.advance(1, success=successes / attacked)
    task.close()

    attack_set = AttackSet.from_batches(settings, indices, batches)
    stored.save_tensors(attack_set.payload())
    partial_path.unlink(missing_ok=True)
    return attack_set


def make_attack_set(
    settings: AttackSettings,
    loaded: LoadedModel,
    registry: Registry,
    data_dir: str | None = None,
    progress: Progress | None = None,
) -> tuple[AttackSet, AttackReport]:
    """The attack set that ``settings`` describe for ``loaded``: found again, finished, or made."""
    progress = progress or SilentProgress()
    resolved = settings.resolve(loaded.tol_train)
    stored = attack_set_result(registry, loaded.name, resolved)
    attack_set = read_attack_set(stored)
    if attack_set is not None:
        progress.log(f"attack set {stored.key} already exists for {loaded.name}; reusing it")
        return attack_set, summarise(attack_set, loaded.name, stored, reused=True)
    with stored.computing():
        attack_set = compute_attack_set(loaded, resolved, stored, data_dir, progress)
    report = summarise(attack_set, loaded.name, stored, reused=False)
    atomic_write_json(stored.path(SUMMARY_FILE), {k: v for k, v in report.to_dict().items() if k != "reused"})
    return attack_set, report


def run_attack(
    settings: AttackSettings,
    model: str | None = None,
    registry: Registry | None = None,
    device: str = "auto",
    data_dir: str | None = None,
    export_dir: str | Path | None = None,
    progress: Progress | None = None,
    loaded: LoadedModel | None = None,
) -> AttackReport:
    """Make (or find again, or finish) the attack set that ``settings`` describe; report it."""
    registry = registry or Registry()
    progress = progress or SilentProgress()
    loaded = loaded or load_model(model, registry=registry, device=device)
    attack_set, report = make_attack_set(settings, loaded, registry, data_dir, progress)
    if export_dir is not None:
        export_pngs(attack_set, Path(export_dir))
        report.exported_to = str(export_dir)
        progress.log(f"wrote {len(attack_set)} pristine and {int(attack_set.success_8bit.sum())} adversarial PNGs")
    return report
